"""Training curves: pretraining, then fine-tuning on each task at a few ranks and in full.

The fine-tuning curves are the {Wq, Wv} runs of the rank ablation at ``setup.curve_ranks``,
every seed (the same runs, evaluated ``setup.curve_points`` times on the way; an evaluation
does not change training), and the full fine-tuning runs. On "perm" they tell "cannot" from
"has not yet": the loss first drops to ln 64 ≈ 4.16 (the base model's confident copy is
unlearned, every content token becomes equally likely) and stays on that plateau until the
new mapping is found, at a step that differs from seed to seed; a curve still flat at chance
when the learning rate has decayed has not found it within the budget.

Figure ``training_curves.png``: pretraining loss, "rev" error rate (log), "perm" accuracy.
"""
from __future__ import annotations

from .common import full_spec, lora_spec, new_figure, save_figure
from .findings import fmt, table

FIGURES = ("training_curves",)
LABEL = "Wq,Wv"


def _every(setup, task) -> int:
    return max(1, setup.tasks[task].steps // setup.curve_points)


def _runs(setup, lrs):
    for task in setup.tasks:
        every = _every(setup, task)
        for seed in setup.seeds:
            for r in setup.curve_ranks:
                yield task, f"LoRA {LABEL} r={r}", lora_spec(setup, task, LABEL, r, seed, lrs,
                                                             every)
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
                     # the raw loss of one seed (the others' are in the same runs' key)
                     "train_loss": res["train_loss"] if spec.seed == setup.seeds[0] else [],
                     "eval_steps": [e["step"] for e in res["curve"]],
                     "eval_accuracy": [e["accuracy"] for e in res["curve"]],
                     "eval_loss": [e["loss"] for e in res["curve"]]})
    return {"training_curves": {
        "setup": setup.name, "seeds": list(setup.seeds),
        "escape_accuracy": setup.escape_accuracy, "solve_accuracy": setup.solve_accuracy,
        "pretrain": {"task": setup.base.task, "steps": setup.base.steps,
                     "batch_size": setup.base.batch_size, "lr": setup.base.lr,
                     "warmup": setup.base.warmup, "loss": info["loss_curve"],
                     "accuracy": info["accuracy"]},
        "task_order": list(setup.tasks), "steps": {task: s.steps for task, s in setup.tasks.items()},
        "runs": runs}}


def _names(d, task) -> list[str]:
    return list(dict.fromkeys(run["name"] for run in d["runs"] if run["task"] == task))


def findings(data: dict) -> str:
    """Per (task, run): when each seed first escaped, where it ended, and whether it was still
    improving over the last quarter of training."""
    d = data["training_curves"]
    p = d["pretrain"]
    out = [f"Pretraining: {p['steps']} steps on {p['task']}, batch {p['batch_size']}, AdamW lr "
           f"{p['lr']:g} (warm-up {p['warmup']}, cosine): accuracy {p['accuracy']:.4f}. "
           f"Fine-tuning: cosine decay from the peak rate to 0, no warm-up; curves of "
           f"{len(d['seeds'])} seeds.\n"]
    rows, verdicts = [], []
    for task in d["task_order"]:
        for name in _names(d, task):
            runs = [r for r in d["runs"] if r["task"] == task and r["name"] == name]
            first = [next((s for s, a in zip(r["eval_steps"], r["eval_accuracy"])
                           if a > d["escape_accuracy"]), None) for r in runs]
            escaped = [s for s in first if s is not None]
            q = max(0, len(runs[0]["eval_steps"]) * 3 // 4 - 1)
            rising = sum(r["eval_accuracy"][-1] - r["eval_accuracy"][q] > 0.02 for r in runs)
            ends = [r["eval_accuracy"][-1] for r in runs]
            rows.append([task, name, f"{runs[0]['lr']:g}", f"{len(escaped)}/{len(runs)}",
                         f"{min(escaped)}–{max(escaped)}" if escaped else "never",
                         f"{fmt(min(ends))}–{fmt(max(ends))}",
                         f"{rising}/{len(runs)}"])
            verdicts.append(_verdict(task, name, len(runs), len(escaped), rising,
                                     d["steps"][task]))
    out.append(table(["task", "run", "lr", "escaped", "escape step", "final accuracy",
                      "still rising (> .02 over the last quarter)"], rows))
    return "\n".join(out) + "\n" + "\n".join(v for v in verdicts if v) + "\n"


def _verdict(task, name, n, escaped, rising, steps) -> str:
    """"Cannot" against "has not yet", as far as one budget of steps can tell them apart."""
    if name.startswith("full") or task == "rev":
        return ""
    if escaped == 0 and rising == 0:
        return (f"- {task}, {name}: flat at chance on all {n} seeds while its rate decays to 0: "
                f"within {steps} steps at its rate (the lr column) it does not learn the task at all.")
    if rising * 2 >= n:
        return (f"- {task}, {name}: {rising}/{n} seeds still rising at the end: it has not "
                f"converged in {steps} steps, so its gap to full fine-tuning here is (at least "
                f"partly) speed, not only capacity.")
    return (f"- {task}, {name}: {escaped}/{n} seeds escaped, {rising}/{n} still rising at the "
            f"end: converged or stuck within {steps} steps.")


def plot(data: dict, out_dir) -> list:
    d = data["training_curves"]
    names = d["task_order"]
    fig, axes = new_figure(1, 1 + len(names), figsize=(7.2, 2.9), squeeze=False)
    axes = axes[0]
    p = d["pretrain"]
    axes[0].plot(range(1, len(p["loss"]) + 1), p["loss"], color="black", linewidth=0.8)
    axes[0].set_yscale("log")
    axes[0].set_title(f"pretraining ({p['task']})", fontsize=9)
    axes[0].set_xlabel("step", fontsize=9)
    axes[0].set_ylabel("training loss (log)", fontsize=9)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red"]
    for ax, task in zip(axes[1:], names):
        error = task == "rev"
        for color, name in zip(colors, _names(d, task)):
            full = name.startswith("full")
            for i, run in enumerate(r for r in d["runs"] if r["task"] == task
                                    and r["name"] == name):
                ys = [max(1 - a, 1e-4) for a in run["eval_accuracy"]] if error \
                    else run["eval_accuracy"]
                ax.plot(run["eval_steps"], ys, "--" if full else "-",
                        color="black" if full else color, linewidth=0.9, alpha=0.8,
                        label=name.replace("LoRA ", "") if i == 0 else None)
        if error:
            ax.set_yscale("log")
            ax.set_ylabel("error rate (log)", fontsize=9)
        else:
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("token accuracy", fontsize=9)
        ax.set_title(f"{task}: held-out, one line per seed", fontsize=9)
        ax.set_xlabel("step", fontsize=9)
    for ax in axes:
        ax.tick_params(which="both", labelsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels),
               frameon=False, bbox_to_anchor=(0.5, -0.06))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return [save_figure(fig, f"{out_dir}/training_curves.png")]
