"""Rank ablation: accuracy against r for each set of adapted weights (Table 6 of the paper).

For each task, the target sets of its ``rows`` (config.py) at their ranks, every seed, beside
full fine-tuning and the untrained base model. Every (target set, r) on "perm" has its own
learning rate, chosen by ``minilora tune`` on tuning seeds from a grid that brackets it, so a
rank that falls short falls short at its best rate: capacity, not a rate tuned for another r.
The paper's finding, on GPT-3: r = 1 on {Wq, Wv} is already as good as r = 64, while Wq alone
needs a larger r. The low-rank task ("rev") should show the same; the high-rank task
("perm") is the contrast, where small r must fall short.

Outcomes on "perm" are bimodal (a run leaves the plateau at loss ln 64 or it does not), so
each cell is reported as its mean, its min–max over the seeds and how many seeds escaped
(accuracy above ``setup.escape_accuracy``) and solved it (above ``setup.solve_accuracy``).

Figure ``rank_ablation.png``: "rev" as error rate (1 − accuracy) on a log axis, where the
ceiling hides nothing; "perm" as accuracy with the min–max band and the escaped count.
"""
from __future__ import annotations

from statistics import mean

from .common import (base_spec, full_spec, log2_axis, lora_spec, new_figure, save_figure,
                     seed_summary)
from .findings import fmt, table

FIGURES = ("rank_ablation",)


def specs(setup, lrs) -> list:
    out = [base_spec(setup, task) for task in setup.tasks]
    for task, setting in setup.tasks.items():
        out += [full_spec(setup, task, seed) for seed in setup.seeds]
        out += [lora_spec(setup, task, label, r, seed, lrs) for label, _ in setting.rows
                for r in setup.row_ranks(task, label) for seed in setup.seeds]
    return out


def compute(setup, lrs, results: dict) -> dict:
    from .. import tasks as task_defs

    out = {}
    for task, setting in setup.tasks.items():
        rows = []
        for label, _ in setting.rows:
            ranks = setup.row_ranks(task, label)
            specs_ = {r: [lora_spec(setup, task, label, r, s, lrs) for s in setup.seeds]
                      for r in ranks}
            rows.append({"targets": label, "ranks": list(ranks),
                         "lr": {str(r): specs_[r][0].lr for r in ranks},
                         "accuracy": {str(r): [results[s.key()]["accuracy"] for s in specs_[r]]
                                      for r in ranks},
                         "trainable": {str(r): results[specs_[r][0].key()]["trainable"]
                                       for r in ranks}})
        full = [results[full_spec(setup, task, s).key()] for s in setup.seeds]
        out[task] = {"steps": setting.steps, "full_lr": setting.full_lr,
                     "base": results[base_spec(setup, task).key()]["accuracy"],
                     "full": [res["accuracy"] for res in full],
                     "full_trainable": full[0]["trainable"], "rows": rows}
    return {"rank_ablation": {
        "setup": setup.name, "metric": "token accuracy on the y positions (held-out set)",
        "task_order": list(setup.tasks), "ranks": list(setup.ranks), "seeds": list(setup.seeds),
        "lora_alpha": setup.lora_alpha, "batch_size": setup.batch_size,
        "eval_size": setup.eval_size, "eval_tokens": setup.eval_size * task_defs.SEQ_LEN,
        "escape_accuracy": setup.escape_accuracy, "solve_accuracy": setup.solve_accuracy,
        "lr_chosen_by": {task: "minilora tune, per (target set, r)" if setting.lrs
                         else f"fixed {setting.lr:g}, not tuned"
                         for task, setting in setup.tasks.items()},
        "tasks": out}}


def _summary(d: dict, values) -> dict:
    return seed_summary(values, d["escape_accuracy"], d["solve_accuracy"])


