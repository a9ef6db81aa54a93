"""Training curves: pretraining, then fine-tuning on each task at a few ranks and in full.

The fine-tuning curves are the seed-0 {Wq, Wv} runs of the rank ablation at
``setup.curve_ranks`` (the same runs, evaluated ``setup.curve_points`` times on the way; an
evaluation does not change training) and the seed-0 full fine-tuning run. On "perm" they show
why it needs many steps: the loss first drops to ln 64 ≈ 4.16 (the base model's confident copy
is unlearned, every content token becomes equally likely) and stays on that plateau until the
new mapping is found; small r never leaves it.

Figure ``training_curves.png``.
"""
from __future__ import annotations

import math

from .common import full_spec, lora_spec, new_figure, save_figure

FIGURES = ("training_curves",)
LABEL = "Wq,Wv"


def _every(setup, task) -> int:
    return max(1, setup.tasks[task].steps // setup.curve_points)


def _runs(setup, lrs):
    for task in setup.tasks:
        every, seed = _every(setup, task), setup.seeds[0]
        for r in setup.curve_ranks:
            yield task, f"LoRA {LABEL} r={r}", lora_spec(setup, task, LABEL, r, seed, lrs, every)
        yield task, "full fine-tuning", full_spec(setup, task, seed, every)


def specs(setup, lrs) -> list:
    return [spec for _, _, spec in _runs(setup, lrs)]


def compute(setup, lrs, results: dict) -> dict:
    from .pretrain import load_or_pretrain

    info = load_or_pretrain(setup.base)[1]
    runs = []
    for task, name, spec in _runs(setup, lrs):
        res = results[spec.key()]
        runs.append({"task": task, "name": name, "lr": spec.lr, "seed": spec.seed,
                     "train_loss": res["train_loss"],
                     "eval_steps": [e["step"] for e in res["curve"]],
                     "eval_accuracy": [e["accuracy"] for e in res["curve"]],
                     "eval_loss": [e["loss"] for e in res["curve"]]})
    note = "\n".join(
        [f"pretraining: {setup.base.steps} steps, batch {setup.base.batch_size},",
         f"  AdamW lr {setup.base.lr:g}, warm-up {setup.base.warmup}, cosine",
         f"fine-tuning: batch {setup.batch_size}, AdamW (no decay),",
         "  cosine from the peak lr, no warm-up,",
         f"  LoRA alpha {setup.lora_alpha:g}, evaluated on {setup.eval_size}",
         "  held-out sequences"] +
        [f"'{task}': {s.steps} steps" for task, s in setup.tasks.items()])
    return {"training_curves": {
        "setup": setup.name, "note": note, "pretrain": {"task": setup.base.task, "steps": setup.base.steps,
                                          "loss": info["loss_curve"],
                                          "accuracy": info["accuracy"]},
        "runs": runs}}


def _smooth(values, window: int = 5) -> list[float]:
    """Trailing moving average (fine-tuning batches are small, the raw loss is noisy)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot(data: dict, out_dir) -> list:
    d = data["training_curves"]
    names = list(dict.fromkeys(run["task"] for run in d["runs"]))
    fig, axes = new_figure(2, 1 + len(names), figsize=(4.6 * (1 + len(names)), 7), squeeze=False)
    p = d["pretrain"]
    axes[0][0].plot(range(1, len(p["loss"]) + 1), p["loss"], color="black")
    axes[0][0].set_yscale("log")
    axes[0][0].set_title(f"pretraining on '{p['task']}' (final accuracy {p['accuracy']:.3f})",
                         fontsize=9)
    axes[0][0].set_xlabel("step")
    axes[0][0].set_ylabel("training loss")
    axes[1][0].axis("off")
    axes[1][0].text(0.0, 0.95, d["note"], va="top", ha="left", fontsize=8, family="monospace",
                    transform=axes[1][0].transAxes)
    for col, task in enumerate(names, start=1):
        for run in (r for r in d["runs"] if r["task"] == task):
            style = "--" if run["name"].startswith("full") else "-"
            color = "black" if style == "--" else None
            line, = axes[0][col].plot(range(1, len(run["train_loss"]) + 1),
                                      _smooth(run["train_loss"]), style, color=color,
                                      label=f"{run['name']} (lr {run['lr']:g})")
            axes[1][col].plot(run["eval_steps"], run["eval_accuracy"], style + "o",
                              color=line.get_color(), markersize=3, label=run["name"])
        axes[0][col].axhline(math.log(64), color="gray", linestyle=":", label="ln 64")
        axes[0][col].set_yscale("log")
        axes[0][col].set_title(f"fine-tuning on '{task}': training loss (moving avg. of 5)",
                               fontsize=9)
        axes[0][col].set_xlabel("step")
        axes[0][col].set_ylabel("training loss")
        axes[0][col].legend(fontsize=7)
        axes[1][col].set_title(f"'{task}': held-out token accuracy", fontsize=9)
        axes[1][col].set_xlabel("step")
        axes[1][col].set_ylabel("token accuracy on y")
        axes[1][col].set_ylim(-0.02, 1.02)
        axes[1][col].legend(fontsize=7)
        for ax in (axes[0][col], axes[1][col]):
            ax.grid(alpha=0.3)
    axes[0][0].grid(alpha=0.3)
    fig.suptitle("Training curves (seed 0)", fontsize=11)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/training_curves.png")]
