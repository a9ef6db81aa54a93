"""QLoRA vs LoRA: the same adapters trained on a 4-bit base, quality and memory.

The pre-trained GPT's Linears (all but lm_head) are stored as NF4, FP4 or int4 with double
quantization (``linear4bit.quantize_model``); LoRA (r = 4 on q_proj and v_proj) is then
trained on top exactly as on the fp32 base. Measured on the low-rank task: the accuracy of
the quantized base before fine-tuning (what rounding alone costs), the accuracy after, and
the bytes of stored weights.
"""
from __future__ import annotations

from .variant_runs import VariantSpec, baseline, run_variants

BASES = (None, "nf4", "fp4", "int4")  # None: the fp32 base (plain LoRA)
SEEDS, QUICK_SEEDS = (0, 1), (0,)


def specs(quick: bool = False) -> list[VariantSpec]:
    return [baseline(quick, quant_type=q, seed=seed)
            for q in BASES for seed in (QUICK_SEEDS if quick else SEEDS)]


def run(quick: bool = False, executor=None, base=None, cache=None, results=None) -> dict:
    rows = []
    for spec, res in zip(specs(quick), run_variants(specs(quick), executor, base, cache,
                                                     results=results)):
        rows.append({"base": spec.quant_type or "fp32", "seed": spec.seed,
                     "base_accuracy": res["base_accuracy"], "accuracy": res["accuracy"],
                     "loss": res["loss"],
                     "weight_bytes": res["weight_bytes"], "train_loss": res["train_loss"]})
    spec = specs(quick)[0]
    return {"task": spec.task, "r": spec.r, "targets": list(spec.targets), "lr": spec.lr,
            "double_quant": spec.double_quant, "steps": spec.steps, "runs": rows}


def summary(data: dict) -> list[dict]:
    """Mean over seeds, per base."""
    out = []
    for name in dict.fromkeys(row["base"] for row in data["runs"]):
        rows = [row for row in data["runs"] if row["base"] == name]
        mean = lambda key: sum(row[key] for row in rows) / len(rows)
        out.append({"base": name, "base_accuracy": mean("base_accuracy"),
                    "accuracy": mean("accuracy"), "loss": mean("loss"),
                    "weight_bytes": rows[0]["weight_bytes"],
                    "seeds": len(rows)})
    return out


def plot(data: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary(data)
    names = [row["base"] for row in rows]
    x = range(len(rows))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax.bar([i - 0.2 for i in x], [row["base_accuracy"] for row in rows], 0.4,
           label="base model, before LoRA", color="0.7")
    bars = ax.bar([i + 0.2 for i in x], [row["accuracy"] for row in rows], 0.4,
                  label=f"after LoRA ({data['steps']} steps)", color="C0")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    for row in data["runs"]:  # every seed, so the spread is visible
        ax.plot(names.index(row["base"]) + 0.2, row["accuracy"], "k.", ms=4)
    ax.set_xticks(list(x), names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("token accuracy")
    ax.set_title(f"'{data['task']}' task, r = {data['r']} on q_proj, v_proj", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    kb = [row["weight_bytes"] / 1000 for row in rows]
    bars = bx.bar(list(x), kb, color=["C1"] + ["C2"] * (len(rows) - 1))
    bx.bar_label(bars, fmt="%.0f kB", fontsize=8)
    bx.set_xticks(list(x), names)
    bx.set_ylabel("stored weights (kB)")
    bx.set_title("model + adapters, as stored", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(data: dict) -> str:
    lines = [f"QLoRA vs LoRA on '{data['task']}' (r={data['r']}, q_proj+v_proj, "
             f"{data['steps']} steps, mean of seeds):",
             f"  {'base':5} {'before':>7} {'after':>7} {'eval loss':>9} {'stored bytes':>13}"]
    for row in summary(data):
        lines.append(f"  {row['base']:5} {row['base_accuracy']:7.3f} {row['accuracy']:7.3f} "
                     f"{row['loss']:9.4f} {row['weight_bytes']:>13,}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run()))
