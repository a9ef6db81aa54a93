"""Plumbing shared by the experiments: run specs, learning-rate choice, data files, figures.

Each experiment module has the same three functions:

    specs(setup, lrs)             the fine-tuning runs it needs (RunSpec list)
    compute(setup, lrs, results)  its data (plain dicts and lists) from those runs' results
    plot(data, out_dir)           its figure(s), PNG with the data file beside each

so ``minilora figures`` can gather every experiment's runs into one sweep (shared runs happen
once) and each experiment stays a short chapter.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from .config import Setup
from ..fileio import atomic_write
from .runs import RunSpec


def lr_of(lrs: dict, task: str, label: str, r: int) -> float:
    """The learning rate of LoRA on ``label`` at rank r: tuned for that r, else the task's."""
    return lrs.get((task, label, r), lrs[(task, label)])


def lora_spec(setup: Setup, task: str, label: str, r: int, seed: int, lrs: dict,
              eval_every: int = 0) -> RunSpec:
    setting = setup.tasks[task]
    return RunSpec(setup.base, task, "lora", setup.targets(label), r, seed, setting.steps,
                   lr_of(lrs, task, label, r), batch_size=setup.batch_size,
                   lora_alpha=setup.lora_alpha, eval_size=setup.eval_size, eval_every=eval_every)


def full_spec(setup: Setup, task: str, seed: int, eval_every: int = 0,
              lr: float | None = None) -> RunSpec:
    setting = setup.tasks[task]
    return RunSpec(setup.base, task, "full", (), 0, seed, setting.steps, lr or setting.full_lr,
                   batch_size=setup.batch_size, eval_size=setup.eval_size, eval_every=eval_every)


def base_spec(setup: Setup, task: str) -> RunSpec:
    return RunSpec(setup.base, task, "base", eval_size=setup.eval_size)


def target_labels(setup: Setup) -> list[str]:
    """Every target set some experiment uses, in a fixed order."""
    labels = list(setup.ablation_targets) + [label for label, _ in setup.budget]
    return list(dict.fromkeys(labels))


def lora_cells(setup: Setup, task: str) -> list[tuple[str, int]]:
    """Every (target set, r) the tables report on ``task``: Table 6's rows, then Table 5's."""
    cells = [(label, r) for label, _ in setup.tasks[task].rows
             for r in setup.row_ranks(task, label)]
    return list(dict.fromkeys(cells + list(setup.budget)))


def seed_summary(values, escape: float, solve: float) -> dict:
    """One cell over its seeds: mean, min, max, n, and how many escaped / solved.

    On a task whose runs either leave a plateau or stay on it the mean alone misleads
    (three seeds at .02, .02 and .97 average .34, which no run scored), so the counts go
    beside it.
    """
    values = list(values)
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
            "n": len(values), "escaped": sum(v > escape for v in values),
            "solved": sum(v > solve for v in values)}


# -- choosing the learning rates (``minilora tune``) -------------------------------------------
def tuning_spec(setup: Setup, task: str, label: str, r: int, lr: float, seed: int) -> RunSpec:
    """A tuning run: a tuning seed, scored on the validation set (eval_seed 1)."""
    return RunSpec(setup.base, task, "lora", setup.targets(label), r, seed,
                   setup.tasks[task].steps, lr, batch_size=setup.batch_size,
                   lora_alpha=setup.lora_alpha, eval_size=setup.eval_size, eval_seed=1)


def tuned_cells(setup: Setup, task: str) -> list[tuple[str, int]]:
    """The (target set, r) cells whose rate ``minilora tune`` chooses: the ``tuned_rows`` of
    Table 6 on a task whose grid has several candidates (the others use the task's rate)."""
    setting = setup.tasks[task]
    if len(setting.lr_grid) < 2:
        return []
    return [(label, r) for label, _ in setting.rows if label in setting.tuned_rows
            for r in setup.row_ranks(task, label)]


