"""Capacity (after the paper: Thinking Machines 2025, "LoRA Without Regret").

Their claim: LoRA matches full fine-tuning until the data hold more information than the
adapter can store; past that point it falls behind, and the smaller r, the sooner.

Here the data are a table to memorize: kv<N> (tasks.py), N random key → value pairs of L = 8
tokens each, so the table holds N·L·log2(64) = 48·N bits, and the held-out set asks the stored
pairs themselves (``eval_size`` rounded up to a multiple of N: every pair asked equally often).
The base model knows none of it (it copies or reverses the key: loss ≈ 12.8, accuracy at
chance, 1/64). For each N of ``setup.capacity_pairs``: LoRA on ``setup.capacity_targets`` at
each r of ``setup.capacity_ranks`` and full fine-tuning, ``setup.capacity_steps`` steps, every
reported seed, at the fixed rates ``setup.capacity_lora_lr`` and ``setup.capacity_full_lr``
(not tuned per N; the lr-sweep experiment shows how far a rate tuned elsewhere can be off).

"Falls behind" at N: LoRA's best seed scores below full fine-tuning's worst. The same number of
steps for every N means each pair is seen 32·steps/N times: a larger table is both more to
store and less often seen, for LoRA and full fine-tuning alike, so the comparison, not the
level, is the finding.

Figure ``capacity.png``: accuracy against N (log2), one line per r and full fine-tuning, mean of
the seeds with the min-max band; chance and the bits each table holds marked.
"""
from __future__ import annotations

import math
from statistics import mean

from .. import tasks
from .common import log2_axis, new_figure, save_figure
from .findings import fmt, table
from .runs import RunSpec

FIGURES = ("capacity",)


def methods(setup) -> list[tuple[str, int]]:
    return [("lora", r) for r in setup.capacity_ranks] + [("full", 0)]


def eval_size(setup, n_pairs: int) -> int:
    """``setup.eval_size`` rounded up to a multiple of N: every pair asked as often."""
    return n_pairs * math.ceil(setup.eval_size / n_pairs)


def spec(setup, n_pairs: int, method: str, r: int, seed: int) -> RunSpec:
    lora = method == "lora"
    return RunSpec(setup.base, tasks.kv_task(n_pairs), method,
                   setup.targets(setup.capacity_targets) if lora else (), r, seed,
                   setup.capacity_steps,
                   setup.capacity_lora_lr if lora else setup.capacity_full_lr,
                   batch_size=setup.batch_size, lora_alpha=setup.lora_alpha,
                   eval_size=eval_size(setup, n_pairs))


def specs(setup, lrs) -> list:
    return [spec(setup, n, m, r, s) for n in setup.capacity_pairs for m, r in methods(setup)
            for s in setup.seeds]


def compute(setup, lrs, results: dict) -> dict:
    cells = []
    for n in setup.capacity_pairs:
        for m, r in methods(setup):
            res = [results[spec(setup, n, m, r, s).key()] for s in setup.seeds]
            cells.append({"pairs": n, "method": m, "r": r, "trainable": res[0]["trainable"],
                          "accuracy": [x["accuracy"] for x in res],
                          "loss": [x["loss"] for x in res]})
    return {"capacity": {
        "setup": setup.name, "pairs": list(setup.capacity_pairs),
        "bits_per_pair": tasks.SEQ_LEN * math.log2(tasks.N_CONTENT),
        "chance": 1 / tasks.N_CONTENT, "targets": setup.capacity_targets,
        "ranks": list(setup.capacity_ranks), "steps": setup.capacity_steps,
        "batch_size": setup.batch_size, "lora_lr": setup.capacity_lora_lr,
        "full_lr": setup.capacity_full_lr, "lora_alpha": setup.lora_alpha,
        "seeds": list(setup.seeds), "cells": cells}}


def pick(d: dict, n_pairs: int, method: str, r: int = 0) -> dict:
    return next(c for c in d["cells"] if c["pairs"] == n_pairs and c["method"] == method
                and c["r"] == r)


def _stats(values) -> dict:
    return {"mean": mean(values), "min": min(values), "max": max(values), "n": len(values)}


def _name(method: str, r: int) -> str:
    return "full fine-tuning" if method == "full" else f"LoRA r={r}"


