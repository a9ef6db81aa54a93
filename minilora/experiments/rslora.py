"""rsLoRA (Kalajdzievski 2023): with scaling α/r, higher ranks learn no faster; with α/√r they do.

LoRA's update is ΔW = s·B A. Under Adam every entry of A and B moves by about the learning
rate per step whatever s is, so the function changes at a pace set by s and by how many
directions r add up: with s = α/r the r directions are averaged, and a rank-128 adapter
learns at the pace of a rank-8 one; with s = α/√r (``use_rslora=True``) the update's size
stays stable as r grows, and extra rank turns into faster learning.

Learning curves on the low-rank task, r ∈ {2, 8, 32, 128} on q_proj and v_proj, α = 8, the
same learning rate for all, one panel per scaling.
"""
from __future__ import annotations

from .variant_runs import VariantSpec, baseline, moving_average, run_variants

RANKS, QUICK_RANKS = (2, 8, 32, 128), (2, 32)


def specs(quick: bool = False) -> list[VariantSpec]:
    return [baseline(quick, r=r, use_rslora=rs)
            for rs in (False, True) for r in (QUICK_RANKS if quick else RANKS)]


def run(quick: bool = False, executor=None, base=None, cache=None, results=None) -> dict:
    runs, spec = [], baseline(quick)
    for s, res in zip(specs(quick), run_variants(specs(quick), executor, base, cache,
                                                  results=results)):
        scaling = s.lora_alpha / (s.r ** 0.5 if s.use_rslora else s.r)
        runs.append({"r": s.r, "use_rslora": s.use_rslora, "scaling": scaling,
                     "train_loss": res["train_loss"], "accuracy": res["accuracy"]})
    return {"task": spec.task, "targets": list(spec.targets), "lora_alpha": spec.lora_alpha,
            "lr": spec.lr, "steps": spec.steps, "runs": runs}


def plot(data: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    ranks = sorted({run["r"] for run in data["runs"]})
    colors = plt.cm.viridis([i / max(1, len(ranks) - 1) * 0.9 for i in range(len(ranks))])
    for ax, rs in zip(axes, (False, True)):
        for run in (x for x in data["runs"] if x["use_rslora"] == rs):
            ax.plot(moving_average(run["train_loss"], 5), color=colors[ranks.index(run["r"])],
                    label=f"r = {run['r']} (s = {run['scaling']:.3g})")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title("rsLoRA: s = α/√r" if rs else "LoRA: s = α/r")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("training loss (moving average of 5)")
    fig.suptitle(f"'{data['task']}' task, q_proj + v_proj, α = {data['lora_alpha']:g}, "
                 f"lr {data['lr']:g}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(data: dict) -> str:
    lines = ["rsLoRA: final accuracy and mean training loss of the last 10 steps"]
    for run in data["runs"]:
        tail = run["train_loss"][-10:]
        lines.append(f"  {'α/√r' if run['use_rslora'] else 'α/r ':5} r={run['r']:<4} "
                     f"s={run['scaling']:<7.3g} loss {sum(tail) / len(tail):.4f} "
                     f"accuracy {run['accuracy']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run()))
