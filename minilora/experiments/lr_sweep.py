"""The learning rate LoRA needs (after the paper: Thinking Machines 2025, "LoRA Without Regret").

Their claim, on LLMs: LoRA's best learning rate is about 10× full fine-tuning's (more in short
runs), and with scaling α/r at a fixed α it hardly moves with r. Why it should not move: B
starts at 0, so early in training ΔW = (α/r)·B A grows as Σ over r directions of an Adam-sized
step each, divided by r: the same pace at every r (rsLoRA's figure shows it). With α/√r the
pace grows as √r, so the best rate should fall as r grows, by up to √r.

Here: on ``setup.sweep_task`` with LoRA on ``setup.sweep_targets`` at every r of
``setup.sweep_ranks``, under both scalings (at r = 1 they are the same run), and full
fine-tuning, each learning rate of a grid (×2 apart) is run on the ``setup.tuning_seeds`` and
scored by the final loss on the validation set (``eval_seed`` 1). The rate of lowest mean loss
wins. Where it sits at an edge of its grid, the grid grows past that edge by ×2 (common.py's
``extend_grids``, as ``minilora tune`` does), up to ``setup.sweep_extensions`` times, so every
optimum is bracketed by two rates that did worse; the data say which grids grew. Then each
winner runs on the reported ``setup.seeds``, scored on the test set: its loss is the one read.

The sweep's later stages depend on its earlier results, so :func:`more_specs` names the runs
still missing (``minilora figures`` runs them in its pool until none are); :func:`compute`
replays the same choices from the results.

Figure ``lr_sweep.png``: held-out loss against learning rate, one curve per r (mean of the
tuning seeds, band min-max), one panel per scaling, full fine-tuning in both; the winner of each
curve with its test loss over the reported seeds (bar min-max).
"""
from __future__ import annotations

from statistics import mean

from .common import extend_grids, new_figure, save_figure
from .findings import fmt, table
from .runs import RunSpec

FIGURES = ("lr_sweep",)
SCALINGS = {"α/r": False, "α/√r": True}  # name -> RunSpec.use_rslora


def curves(setup) -> list[tuple]:
    """(method, r, use_rslora) of every curve: LoRA at each r under each scaling (r = 1 once:
    both scalings give s = α), then full fine-tuning."""
    out = [("lora", r, rs) for rs in SCALINGS.values() for r in setup.sweep_ranks
           if not (rs and r == 1)]  # at r = 1, α/√r = α/r: one run, not two keys
    return out + [("full", 0, False)]


def spec(setup, curve: tuple, lr: float, seed: int, eval_seed: int) -> RunSpec:
    method, r, rs = curve
    targets = setup.targets(setup.sweep_targets) if method == "lora" else ()
    return RunSpec(setup.base, setup.sweep_task, method, targets, r, seed,
                   setup.tasks[setup.sweep_task].steps, lr, batch_size=setup.batch_size,
                   lora_alpha=setup.lora_alpha, eval_size=setup.eval_size, eval_seed=eval_seed,
                   use_rslora=rs)


def _grid_specs(setup, grids: dict) -> list[RunSpec]:
    return [spec(setup, c, lr, s, 1) for c, grid in grids.items() for lr in grid
            for s in setup.tuning_seeds]


def _choose(setup, grids: dict, results: dict) -> dict:
    """``{curve: {"lr", "edge", "learns"}}``: the lowest mean validation loss of each grid."""
    chosen = {}
    for c, grid in grids.items():
        loss = {lr: mean(results[spec(setup, c, lr, s, 1).key()]["loss"]
                         for s in setup.tuning_seeds) for lr in grid}
        best = min(grid, key=lambda lr: (loss[lr], lr))
        chosen[c] = {"lr": best, "edge": best in (min(grid), max(grid)), "learns": True}
    return chosen


