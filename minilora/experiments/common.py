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


def lora_spec(setup: Setup, task: str, label: str, r: int, seed: int, lrs: dict,
              eval_every: int = 0) -> RunSpec:
    setting = setup.tasks[task]
    return RunSpec(setup.base, task, "lora", setup.targets(label), r, seed, setting.steps,
                   lrs[(task, label)], batch_size=setup.batch_size, lora_alpha=setup.lora_alpha,
                   eval_size=setup.eval_size, eval_every=eval_every)


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


def tuning_spec(setup: Setup, task: str, label: str, lr: float, seed: int) -> RunSpec:
    """A tuning run: r = tuning_rank, a tuning seed, scored on the validation set (eval_seed 1)."""
    return RunSpec(setup.base, task, "lora", setup.targets(label), setup.tuning_rank, seed,
                   setup.tasks[task].steps, lr, batch_size=setup.batch_size,
                   lora_alpha=setup.lora_alpha, eval_size=setup.eval_size, eval_seed=1)


def tuning_specs(setup: Setup) -> list[RunSpec]:
    """Every (task, target set, candidate lr, tuning seed) where a task's grid has several."""
    return [tuning_spec(setup, task, label, lr, seed)
            for task, setting in setup.tasks.items() if len(setting.lr_grid) > 1
            for label in target_labels(setup) for lr in setting.lr_grid
            for seed in setup.tuning_seeds]


def choose_lrs(setup: Setup, results: dict) -> tuple[dict, list[dict]]:
    """``({(task, label): lr}, tuning table)`` from the tuning runs' results (by key).

    The best mean validation accuracy over the tuning seeds wins; a tie goes to the lower
    mean validation loss.
    """
    lrs, table = {}, []
    for task, setting in setup.tasks.items():
        for label in target_labels(setup):
            if len(setting.lr_grid) == 1:
                lrs[(task, label)] = setting.lr_grid[0]
                continue
            scored = []
            for lr in setting.lr_grid:
                runs = [results[tuning_spec(setup, task, label, lr, s).key()]
                        for s in setup.tuning_seeds]
                accuracy = sum(res["accuracy"] for res in runs) / len(runs)
                loss = sum(res["loss"] for res in runs) / len(runs)
                scored.append((-accuracy, loss, lr))
                table.append({"task": task, "targets": label, "r": setup.tuning_rank, "lr": lr,
                              "val_accuracy": round(accuracy, 4), "val_loss": round(loss, 4),
                              "per_seed": " ".join(f"{res['accuracy']:.3f}" for res in runs)})
            lrs[(task, label)] = min(scored)[2]
    return lrs, table


def setup_lrs(setup: Setup) -> dict:
    """``{(task, target set): lr}`` as the setup records them (chosen by ``minilora tune``)."""
    return {(task, label): setting.lr_for(label) for task, setting in setup.tasks.items()
            for label in target_labels(setup)}


def lrs_table(lrs: dict) -> list[dict]:
    return [{"task": task, "targets": label, "lr": lr} for (task, label), lr in lrs.items()]


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
