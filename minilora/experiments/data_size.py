"""The regularization reading, tested: LoRA against full fine-tuning on finite training sets.

The paper's Table 4 has LoRA above full fine-tuning (FT) on some tasks, and a common reading
is that the low-rank constraint regularizes: with few examples, FT's 416k free parameters can
fit the training set and miss the rule, where a rank-r update cannot. The toy tasks' training
stream never repeats a sequence, so it cannot show that; here every cell of
``setup.data_cells`` (LoRA at small r, FT; the rates and steps of Figure 2,
baselines_budget.py) trains on a finite set of n sequences for each n of ``setup.data_sizes``
(``RunSpec.train_size``: the batches of a seed are drawn from that seed's n sequences, so
100 steps of 32 make 50 passes over n = 64), and on the fresh stream (n = ∞, Figure 2's own
runs), every seed. The held-out accuracy is read along training (``setup.curve_points``
times) and at the end; the mean training loss of the last steps beside the held-out loss says
how much a run fits its set rather than the task.

The questions: does LoRA at small r beat FT when data are scarce, and from which n on does FT
catch up? Paired by seed (one seed, one training set for every method), so each size also
says on how many seeds LoRA was ahead.

Figure ``data_size.png``: final held-out accuracy against n (log axis; ∞ at the right), band
min-max; and the held-out curves at the smallest n against the stream's.
"""
from __future__ import annotations

from statistics import mean

from .baselines_budget import cell_specs, lr_of
from .common import new_figure, save_figure, seed_summary
from .findings import fmt, table

FIGURES = ("data_size",)
LAST = 10  # training steps averaged for the final training loss


def _sizes(setup) -> list[int]:
    return [*setup.data_sizes, 0]  # 0: the fresh stream (n = ∞)