def plan(setup, results: dict) -> tuple[dict, dict, list[RunSpec]]:
    """``(grids, chosen, missing)``: the grids as grown so far, their winners, and the runs
    not yet in ``results`` that the next stage needs (none: the sweep is complete)."""
    grids = {c: sorted(setup.sweep_full_lrs if c[0] == "full" else setup.sweep_lora_lrs)
             for c in curves(setup)}
    for stage in range(setup.sweep_extensions + 1):
        missing = [s for s in _grid_specs(setup, grids) if s.key() not in results]
        if missing:
            return grids, {}, missing
        chosen = _choose(setup, grids, results)
        wider = extend_grids(setup, grids, chosen)
        if wider == grids or stage == setup.sweep_extensions:
            break
        grids = wider
    finals = [spec(setup, c, chosen[c]["lr"], s, 0) for c in grids for s in setup.seeds]
    return grids, chosen, [s for s in finals if s.key() not in results]


def specs(setup, lrs) -> list:
    return plan(setup, {})[2]


def more_specs(setup, lrs, results: dict) -> list:
    return plan(setup, results)[2]


def compute(setup, lrs, results: dict) -> dict:
    grids, chosen, missing = plan(setup, results)
    if missing:
        raise ValueError(f"lr_sweep.compute: {len(missing)} runs missing (run more_specs first)")
    out = []
    for c, grid in grids.items():
        first = setup.sweep_full_lrs if c[0] == "full" else setup.sweep_lora_lrs
        best = chosen[c]["lr"]
        out.append({"method": c[0], "r": c[1], "use_rslora": c[2], "grid": grid,
                    "extended": sorted(set(grid) - set(first)), "best_lr": best,
                    "edge": chosen[c]["edge"],
                    "val_loss": {repr(lr): [results[spec(setup, c, lr, s, 1).key()]["loss"]
                                            for s in setup.tuning_seeds] for lr in grid},
                    "test_loss": [results[spec(setup, c, best, s, 0).key()]["loss"]
                                  for s in setup.seeds],
                    "test_accuracy": [results[spec(setup, c, best, s, 0).key()]["accuracy"]
                                      for s in setup.seeds]})
    return {"lr_sweep": {
        "setup": setup.name, "task": setup.sweep_task, "targets": setup.sweep_targets,
        "steps": setup.tasks[setup.sweep_task].steps, "lora_alpha": setup.lora_alpha,
        "ranks": list(setup.sweep_ranks), "tuning_seeds": list(setup.tuning_seeds),
        "seeds": list(setup.seeds), "eval_size": setup.eval_size,
        "max_extensions": setup.sweep_extensions, "curves": out}}


def pick(d: dict, method: str, r: int = 0, use_rslora: bool = False) -> dict:
    """The curve of ``method`` ("lora" or "full") at r under a scaling; r = 1 is one curve."""
    rs = use_rslora and r != 1
    return next(c for c in d["curves"] if c["method"] == method and c["r"] == r
                and c["use_rslora"] == rs)


def _name(c: dict) -> str:
    if c["method"] == "full":
        return "full fine-tuning"
    return f"LoRA r={c['r']} " + ("α/√r" if c["use_rslora"] else "α/r")


def _stats(values) -> dict:
    return {"mean": mean(values), "min": min(values), "max": max(values), "n": len(values)}


def tables(data: dict) -> dict:
    rows = []
    for c in data["lr_sweep"]["curves"]:
        for lr in c["grid"]:
            s = _stats(c["val_loss"][repr(lr)])
            rows.append({"run": _name(c), "lr": lr, "val_loss_mean": s["mean"],
                         "val_loss_min": s["min"], "val_loss_max": s["max"],
                         "best": lr == c["best_lr"], "extended": lr in c["extended"]})
    return {"lr_sweep": rows}


def ratios(d: dict) -> dict:
    """``{scaling: {r: LoRA's best lr / full fine-tuning's}}``."""
    full = pick(d, "full")["best_lr"]
    return {name: {r: pick(d, "lora", r, rs)["best_lr"] / full for r in d["ranks"]}
            for name, rs in SCALINGS.items()}


