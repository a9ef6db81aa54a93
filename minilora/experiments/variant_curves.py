"""DoRA, PiSSA and LoRA+ against LoRA: the first steps of fine-tuning.

Same task, rank, targets, learning rate, batches and step budget for all four:

* LoRA: A Kaiming-uniform, B = 0, one learning rate;
* DoRA (``use_dora=True``): LoRA plus a trainable magnitude per output row;
* PiSSA (``init_lora_weights="pissa"``): A, B start as W0's top-r singular part, the frozen
  base keeps the residual, so training starts on the directions that matter most in W0;
* LoRA+ (``loraplus_lr_ratio=16``): B's learning rate 16 × A's.

One learning rate for all (2e-3, below LoRA's best), so the curves compare how fast each
starts; plain LoRA at 5 × that rate is drawn too, since LoRA+ (and PiSSA's large initial
factors) act in part as a larger effective learning rate.
"""
from __future__ import annotations

from .variant_runs import VariantSpec, baseline, moving_average, run_variants

VARIANTS = {"LoRA": {}, "DoRA": {"use_dora": True}, "PiSSA": {"init_lora_weights": "pissa"},
            "LoRA+ (ratio 16)": {"loraplus_lr_ratio": 16.0},
            "LoRA, lr × 5": {"lr": 1e-2}}  # the fair check: is a variant more than a larger lr?
SEEDS, QUICK_SEEDS = (0, 1), (0,)


def specs(quick: bool = False) -> dict[str, list[VariantSpec]]:
    return {name: [baseline(quick, seed=seed, **extra) for seed in (QUICK_SEEDS if quick else SEEDS)]
            for name, extra in VARIANTS.items()}


def run(quick: bool = False, executor=None, base=None, cache=None, results=None) -> dict:
    grouped = specs(quick)
    flat = [spec for group in grouped.values() for spec in group]
    by_spec = dict(zip(flat, run_variants(flat, executor, base, cache, results=results)))
    variants = []
    for name, group in grouped.items():
        runs = [by_spec[spec] for spec in group]
        variants.append({"name": name, "seeds": [spec.seed for spec in group],
                         "train_loss": [res["train_loss"] for res in runs],
                         "accuracy": [res["accuracy"] for res in runs],
                         "trainable": runs[0]["trainable"]})
    spec = flat[0]
    return {"task": spec.task, "r": spec.r, "targets": list(spec.targets), "lr": spec.lr,
            "steps": spec.steps, "variants": variants}


def _mean_curve(curves: list[list[float]]) -> list[float]:
    return [sum(values) / len(values) for values in zip(*curves)]


def plot(data: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for variant in data["variants"]:
        mean = _mean_curve(variant["train_loss"])
        ax.plot(moving_average(mean, 5), label=f"{variant['name']} "
                f"(acc {sum(variant['accuracy']) / len(variant['accuracy']):.3f})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean of seeds, moving avg 5)")
    ax.set_title(f"'{data['task']}' task, r = {data['r']} on q_proj, v_proj, lr {data['lr']:g}, "
                 f"{len(data['variants'][0]['seeds'])} seed(s)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(data: dict) -> str:
    lines = [f"LoRA variants on '{data['task']}' (r={data['r']}, lr {data['lr']:g}, "
             f"{data['steps']} steps): mean training loss over steps 1-10, 11-20, last 10; "
             f"final accuracy"]
    for v in data["variants"]:
        mean = _mean_curve(v["train_loss"])
        parts = [sum(mean[a:b]) / len(mean[a:b]) for a, b in ((0, 10), (10, 20), (-10, None))]
        acc = sum(v["accuracy"]) / len(v["accuracy"])
        lines.append(f"  {v['name']:17} " + " ".join(f"{p:7.4f}" for p in parts)
                     + f"  acc {acc:.3f}  trainable {v['trainable']:,}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run()))