def tables(data: dict) -> dict:
    """Table 6's layout, one row per (task, weights, r): mean, min, max, escaped, solved."""
    d = data["rank_ablation"]
    rows = []
    for task in d["task_order"]:
        t = d["tasks"][task]
        for row in t["rows"]:
            for r in row["ranks"]:
                s = _summary(d, row["accuracy"][str(r)])
                rows.append({"task": task, "weights": row["targets"], "r": r,
                             "lr": row["lr"][str(r)], "mean": round(s["mean"], 4),
                             "min": round(s["min"], 4), "max": round(s["max"], 4),
                             "seeds": s["n"], "escaped": s["escaped"], "solved": s["solved"]})
        s = _summary(d, t["full"])
        rows.append({"task": task, "weights": "full fine-tuning", "r": "", "lr": t["full_lr"],
                     "mean": round(s["mean"], 4), "min": round(s["min"], 4),
                     "max": round(s["max"], 4), "seeds": s["n"], "escaped": s["escaped"],
                     "solved": s["solved"]})
    return {"rank_ablation": rows}


def smallest_rank(d: dict, row: dict, count: str = "solved"):
    """The smallest r from which on every seed, at every larger r too, ``count`` ("solved" or
    "escaped"); None if not even the largest r does."""
    found = None
    for r in reversed(row["ranks"]):
        if _summary(d, row["accuracy"][str(r)])[count] < len(d["seeds"]):
            break
        found = r
    return found


def smallest_solving_rank(d: dict, row: dict):
    return smallest_rank(d, row, "solved")


def findings(data: dict) -> str:
    d = data["rank_ablation"]
    n, ranks = len(d["seeds"]), d["ranks"]
    out = [f"Token accuracy on {d['eval_tokens']:,} held-out answer tokens, mean of {n} seeds "
           f"(min–max below it; on perm also how many of the {n} seeds escaped the plateau, "
           f"accuracy > {d['escape_accuracy']:g}, and solved the task, > "
           f"{d['solve_accuracy']:g}). Learning rates: "
           + "; ".join(f"{task} {how}" for task, how in d["lr_chosen_by"].items()) + ".\n"]
    for task in d["task_order"]:
        t = d["tasks"][task]
        full = _summary(d, t["full"])
        cells = []
        for row in t["rows"]:
            line = [task, row["targets"]]
            for r in ranks:
                if str(r) not in row["accuracy"]:
                    line.append("·")
                    continue
                s = _summary(d, row["accuracy"][str(r)])
                text = f"{fmt(s['mean'], 4 if task == 'rev' else 3)}"
                if task == "rev":
                    text += f" ({fmt(s['min'], 4)}–{fmt(s['max'], 4)})"
                else:
                    text += f" ({fmt(s['min'])}–{fmt(s['max'])}) {s['escaped']}/{s['solved']}"
                line.append(text)
            cells.append(line)
        out.append(table(["task", "weights", *[f"r={r}" for r in ranks]], cells))
        out.append(f"{task}: full fine-tuning {fmt(full['mean'], 4)} ({fmt(full['min'], 4)}–"
                   f"{fmt(full['max'], 4)}), base model {fmt(t['base'], 4)}"
                   + (f"; cells read mean (min–max) escaped/solved" if task != "rev" else "")
                   + ".\n")
    out.append(_verdicts(d))
    return "\n".join(out)


def _ranks_text(ranks) -> str:
    return "r = " + ", ".join(str(r) for r in ranks)


