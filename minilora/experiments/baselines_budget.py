"""LoRA against the paper's 2021 baselines: accuracy against trainable parameters (Figure 2).

The paper (Section 5.1, Tables 2-4, Figure 2) compares LoRA with full fine-tuning (FT), BitFit
(biases only), prefix-embedding tuning (PreEmbed: l_p trainable virtual tokens before the
input), prefix-layer tuning (PreLayer: trainable activations of those tokens before every
block) and adapter layers (AdapterH, Houlsby's two per block; AdapterL, Lin's one after the
MLP). Its Figure 2 plots validation accuracy against the number of trainable parameters: LoRA
holds up as its budget grows, the prefix methods get worse past a few hundred tokens.

Here every method of ``setup.baseline_budgets`` at each of its budgets (LoRA's r, the prefix
length l_p, the adapters' bottleneck m; minilora/baselines/ has the methods and their laws), on
each task, every reported seed, the same steps and batches as the rank ablation (paired: the
batches depend only on the seed). Learning rates: one per (task, method), chosen by
``minilora tune --baselines`` at the method's middle budget on the tuning seeds (validation
set), from a grid grown until the winner sits inside it, and recorded in config.py
(``TaskSetting.baseline_lrs``); a method with no recorded rate (``--quick``) uses its grid's
middle, and the data say so.

Figure ``baselines_budget.png``: per task, accuracy ("perm") or error rate on a log axis
("rev", at its ceiling) against trainable parameters on a log axis, one line per method
(mean, band min-max over seeds), BitFit and FT as single points.
"""
from __future__ import annotations

from ..tasks import SEQ_LEN
from .common import base_spec, new_figure, save_figure, seed_summary
from .findings import fmt, table
from .runs import RunSpec

FIGURES = ("baselines_budget",)

# label (as the paper's tables): (RunSpec.method, LoRA's target set or None)
METHODS = {
    "LoRA Wq,Wv": ("lora", "Wq,Wv"),
    "LoRA all-linear": ("lora", "all-linear"),
    "PreEmbed": ("prefix-embed", None),
    "PreLayer": ("prefix-layer", None),
    "AdapterH": ("adapter-h", None),
    "AdapterL": ("adapter-l", None),
    "BitFit": ("bitfit", None),
    "FT": ("full", None),
}
BUDGET_NAME = {"lora": "r", "prefix-embed": "l_p", "prefix-layer": "l_p", "adapter-h": "m",
               "adapter-l": "m"}
DEGRADE = 0.05  # a method "degrades" when its largest budget's mean is this far below its best


def method_spec(setup, task: str, label: str, budget: int, seed: int, lr: float,
                eval_seed: int = 0, eval_every: int = 0, train_size: int = 0) -> RunSpec:
    """One run of ``label`` at ``budget``: LoRA's fields as ``common.lora_spec`` sets them,
    FT's as ``common.full_spec`` (so equal runs have equal keys)."""
    if label not in METHODS:
        raise ValueError(f"baselines_budget: method must be one of {list(METHODS)}, got {label!r}")
    method, targets = METHODS[label]
    lora = {"lora_alpha": setup.lora_alpha} if method == "lora" else {}
    return RunSpec(setup.base, task, method, setup.targets(targets) if targets else (), budget,
                   seed, setup.tasks[task].steps, lr, batch_size=setup.batch_size,
                   eval_size=setup.eval_size, eval_seed=eval_seed, eval_every=eval_every,
                   train_size=train_size, **lora)