def tables(data: dict) -> dict:
    d, rows = data["capacity"], []
    for c in d["cells"]:
        s = _stats(c["accuracy"])
        rows.append({"pairs": c["pairs"], "bits": c["pairs"] * d["bits_per_pair"],
                     "run": _name(c["method"], c["r"]), "trainable": c["trainable"],
                     "seeds": s["n"], **{f"accuracy_{k}": s[k] for k in ("mean", "min", "max")},
                     "loss_mean": mean(c["loss"])})
    return {"capacity": rows}


def behind(d: dict, n_pairs: int, r: int) -> bool:
    """LoRA at r falls behind full fine-tuning at N: its best seed below full's worst."""
    return max(pick(d, n_pairs, "lora", r)["accuracy"]) < min(pick(d, n_pairs, "full")["accuracy"])


def first_behind(d: dict, r: int):
    """The smallest N from which on LoRA at r falls behind at every larger N too; None if
    not even at the largest N."""
    found = None
    for n in reversed(d["pairs"]):
        if not behind(d, n, r):
            break
        found = n
    return found


def findings(data: dict) -> str:
    d = data["capacity"]
    n = len(d["seeds"])
    rows = []
    for pairs in d["pairs"]:
        line = [f"{pairs} ({pairs * d['bits_per_pair']:,.0f} bits)"]
        for m, r in [("lora", r) for r in d["ranks"]] + [("full", 0)]:
            s = _stats(pick(d, pairs, m, r)["accuracy"])
            line.append(f"{fmt(s['mean'])} ({fmt(s['min'])}–{fmt(s['max'])})")
        rows.append(line)
    params = ", ".join(f"{_name(m, r)} {pick(d, d['pairs'][0], m, r)['trainable']:,}"
                       for m, r in [("lora", r) for r in d["ranks"]] + [("full", 0)])
    out = [f"Memorizing N key → value pairs (kv<N>; {d['bits_per_pair']:g} bits a pair): token "
           f"accuracy on the stored pairs after {d['steps']} steps of {d['batch_size']}, mean of "
           f"{n} seeds (min–max). LoRA on {d['targets']} at lr {d['lora_lr']:g}, full "
           f"fine-tuning at {d['full_lr']:g}; chance {fmt(d['chance'])}. Trainable parameters: "
           f"{params}.\n",
           table(["N pairs", *[f"LoRA r={r}" for r in d["ranks"]], "full fine-tuning"], rows)]
    lines = []
    for r in d["ranks"]:
        at = first_behind(d, r)
        fell = [p for p in d["pairs"] if behind(d, p, r)]
        lines.append(f"- LoRA r={r}: " + (
            f"behind full fine-tuning (its best seed below full's worst) at every N ≥ {at}"
            if at is not None else "not behind full fine-tuning at every large N")
            + (f"; behind at N = {', '.join(map(str, fell))}" if fell else "; behind at no N")
            + ".")
    return "\n".join(out + ["\n".join(lines) + "\n"])


def plot(data: dict, out_dir) -> list:
    d = data["capacity"]
    fig, axes = new_figure(1, 1, figsize=(5.2, 3.6), squeeze=False)
    ax = axes[0][0]
    colors = [f"C{i}" for i in range(len(d["ranks"]))] + ["black"]  # full FT black, any ranks
    for color, (m, r) in zip(colors,
                             [("lora", r) for r in d["ranks"]] + [("full", 0)]):
        st = [_stats(pick(d, p, m, r)["accuracy"]) for p in d["pairs"]]
        ax.plot(d["pairs"], [s["mean"] for s in st], marker="o", color=color, markersize=4,
                label=_name(m, r) + f" ({pick(d, d['pairs'][0], m, r)['trainable']:,} params)",
                linestyle="--" if m == "full" else "-")
        ax.fill_between(d["pairs"], [s["min"] for s in st], [s["max"] for s in st],
                        color=color, alpha=0.15, linewidth=0)
    ax.axhline(d["chance"], color="gray", linestyle=":", linewidth=1, label="chance")
    log2_axis(ax, d["pairs"])
    ax.set_xticklabels([f"{p}\n{p * d['bits_per_pair'] / 1000:g}k bits" for p in d["pairs"]])
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("N pairs stored (kv<N>)", fontsize=9)
    ax.set_ylabel("token accuracy on the stored pairs", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    ax.set_title(f"Capacity: {d['steps']} steps, LoRA on {d['targets']}; mean of "
                 f"{len(d['seeds'])} seeds, band min–max", fontsize=9)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/capacity.png")]