def _verdicts(d: dict) -> str:
    """One line per row: the r that suffices (solves on every seed, or at least escapes the
    plateau on every seed), the ranks where no seed escaped, the ranks where seeds disagree."""
    n, lines = len(d["seeds"]), []
    for task in d["task_order"]:
        t = d["tasks"][task]
        full = _summary(d, t["full"])
        for row in t["rows"]:
            r_star = smallest_solving_rank(d, row)
            r_escape = smallest_rank(d, row, "escaped")
            acc = {r: _summary(d, row["accuracy"][str(r)]) for r in row["ranks"]}
            stuck = [r for r, s in acc.items() if s["escaped"] == 0]
            split = [r for r, s in acc.items() if 0 < s["solved"] < n or 0 < s["escaped"] < n]
            head = f"- {task}, {row['targets']}: "
            if r_star is None:
                high = row["ranks"][-1]
                best = max(acc, key=lambda r: acc[r]["mean"])
                head += (f"no r up to {high} solves it (> {d['solve_accuracy']:g}) on every seed;"
                         f" the best mean is r = {best}'s {fmt(acc[best]['mean'])} "
                         f"({acc[best]['solved']}/{n} solved)")
            else:
                head += (f"r = {r_star} suffices: every seed solves it (> "
                         f"{d['solve_accuracy']:g}) at every r ≥ {r_star}")
            if r_escape is not None and r_escape != r_star:
                head += f"; every seed escapes the plateau at every r ≥ {r_escape}"
            if stuck:
                head += f"; no seed escapes the plateau at {_ranks_text(stuck)}"
            if split:
                head += (f"; seeds split at {_ranks_text(split)} (" + ", ".join(
                    f"{acc[r]['escaped']}/{n} escaped, {acc[r]['solved']}/{n} solved"
                    for r in split) + ")")
            lines.append(head + f". Full fine-tuning: {full['solved']}/{n} solved.")
    return "\n".join(lines) + "\n"


def plot(data: dict, out_dir) -> list:
    d = data["rank_ablation"]
    ranks = d["ranks"]
    fig, axes = new_figure(1, len(d["task_order"]), figsize=(7.2, 3.4), squeeze=False)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    floor = 0.5 / d["eval_tokens"]  # where a run without a single error is drawn
    for ax, task in zip(axes[0], d["task_order"]):
        t = d["tasks"][task]
        error = task == "rev"
        for color, row in zip(colors, t["rows"]):
            rs = row["ranks"]
            stats = [_summary(d, row["accuracy"][str(r)]) for r in rs]
            if error:
                err = [max(1 - s["mean"], floor) for s in stats]
                ax.plot(rs, err, "o-", color=color, label=row["targets"], markersize=4)
                ax.fill_between(rs, [max(1 - s["max"], floor) for s in stats],
                                [max(1 - s["min"], floor) for s in stats], color=color,
                                alpha=0.15, linewidth=0)
            else:
                ax.plot(rs, [s["mean"] for s in stats], "o-", color=color, markersize=4,
                        label=row["targets"])
                ax.fill_between(rs, [s["min"] for s in stats], [s["max"] for s in stats],
                                color=color, alpha=0.15, linewidth=0)
                for r, s in zip(rs, stats):
                    ax.annotate(f"{s['escaped']}", (r, s["max"]), textcoords="offset points",
                                xytext=(0, 3), ha="center", fontsize=8, color=color)
        full = mean(t["full"])
        if error:
            ax.axhline(max(1 - full, floor), color="black", linestyle="--", label="full FT")
            ax.axhline(floor, color="gray", linewidth=0.8, linestyle=":")
            ax.set_yscale("log")
            ax.set_ylabel("error rate, 1 − accuracy (log)", fontsize=9)
            ax.set_title(f"rev (low rank): {t['steps']} steps\n"
                         f"dotted: no error in {d['eval_tokens']:,} tokens", fontsize=9)
        else:
            ax.axhline(full, color="black", linestyle="--", label="full FT")
            ax.axhline(t["base"], color="gray", linestyle=":", label="base model")
            ax.set_ylim(-0.02, 1.1)
            ax.set_ylabel("token accuracy", fontsize=9)
            ax.set_title(f"perm (high rank): {t['steps']} steps\n"
                         f"numbers: seeds of {len(d['seeds'])} that escaped", fontsize=9)
        log2_axis(ax, ranks)
        ax.tick_params(which="both", labelsize=8)
        ax.set_xlabel("LoRA rank r", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
                  frameon=False)
    fig.suptitle(f"Rank ablation (Table 6): mean of {len(d['seeds'])} seeds, band min–max",
                 fontsize=10)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/rank_ablation.png")]