# -- learning rates (minilora tune --baselines) ------------------------------------------------
def tuning_budget(setup, label: str) -> int:
    budgets = dict(setup.baseline_budgets)[label]
    return budgets[len(budgets) // 2]


def tuning_spec(setup, task: str, label: str, budget: int, lr: float, seed: int) -> RunSpec:
    """A tuning run (common.tuning_specs' ``spec_of``): a tuning seed, the validation set."""
    return method_spec(setup, task, label, budget, seed, lr, eval_seed=1)


def first_grids(setup) -> dict:
    """``{(task, method, its middle budget): [candidate lrs]}``."""
    grids = dict(setup.baseline_lr_grids)
    return {(task, label, tuning_budget(setup, label)): list(grids[label])
            for task in setup.tasks for label, _ in setup.baseline_budgets}


def recorded_lrs(setup) -> dict:
    """``{(task, method, middle budget): lr}`` as config.py records them (None: not tuned)."""
    return {(task, label, tuning_budget(setup, label)):
            dict(setup.tasks[task].baseline_lrs).get(label)
            for task in setup.tasks for label, _ in setup.baseline_budgets}


def lr_of(setup, task: str, label: str) -> tuple[float, bool]:
    """(the rate of ``label`` on ``task``, whether ``minilora tune --baselines`` chose it)."""
    recorded = dict(setup.tasks[task].baseline_lrs).get(label)
    if recorded is not None:
        return recorded, True
    grid = dict(setup.baseline_lr_grids)[label]
    return grid[len(grid) // 2], False


def cell_specs(setup, task: str, label: str, budget: int, **kw) -> list[RunSpec]:
    lr = lr_of(setup, task, label)[0]
    return [method_spec(setup, task, label, budget, seed, lr, **kw) for seed in setup.seeds]


# -- the experiment ------------------------------------------------------------------------------
def specs(setup, lrs) -> list:
    return [base_spec(setup, task) for task in setup.tasks] + [
        spec for task in setup.tasks for label, budgets in setup.baseline_budgets
        for budget in budgets for spec in cell_specs(setup, task, label, budget)]


def compute(setup, lrs, results: dict) -> dict:
    rows = []
    for task in setup.tasks:
        for label, budgets in setup.baseline_budgets:
            lr, tuned = lr_of(setup, task, label)
            for budget in budgets:
                runs = [results[s.key()] for s in cell_specs(setup, task, label, budget)]
                rows.append({"task": task, "method": label, "budget": budget, "lr": lr,
                             "lr_tuned": tuned, "trainable": runs[0]["trainable"],
                             "accuracy": [res["accuracy"] for res in runs]})
    return {"baselines_budget": {
        "setup": setup.name, "task_order": list(setup.tasks), "seeds": list(setup.seeds),
        "steps": {task: s.steps for task, s in setup.tasks.items()},
        "methods": [label for label, _ in setup.baseline_budgets],
        "budget_names": {label: BUDGET_NAME.get(METHODS[label][0], "") for label in METHODS},
        "tuning_budget": {label: tuning_budget(setup, label) for label, _ in setup.baseline_budgets},
        "eval_size": setup.eval_size, "escape_accuracy": setup.escape_accuracy,
        "solve_accuracy": setup.solve_accuracy,
        "base": {task: results[base_spec(setup, task).key()]["accuracy"] for task in setup.tasks},
        "rows": rows}}


def _summary(d: dict, row: dict) -> dict:
    return seed_summary(row["accuracy"], d["escape_accuracy"], d["solve_accuracy"])


def _rows(d: dict, task: str, label: str) -> list[dict]:
    return [row for row in d["rows"] if row["task"] == task and row["method"] == label]


def _name(d: dict, row: dict) -> str:
    budget = d["budget_names"][row["method"]]
    return f"{row['method']} {budget}={row['budget']}" if budget else row["method"]


def tables(data: dict) -> dict:
    """The paper's layout: one row per (method, budget), trainable parameters, each task's cell."""
    d, out = data["baselines_budget"], []
    for label in d["methods"]:
        for i, first in enumerate(_rows(d, d["task_order"][0], label)):
            row = {"method": label, "budget": first["budget"], "trainable": first["trainable"]}
            for task in d["task_order"]:
                cell = _rows(d, task, label)[i]
                s = _summary(d, cell)
                row.update({f"{task}_lr": cell["lr"], f"{task}_mean": round(s["mean"], 4),
                            f"{task}_min": round(s["min"], 4), f"{task}_max": round(s["max"], 4),
                            f"{task}_escaped": s["escaped"], f"{task}_solved": s["solved"]})
            out.append(row)
    return {"baselines_budget": out}


def findings(data: dict) -> str:
    d = data["baselines_budget"]
    n, tasks = len(d["seeds"]), d["task_order"]
    out = [f"Token accuracy on {d['eval_size']:,} held-out sequences, mean (min–max) of {n} seeds; "
           f"on perm also how many seeds escaped the plateau (> {d['escape_accuracy']:g}) / "
           f"solved it (> {d['solve_accuracy']:g}). Steps: " + ", ".join(
               f"{t} {d['steps'][t]}" for t in tasks) + "; learning rate per (task, method): "
           + ("`minilora tune --baselines` at the middle budget" if all(
               r["lr_tuned"] for r in d["rows"]) else "the grid's middle, not tuned") + ".\n"]
    lines = []
    for label in d["methods"]:
        for i, first in enumerate(_rows(d, tasks[0], label)):
            line = [_name(d, first), f"{first['trainable']:,}"]
            for task in tasks:
                s = _summary(d, _rows(d, task, label)[i])
                digits = 4 if task == "rev" else 3
                text = f"{fmt(s['mean'], digits)} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"
                line.append(text + (f" {s['escaped']}/{s['solved']}" if task != "rev" else ""))
            lines.append(line)
    out.append(table(["method", "trainable", *tasks], lines))
    out.append("Base model: " + ", ".join(f"{t} {fmt(d['base'][t], 4)}" for t in tasks)
               + "; perm cells read mean (min–max) escaped/solved.\n")
    out += [_verdicts(d, task) for task in tasks]
    return "\n".join(out)


def _best(d: dict, task: str, label: str) -> tuple[dict, dict]:
    rows = _rows(d, task, label)
    best = max(rows, key=lambda row: _summary(d, row)["mean"])
    return best, _summary(d, best)


def _verdicts(d: dict, task: str) -> str:
    """Per task: each method's best cell against FT's; which methods degrade as the budget
    grows (largest budget's mean more than DEGRADE below the method's best)."""
    n, lines = len(d["seeds"]), []
    ft = _summary(d, _rows(d, task, "FT")[0]) if "FT" in d["methods"] else None
    ranked = sorted(d["methods"], key=lambda m: -_best(d, task, m)[1]["mean"])
    best_text = []
    for label in ranked:
        row, s = _best(d, task, label)
        best_text.append(f"{_name(d, row)} {fmt(s['mean'])} ({s['solved']}/{n} solved, "
                         f"{row['trainable']:,} parameters)")
    lines.append(f"- {task}: best cell of each method, best first: " + "; ".join(best_text) + ".")
    if ft is not None:
        above = [m for m in d["methods"] if m != "FT" and _best(d, task, m)[1]["mean"] >= ft["mean"]]
        lines.append(f"- {task}: at their best budget, " + (", ".join(above) if above else "none")
                     + f" of the parameter-efficient methods reach FT's mean ({fmt(ft['mean'])}, "
                     f"{ft['solved']}/{n} solved).")
    falls, holds = [], []
    for label in d["methods"]:
        rows = _rows(d, task, label)
        if len(rows) < 2:
            continue
        best, last = _best(d, task, label)[1]["mean"], _summary(d, rows[-1])["mean"]
        (falls if last < best - DEGRADE else holds).append(
            f"{label} {fmt(best)} → {fmt(last)} at {_name(d, rows[-1]).split(' ')[-1]}")
    lines.append(f"- {task}: the mean at the largest budget tried is more than {DEGRADE:g} "
                 f"below the method's best (best → largest) for " + ("; ".join(falls) or "none")
                 + f"; within {DEGRADE:g} of it for " + ("; ".join(holds) or "none") + ".")
    return "\n".join(lines) + "\n"


def plot(data: dict, out_dir) -> list:
    d = data["baselines_budget"]
    tasks = d["task_order"]
    fig, axes = new_figure(1, len(tasks), figsize=(7.4, 3.8), squeeze=False)
    colors = dict(zip(METHODS, ["tab:blue", "tab:cyan", "tab:orange", "tab:red", "tab:green",
                                "tab:olive", "tab:purple", "black"]))
    floor = 0.5 / (d["eval_size"] * SEQ_LEN)  # where a run without a single error is drawn
    for ax, task in zip(axes[0], tasks):
        error = task == "rev"
        for label in d["methods"]:
            rows = _rows(d, task, label)
            xs = [row["trainable"] for row in rows]
            stats = [_summary(d, row) for row in rows]
            if error:
                mid = [max(1 - s["mean"], floor) for s in stats]
                low = [max(1 - s["max"], floor) for s in stats]
                high = [max(1 - s["min"], floor) for s in stats]
            else:
                mid, low, high = ([s[k] for s in stats] for k in ("mean", "min", "max"))
            ax.plot(xs, mid, "o-" if len(xs) > 1 else "D", color=colors[label], markersize=4,
                    label=label)
            ax.fill_between(xs, low, high, color=colors[label], alpha=0.12, linewidth=0)
        ax.set_xscale("log")
        if error:
            ax.set_yscale("log")
            ax.set_ylabel("error rate, 1 − accuracy (log)", fontsize=9)
        else:
            ax.set_ylim(-0.02, 1.05)
            ax.set_ylabel("token accuracy", fontsize=9)
        ax.set_title(f"{task}: {d['steps'][task]} steps", fontsize=9)
        ax.set_xlabel("trainable parameters (log)", fontsize=9)
        ax.tick_params(which="both", labelsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.12))
    fig.suptitle(f"LoRA against the 2021 baselines (Figure 2): mean of {len(d['seeds'])} seeds, "
                 f"band min–max", fontsize=10)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/baselines_budget.png")]