def findings(data: dict) -> str:
    d = data["lr_sweep"]
    n, k = len(d["seeds"]), len(d["tuning_seeds"])
    full = pick(d, "full")
    rows = []
    for c in d["curves"]:
        s, a = _stats(c["test_loss"]), _stats(c["test_accuracy"])
        rows.append([_name(c), f"{c['best_lr']:g}", "yes" if c["edge"] else "no",
                     ", ".join(f"{x:g}" for x in c["extended"]) or "·",
                     f"{s['mean']:.2g} ({s['min']:.2g}–{s['max']:.2g})",
                     f"{fmt(a['mean'], 4)} ({fmt(a['min'], 4)}–{fmt(a['max'], 4)})"])
    out = [f"{d['task']}, {d['steps']} steps, LoRA on {d['targets']}, α = {d['lora_alpha']:g} "
           f"at every r. Best learning rate: lowest mean validation loss over {k} tuning seeds "
           f"on a grid ×2 apart, grown past an edge winner up to {d['max_extensions']} times "
           f"(\"grown\": the rates added); its test loss and accuracy: mean of {n} seeds "
           f"(min–max).\n",
           table(["run", "best lr", "at an edge", "grown", f"test loss ({n} seeds)",
                  "test accuracy"], rows)]
    lines = []
    for name, per_r in ratios(d).items():
        lo, hi = d["ranks"][0], d["ranks"][-1]
        lines.append(f"- {name}: LoRA's best rate / full fine-tuning's ({full['best_lr']:g}) = "
                     + ", ".join(f"{x:g}× at r={r}" for r, x in per_r.items())
                     + f"; from r = {lo} to r = {hi} the best rate moves "
                     f"×{per_r[hi] / per_r[lo]:g}, and over all r it spans "
                     f"×{max(per_r.values()) / min(per_r.values()):g} (the grid's step is ×2).")
    unbracketed = [_name(c) for c in d["curves"] if c["edge"]]
    lines.append("- Every best rate is bracketed by two that did worse." if not unbracketed
                 else "- Not bracketed (the winner at an edge after every extension): "
                 + ", ".join(unbracketed) + ".")
    return "\n".join(out + ["\n".join(lines) + "\n"])


def plot(data: dict, out_dir) -> list:
    d = data["lr_sweep"]
    fig, axes = new_figure(1, 2, figsize=(7.4, 4.4), sharey=True, squeeze=False)
    colors = dict(zip(d["ranks"], ["tab:blue", "tab:orange", "tab:green", "tab:purple",
                                   "tab:red", "tab:brown"]))
    full = pick(d, "full")
    for ax, (name, rs) in zip(axes[0], SCALINGS.items()):
        for c in [*(pick(d, "lora", r, rs) for r in d["ranks"]), full]:
            color = "black" if c["method"] == "full" else colors[c["r"]]
            label = "full FT" if c["method"] == "full" else f"r = {c['r']}"
            val = [_stats(c["val_loss"][repr(lr)]) for lr in c["grid"]]
            ax.plot(c["grid"], [s["mean"] for s in val], marker="o", color=color,
                    markersize=3, linewidth=1, label=label,
                    linestyle="--" if c["method"] == "full" else "-")
            ax.fill_between(c["grid"], [s["min"] for s in val], [s["max"] for s in val],
                            color=color, alpha=0.15, linewidth=0)
            t = _stats(c["test_loss"])
            ax.errorbar(c["best_lr"], t["mean"], yerr=[[t["mean"] - t["min"]],
                                                       [t["max"] - t["mean"]]],
                        fmt="*", color=color, markersize=8, capsize=2, linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted({lr for c in d["curves"] for lr in c["grid"]})
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{lr:g}" for lr in ticks], rotation=60)
        ax.minorticks_off()
        ax.set_xlabel("peak learning rate (log scale)", fontsize=9)
        ax.set_title(f"scaling {name}", fontsize=9)
        ax.tick_params(which="both", labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.42),
                  ncol=3)
    axes[0][0].set_ylabel("final held-out loss (log)", fontsize=9)
    fig.suptitle(f"{d['task']}, {d['targets']}, {d['steps']} steps: lines validation loss, "
                 f"mean of {len(d['tuning_seeds'])} tuning seeds (band min–max); star: the best "
                 f"rate's test loss, {len(d['seeds'])} seeds", fontsize=8)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/lr_sweep.png")]