def first_grids(setup: Setup) -> dict:
    """``{(task, label, r): [candidate lrs]}`` for every tuned cell."""
    return {(task, label, r): list(setting.lr_grid) for task, setting in setup.tasks.items()
            for label, r in tuned_cells(setup, task)}


def tuning_specs(setup: Setup, grids: dict, spec_of=tuning_spec) -> list[RunSpec]:
    """Every tuning run of ``grids``; ``spec_of(setup, task, label, r, lr, seed)`` makes one
    (LoRA's :func:`tuning_spec`, or another method's, e.g. the baselines' of Figure 2)."""
    return [spec_of(setup, task, label, r, lr, seed)
            for (task, label, r), grid in grids.items() for lr in grid
            for seed in setup.tuning_seeds]


def choose_lrs(setup: Setup, grids: dict, results: dict,
               spec_of=tuning_spec) -> tuple[dict, list[dict]]:
    """``({(task, label, r): choice}, tuning table)`` from the tuning runs' results (by key),
    the runs made by ``spec_of`` as in :func:`tuning_specs`.

    The best mean validation accuracy over the tuning seeds wins; a tie goes to the lower
    mean validation loss. ``choice`` says the winner, whether it sits at an edge of its grid,
    and whether any candidate left the plateau (if none did, the choice means nothing).
    """
    chosen, table = {}, []
    for (task, label, r), grid in grids.items():
        scored = []
        for lr in sorted(grid):
            runs = [results[spec_of(setup, task, label, r, lr, s).key()]
                    for s in setup.tuning_seeds]
            accuracy = sum(res["accuracy"] for res in runs) / len(runs)
            loss = sum(res["loss"] for res in runs) / len(runs)
            scored.append((-accuracy, loss, lr))
            table.append({"task": task, "targets": label, "r": r, "lr": lr,
                          "val_accuracy": round(accuracy, 4), "val_loss": round(loss, 4),
                          "per_seed": " ".join(f"{res['accuracy']:.3f}" for res in runs)})
        best = min(scored)
        chosen[(task, label, r)] = {"lr": best[2], "val_accuracy": round(-best[0], 4),
                                    "edge": best[2] in (min(grid), max(grid)),
                                    "learns": -best[0] >= setup.escape_accuracy}
    return chosen, table


def extend_grids(setup: Setup, grids: dict, chosen: dict) -> dict:
    """The grids with one more candidate (×2 or ÷2) past each edge winner that learns."""
    out = {}
    for cell, grid in grids.items():
        c = chosen[cell]
        if c["edge"] and c["learns"]:
            out[cell] = sorted(grid + [c["lr"] * (2 if c["lr"] == max(grid) else 0.5)])
        else:
            out[cell] = grid
    return out


def setup_lrs(setup: Setup) -> dict:
    """``{(task, target set): lr, (task, target set, r): lr}`` as the setup records them: the
    task's rate, and the per-rank rates chosen by ``minilora tune``."""
    lrs = {(task, label): setting.lr for task, setting in setup.tasks.items()
           for label in target_labels(setup)}
    lrs.update({(task, label, r): lr for task, setting in setup.tasks.items()
                for label, r, lr in setting.lrs})
    return lrs


def lrs_table(lrs: dict) -> list[dict]:
    return [{"task": key[0], "targets": key[1], "r": key[2] if len(key) == 3 else "any",
             "lr": lr} for key, lr in lrs.items()]


# -- files ------------------------------------------------------------------------------------
def write_json(path: str | os.PathLike, data) -> Path:
    """Sorted keys and repr-exact floats: the same data gives the same bytes."""
    path = Path(path)
    atomic_write(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    return path


def write_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue().encode())
    return path


def new_figure(*args, **kwargs):
    """``plt.subplots`` on the Agg backend (no display needed), imported only when plotting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """PNG without a timestamp in its metadata, so reruns give the same file."""
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def log2_axis(ax, ranks) -> None:
    """An r axis on a log2 scale, ticked at the ranks tried."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ranks))
    ax.set_xticklabels([str(r) for r in ranks])
    ax.minorticks_off()