def _specs(setup, task: str, label: str, budget: int, n: int) -> list:
    every = max(1, setup.tasks[task].steps // setup.curve_points)
    return cell_specs(setup, task, label, budget, train_size=n, eval_every=every)


def specs(setup, lrs) -> list:
    return [spec for task in setup.data_tasks for label, budget in setup.data_cells
            for n in _sizes(setup) for spec in _specs(setup, task, label, budget, n)]


def compute(setup, lrs, results: dict) -> dict:
    rows = []
    for task in setup.data_tasks:
        for label, budget in setup.data_cells:
            for n in _sizes(setup):
                runs = [results[s.key()] for s in _specs(setup, task, label, budget, n)]
                rows.append({"task": task, "method": label, "budget": budget, "train_size": n,
                             "lr": lr_of(setup, task, label)[0], "trainable": runs[0]["trainable"],
                             "accuracy": [res["accuracy"] for res in runs],
                             "loss": [res["loss"] for res in runs],
                             "train_loss": [mean(res["train_loss"][-LAST:]) for res in runs],
                             "curve_steps": [e["step"] for e in runs[0]["curve"]],
                             "curves": [[e["accuracy"] for e in res["curve"]] for res in runs]})
    return {"data_size": {
        "setup": setup.name, "tasks": list(setup.data_tasks), "sizes": list(setup.data_sizes),
        "cells": [f"{label} {budget}" for label, budget in setup.data_cells],
        "steps": {t: setup.tasks[t].steps for t in setup.data_tasks},
        "batch_size": setup.batch_size, "seeds": list(setup.seeds),
        "escape_accuracy": setup.escape_accuracy, "solve_accuracy": setup.solve_accuracy,
        "rows": rows}}


def _name(row: dict) -> str:
    return f"{row['method']} r={row['budget']}" if row["method"].startswith("LoRA") \
        else row["method"]


def _pick(d: dict, task: str, cell: str, n: int) -> dict:
    return next(row for row in d["rows"] if row["task"] == task and row["train_size"] == n
                and f"{row['method']} {row['budget']}" == cell)


def _size(n: int) -> str:
    return f"{n:,}" if n else "∞"


def tables(data: dict) -> dict:
    d, out = data["data_size"], []
    for row in d["rows"]:
        s = seed_summary(row["accuracy"], d["escape_accuracy"], d["solve_accuracy"])
        out.append({"task": row["task"], "method": _name(row), "train_size": row["train_size"],
                    "trainable": row["trainable"], "lr": row["lr"],
                    "mean": round(s["mean"], 4), "min": round(s["min"], 4),
                    "max": round(s["max"], 4), "seeds": s["n"],
                    "train_loss": round(mean(row["train_loss"]), 4),
                    "held_out_loss": round(mean(row["loss"]), 4),
                    "peak_minus_final": round(mean(max(c) - a for c, a in
                                                   zip(row["curves"], row["accuracy"])), 4)})
    return {"data_size": out}


def findings(data: dict) -> str:
    d = data["data_size"]
    n_seeds, sizes = len(d["seeds"]), [*d["sizes"], 0]
    out = [f"Held-out token accuracy after {', '.join(f'{t} {s}' for t, s in d['steps'].items())} "
           f"steps of {d['batch_size']} sequences drawn from a finite set of n training "
           f"sequences (∞: the fresh stream), mean (min–max) of {n_seeds} seeds; below it the "
           f"mean training loss of the last {LAST} steps / held-out loss.\n"]
    for task in d["tasks"]:
        lines = []
        for cell in d["cells"]:
            first = _pick(d, task, cell, sizes[0])
            line = [_name(first), f"{first['trainable']:,}"]
            for n in sizes:
                row = _pick(d, task, cell, n)
                acc = row["accuracy"]
                line.append(f"{fmt(mean(acc))} ({fmt(min(acc))}–{fmt(max(acc))}); "
                            f"{mean(row['train_loss']):.2f} / {mean(row['loss']):.2f}")
            lines.append(line)
        out.append(f"{task}:\n")
        out.append(table(["method", "trainable", *[f"n = {_size(n)}" for n in sizes]], lines))
        out.append(_verdicts(d, task))
    return "\n".join(out)


def _verdicts(d: dict, task: str) -> str:
    """Per LoRA cell against FT, per n: who has the higher mean, on how many seeds LoRA is
    ahead (paired: same seed, same set), and from which n on FT stays ahead."""
    sizes, n_seeds = [*d["sizes"], 0], len(d["seeds"])
    ft_cell = next((c for c in d["cells"] if c.startswith("FT")), None)
    if ft_cell is None:
        return ""
    lines = []
    for cell in d["cells"]:
        if cell == ft_cell:
            continue
        ahead, wins = [], []
        for n in sizes:
            lora, ft = _pick(d, task, cell, n), _pick(d, task, ft_cell, n)
            ahead.append(mean(lora["accuracy"]) > mean(ft["accuracy"]))
            wins.append(sum(a > b for a, b in zip(lora["accuracy"], ft["accuracy"])))
        flip = next((n for i, n in enumerate(sizes) if not any(ahead[i:])), None)
        name = _name(_pick(d, task, cell, sizes[0]))
        lines.append(
            f"- {task}, {name} against FT: LoRA's mean is higher at "
            + (", ".join(f"n = {_size(n)}" for n, a in zip(sizes, ahead) if a) or "no n")
            + "; LoRA ahead on " + ", ".join(f"{w}/{n_seeds} seeds at n = {_size(n)}"
                                             for n, w in zip(sizes, wins))
            + (f"; FT ahead from n = {_size(flip)} on." if flip is not None and any(ahead)
               else "; FT ahead at every n." if flip == sizes[0] else "."))
    for cell in d["cells"]:
        small = _pick(d, task, cell, sizes[0])
        drop = mean(max(c) - a for c, a in zip(small["curves"], small["accuracy"]))
        lines.append(f"- {task}, {_name(small)} at n = {_size(sizes[0])}: training loss "
                     f"{mean(small['train_loss']):.3f} against held-out {mean(small['loss']):.3f}; "
                     f"held-out accuracy peaks {fmt(drop)} above its final value (mean over seeds).")
    return "\n".join(lines) + "\n"


def plot(data: dict, out_dir) -> list:
    d = data["data_size"]
    fig, axes = new_figure(len(d["tasks"]), 2, figsize=(7.4, 3.4 * len(d["tasks"])),
                           squeeze=False)
    colors = ["tab:blue", "tab:cyan", "tab:green", "black"]
    sizes = d["sizes"]
    inf = sizes[-1] * 4  # where n = ∞ is drawn
    for (ax, ax_c), task in zip(axes, d["tasks"]):
        for color, cell in zip(colors, d["cells"]):
            rows = [_pick(d, task, cell, n) for n in sizes]
            stream = _pick(d, task, cell, 0)
            accs = [r["accuracy"] for r in rows]
            ax.plot(sizes, [mean(a) for a in accs], "o-", color=color, markersize=4,
                    label=_name(stream))
            ax.fill_between(sizes, [min(a) for a in accs], [max(a) for a in accs], color=color,
                            alpha=0.12, linewidth=0)
            ax.errorbar([inf], [mean(stream["accuracy"])], fmt="D", color=color, markersize=4,
                        yerr=[[mean(stream["accuracy"]) - min(stream["accuracy"])],
                              [max(stream["accuracy"]) - mean(stream["accuracy"])]])
            for row, style in ((rows[0], "-"), (stream, "--")):
                curve = [mean(c[i] for c in row["curves"]) for i in range(len(row["curve_steps"]))]
                ax_c.plot(row["curve_steps"], curve, style, color=color)
        ax.set_xscale("log")
        ax.set_xticks([*sizes, inf])
        ax.set_xticklabels([*(f"{n:,}" for n in sizes), "∞"])
        ax.minorticks_off()
        ax.set_xlabel("training sequences n (log)", fontsize=9)
        ax.set_ylabel("held-out accuracy", fontsize=9)
        ax.set_title(f"{task}: {d['steps'][task]} steps of {d['batch_size']}", fontsize=9)
        ax_c.set_xlabel("step", fontsize=9)
        ax_c.set_ylabel("held-out accuracy", fontsize=9)
        ax_c.set_title(f"solid: n = {sizes[0]:,}; dashed: the stream (∞)", fontsize=9)
        for a in (ax, ax_c):
            a.tick_params(labelsize=8)
            a.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.08))
    fig.suptitle(f"Data size: LoRA against full fine-tuning, mean of {len(d['seeds'])} seeds, "
                 f"band min–max", fontsize=10)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/data_size.png")]
