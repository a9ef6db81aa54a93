"""Parameters, storage and training memory: LoRA against full fine-tuning (Section 4.2).

Arithmetic only (accounting.py), no training: the trainable parameter count of every target
set against r for the toy GPT of the experiments, and the paper's GPT-3 175B numbers (an 18M
parameter adapter of ~35 MB next to a ~350 GB checkpoint; training memory 1.2 TB → 350 GB
comes mostly from the optimizer state that frozen weights do not need).

Figure ``memory.png``.
"""
from __future__ import annotations

from .common import log2_axis, new_figure, save_figure

FIGURES = ("memory",)


def specs(setup, lrs) -> list:
    return []


def compute(setup, lrs=None, results=None) -> dict:
    from .. import accounting as acc
    from .config import TARGET_SETS

    toy = acc.from_gpt_config(setup.base.model)
    rows = []
    for arch, ranks in ((toy, setup.ranks), (acc.PRESETS["gpt3-175b"], (1, 2, 4, 8, 64))):
        for label in setup.ablation_targets:
            targets = "all-linear" if label == "all-linear" else list(TARGET_SETS[label])
            for r in ranks:
                rows.append({"architecture": arch.name, "weights": label,
                             **{k: v for k, v in acc.summary(arch, targets, r).items()
                                if k not in ("architecture", "target_modules")}})
    return {"memory": {"setup": setup.name, "bytes_per_parameter": 2,
                       "training_bytes": "weights 2 + gradients 2 + Adam state 8 per trainable "
                                         "parameter, 2 per frozen one (activations excluded)",
                       "rows": rows}}


def tables(data: dict) -> dict:
    return {"memory": [{k: v for k, v in row.items()} for row in data["memory"]["rows"]]}


def plot(data: dict, out_dir) -> list:
    from ..accounting import format_bytes

    rows = data["memory"]["rows"]
    archs = list(dict.fromkeys(row["architecture"] for row in rows))
    fig, axes = new_figure(1, 1 + len(archs), figsize=(5 * (1 + len(archs)), 4), squeeze=False)
    axes = axes[0]
    for ax, arch in zip(axes, archs):
        mine = [row for row in rows if row["architecture"] == arch]
        for label in dict.fromkeys(row["weights"] for row in mine):
            sel = [row for row in mine if row["weights"] == label]
            ax.plot([row["r"] for row in sel], [row["lora_parameters"] for row in sel], "o-",
                    label=f"LoRA {label}")
        ax.axhline(mine[0]["total_parameters"], color="black", linestyle="--",
                   label=f"full fine-tuning ({mine[0]['total_parameters']:,})")
        log2_axis(ax, sorted({row["r"] for row in mine}))
        ax.set_yscale("log")
        ax.set_xlabel("LoRA rank r (log2 scale)")
        ax.set_ylabel("trainable parameters")
        ax.set_title(arch, fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    ax = axes[-1]
    gpt3 = next(row for row in rows if row["architecture"] == archs[-1]
                and row["weights"] == "Wq" and row["r"] == 8)
    bars = {"checkpoint\n(fp16)": gpt3["checkpoint_bytes"],
            "adapter Wq r=8\n(fp16)": gpt3["adapter_bytes"],
            "training:\nfull FT": gpt3["full_training_bytes"],
            "training:\nLoRA Wq r=8": gpt3["lora_training_bytes"]}
    ax.bar(range(len(bars)), list(bars.values()), color=["gray", "tab:blue", "gray", "tab:blue"])
    for x, value in enumerate(bars.values()):
        ax.text(x, value, format_bytes(value), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels(list(bars), fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("bytes")
    ax.set_title(f"{archs[-1]}: storage and training memory", fontsize=10)
    fig.suptitle("What LoRA saves: trainable parameters, storage, optimizer memory "
                 "(arithmetic, accounting.py)", fontsize=11)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/memory.png")]
