"""Rank ablation: accuracy against r for each set of adapted weights (Table 6 of the paper).

For each task and each target set in ``setup.ablation_targets``, LoRA at every r in
``setup.ranks`` and every seed, beside full fine-tuning and the untrained base model. The
paper's finding, on GPT-3: r = 1 on {Wq, Wv} is already as good as r = 64, while Wq alone needs
a larger r. Here the low-rank task ("rev") should show the same; the high-rank task ("perm")
is the contrast, where small r must fall short.

Figure ``rank_ablation.png``: token accuracy against r (log2 axis), mean over seeds with the
min–max range shaded, full fine-tuning and the base model as horizontal references.
"""
from __future__ import annotations

from statistics import mean

from .common import base_spec, full_spec, log2_axis, lora_spec, new_figure, save_figure

FIGURES = ("rank_ablation",)


def specs(setup, lrs) -> list:
    out = [base_spec(setup, task) for task in setup.tasks]
    for task in setup.tasks:
        out += [full_spec(setup, task, seed) for seed in setup.seeds]
        out += [lora_spec(setup, task, label, r, seed, lrs) for label in setup.ablation_targets
                for r in setup.ranks for seed in setup.seeds]
    return out


def compute(setup, lrs, results: dict) -> dict:
    tasks = {}
    for task, setting in setup.tasks.items():
        lora, trainable = {}, {}
        for label in setup.ablation_targets:
            runs = {r: [results[lora_spec(setup, task, label, r, s, lrs).key()]
                        for s in setup.seeds] for r in setup.ranks}
            lora[label] = {str(r): [res["accuracy"] for res in runs[r]] for r in setup.ranks}
            trainable[label] = {str(r): runs[r][0]["trainable"] for r in setup.ranks}
        full = [results[full_spec(setup, task, s).key()] for s in setup.seeds]
        tasks[task] = {
            "steps": setting.steps,
            "lr": {label: lrs[(task, label)] for label in setup.ablation_targets},
            "full_lr": setting.full_lr,
            "base": results[base_spec(setup, task).key()]["accuracy"],
            "full": [res["accuracy"] for res in full],
            "full_trainable": full[0]["trainable"],
            "lora": lora, "trainable": trainable,
        }
    return {"rank_ablation": {
        "setup": setup.name, "metric": "token accuracy on the y positions (held-out set)",
        "task_order": list(setup.tasks), "targets": list(setup.ablation_targets), "ranks": list(setup.ranks), "seeds": list(setup.seeds),
        "lora_alpha": setup.lora_alpha,
        "batch_size": setup.batch_size, "eval_size": setup.eval_size, "tasks": tasks}}


def table(data: dict) -> list[dict]:
    """Table 6's layout: one row per (task, weights), mean accuracy over seeds per r."""
    d = data["rank_ablation"]
    rows = []
    for task in d["task_order"]:
        t = d["tasks"][task]
        for label in d["targets"]:
            per_r = t["lora"][label]
            rows.append({"task": task, "weights": label,
                         **{f"r={r}": round(mean(v), 4) for r, v in per_r.items()},
                         "full_ft": round(mean(t["full"]), 4), "base": round(t["base"], 4)})
    return rows


def tables(data: dict) -> dict:
    return {"rank_ablation": table(data)}


def plot(data: dict, out_dir) -> list:
    d = data["rank_ablation"]
    ranks, names = d["ranks"], d["task_order"]
    fig, axes = new_figure(1, len(names), figsize=(5.4 * len(names), 5.2), squeeze=False)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
    for ax, task in zip(axes[0], names):
        t = d["tasks"][task]
        for color, label in zip(colors, d["targets"]):
            per_r = t["lora"][label]
            values = [per_r[str(r)] for r in ranks]
            ax.plot(ranks, [mean(v) for v in values], "o-", color=color,
                    label=f"LoRA {label} (lr {t['lr'][label]:g})")
            ax.fill_between(ranks, [min(v) for v in values], [max(v) for v in values],
                            color=color, alpha=0.15, linewidth=0)
        ax.axhline(mean(t["full"]), color="black", linestyle="--",
                   label=f"full fine-tuning ({mean(t['full']):.3f})")
        ax.axhline(t["base"], color="gray", linestyle=":", label=f"base model ({t['base']:.3f})")
        log2_axis(ax, ranks)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("LoRA rank r (log2 scale)")
        ax.set_ylabel("token accuracy on y (held-out)")
        ax.set_title(f"task '{task}': {t['steps']} steps, mean of {len(d['seeds'])} seeds "
                     f"(band: min–max)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.suptitle("Rank ablation (Table 6 analog): accuracy vs r per set of adapted weights",
                 fontsize=11)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/rank_ablation.png")]
