"""Intruder dimensions against r (after the paper: Shuttleworth et al. 2024).

For every {Wq, Wv} run, each adapted matrix of every layer is merged, W = W0 + ΔW, and its top
``setup.intruder_k`` singular vectors are compared with all of W0's: a vector whose best
|cosine| is below ``setup.intruder_threshold`` is an intruder dimension (analysis.py). Full
fine-tuning's q_proj and v_proj are counted the same way, at each learning rate of
``setup.intruder_full_lrs``. Their finding on LLMs: LoRA introduces intruder dimensions, full
fine-tuning few. Each row also records the relative change ‖W − W0‖_F / ‖W0‖_F, so that
:func:`findings` can say from the data whether the count goes with how far W moved (it does
not, across methods: see the README).

Figure ``intruders.png``: the count against r with full fine-tuning as reference lines, the
count against the threshold, and the count of each matrix against its relative change.
"""
from __future__ import annotations

from statistics import mean

from .. import analysis, backend
from .common import full_spec, log2_axis, lora_spec, new_figure, save_figure
from .delta_w import base_weights, lora_delta

FIGURES = ("intruders", "intruders_change")
LABEL = "Wq,Wv"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def specs(setup, lrs) -> list:
    return [lora_spec(setup, task, LABEL, r, seed, lrs) for task in setup.tasks
            for r in setup.ranks for seed in setup.seeds] + \
        [full_spec(setup, task, seed, lr=lr) for task in setup.tasks for seed in setup.seeds
         for lr in setup.intruder_full_lrs]


def _norm(M) -> float:
    return float(backend.xp.linalg.matrix_norm(M, ord="fro"))


def compute(setup, lrs, results: dict) -> dict:
    W0 = base_weights(setup)
    paths = [f"layers.{layer}.attn.{m}" for layer in range(setup.base.model.n_layer)
             for m in ("q_proj", "v_proj")]
    runs, accuracy = [], []  # (task, seed, run name, how to get W_ft); accuracy of each run
    for task in setup.tasks:
        for seed in setup.seeds:
            for r in setup.ranks:
                res = results[lora_spec(setup, task, LABEL, r, seed, lrs).key()]
                runs.append((task, seed, r, lambda p, res=res: W0[p] + lora_delta(res, p)))
                accuracy.append({"task": task, "seed": seed, "r": r, "accuracy": res["accuracy"]})
            for lr in setup.intruder_full_lrs:
                res = results[full_spec(setup, task, seed, lr=lr).key()]
                runs.append((task, seed, f"full lr={lr:g}",
                             lambda p, res=res: backend.from_numpy(res["weights"][p]["W"])))
                accuracy.append({"task": task, "seed": seed, "r": f"full lr={lr:g}",
                                 "accuracy": res["accuracy"]})
    rows = []
    for task, seed, r, weight in runs:
        for path in paths:
            W_ft = weight(path)
            cos = backend.to_numpy(analysis.max_cosine_similarities(W_ft, W0[path],
                                                                    setup.intruder_k))
            rows.append({"task": task, "seed": seed, "r": r, "module": path,
                         "relative_change": round(_norm(W_ft - W0[path]) / _norm(W0[path]), 6),
                         "max_cosines": [round(float(c), 6) for c in cos],
                         "intruders": int(sum(c < setup.intruder_threshold for c in cos))})
    tasks = list(setup.tasks)
    return {"intruders": {"setup": setup.name, "targets": LABEL, "k": setup.intruder_k,
                          "threshold": setup.intruder_threshold, "ranks": list(setup.ranks),
                          "full": [f"full lr={lr:g}" for lr in setup.intruder_full_lrs],
                          "seeds": list(setup.seeds), "modules": paths, "rows": rows,
                          "accuracy": accuracy},
            "intruders_change": {  # the second figure's numbers: Spearman's ρ per task
                "setup": setup.name, "what": "per matrix: intruders against relative change",
                "spearman_all_runs": {t: spearman(*points(rows, t)) for t in tasks},
                "spearman_lora": {t: spearman(*points(rows, t, lora_only=True)) for t in tasks}}}


def points(rows, task: str, lora_only: bool = False) -> tuple[list, list]:
    sel = [row for row in rows if row["task"] == task
           and not (lora_only and isinstance(row["r"], str))]
    return [row["relative_change"] for row in sel], [row["intruders"] for row in sel]


def counts(d: dict, task: str, r, threshold: float | None = None) -> list[int]:
    """Intruders summed over the adapted matrices, one number per seed."""
    threshold = d["threshold"] if threshold is None else threshold
    return [sum(sum(c < threshold for c in row["max_cosines"]) for row in d["rows"]
                if row["task"] == task and row["r"] == r and row["seed"] == seed)
            for seed in d["seeds"]]


def tables(data: dict) -> dict:
    d = data["intruders"]
    out = []
    for task in dict.fromkeys(row["task"] for row in d["rows"]):
        for r in d["ranks"] + d["full"]:
            change = [row["relative_change"] for row in d["rows"]
                      if row["task"] == task and row["r"] == r]
            acc = [a["accuracy"] for a in d["accuracy"] if a["task"] == task and a["r"] == r]
            out.append({"task": task, "run": r if isinstance(r, str) else f"LoRA r={r}",
                        "mean_accuracy": round(mean(acc), 4),
                        "mean_intruders": round(mean(counts(d, task, r)), 3),
                        "per_seed": " ".join(map(str, counts(d, task, r))),
                        "mean_relative_change": round(mean(change), 4)})
    return {"intruders": out}


def _ranks(values) -> list[float]:
    """Ranks 1..n, ties sharing their mean rank (for Spearman's ρ)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for n in range(i, j + 1):
            ranks[order[n]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation ρ of two equal-length sequences."""
    rx, ry = _ranks(list(x)), _ranks(list(y))
    mx, my = mean(rx), mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else 0.0


def run_summary(d: dict, task: str) -> dict:
    """run name -> (mean intruders per seed, mean relative change, mean accuracy)."""
    out = {}
    for r in d["ranks"] + d["full"]:
        name = r if isinstance(r, str) else f"LoRA r={r}"
        change = [row["relative_change"] for row in d["rows"] if row["task"] == task
                  and row["r"] == r]
        acc = [a["accuracy"] for a in d["accuracy"] if a["task"] == task and a["r"] == r]
        out[name] = (mean(counts(d, task, r)), mean(change), mean(acc))
    return out


def findings(data: dict) -> str:
    d = data["intruders"]
    total = d["k"] * len(d["modules"])
    lines = [f"Intruders among the top {d['k']} singular vectors of {len(d['modules'])} "
             f"matrices ({total} in all), max |cos| < {d['threshold']}; mean of "
             f"{len(d['seeds'])} seeds (per seed in brackets); relative change "
             f"‖W − W0‖_F / ‖W0‖_F, mean over matrices and seeds:", "",
             "| task | run | accuracy | intruders | relative change |", "|---|---|---|---|---|"]
    tasks = list(dict.fromkeys(row["task"] for row in d["rows"]))
    for task in tasks:
        for r in d["ranks"] + d["full"]:
            name = r if isinstance(r, str) else f"LoRA r={r}"
            n, change, acc = run_summary(d, task)[name]
            per_seed = " ".join(map(str, counts(d, task, r)))
            lines.append(f"| {task} | {name} | {acc:.4f} | {n:.1f} ({per_seed}) | {change:.3f} |")
    lines.append("")
    for task in tasks:
        s = run_summary(d, task)
        lora = {k: v for k, v in s.items() if k.startswith("LoRA")}
        for full in d["full"]:
            fewer = sum(s[full][0] < v[0] for v in lora.values())
            lines.append(f"- {task}: {full.replace('full', 'full fine-tuning at')} has fewer "
                         f"intruders than LoRA at {fewer} of {len(lora)} ranks "
                         f"({s[full][0]:.1f} against {min(v[0] for v in lora.values()):.1f}–"
                         f"{max(v[0] for v in lora.values()):.1f}).")
        pairs = sorted(((a, b) for a in s for b in s if s[a][1] > s[b][1] and s[a][0] < s[b][0]),
                       key=lambda p: s[p[0]][0] - s[p[1]][0])  # the starkest first
        lines.append(
            f"- {task}: intruders against relative change, per matrix: Spearman ρ = "
            f"{spearman(*points(d['rows'], task)):+.2f} over all runs, "
            f"{spearman(*points(d['rows'], task, lora_only=True)):+.2f} over LoRA's; "
            f"{len(pairs)} of {len(s) * (len(s) - 1) // 2} pairs of runs where "
            f"the one that moved W more has fewer intruders"
            + (f" (e.g. {pairs[0][0]}: {s[pairs[0][0]][1]:.2f} and {s[pairs[0][0]][0]:.1f} "
               f"against {pairs[0][1]}: {s[pairs[0][1]][1]:.2f} and {s[pairs[0][1]][0]:.1f})"
               if pairs else "") + ".")
    return "\n".join(lines) + "\n"


def plot(data: dict, out_dir) -> list:
    d = data["intruders"]
    names, ranks = list(dict.fromkeys(row["task"] for row in d["rows"])), d["ranks"]
    total = d["k"] * len(d["modules"])
    styles = ["--", ":", "-."]
    fig, axes = new_figure(1, len(names), figsize=(7.4, 3.2), squeeze=False, sharey=True,
                           layout="constrained")
    for ax, task in zip(axes[0], names):
        per_r = [counts(d, task, r) for r in ranks]
        ax.plot(ranks, [mean(c) for c in per_r], "o-", color="tab:blue", label="LoRA Wq,Wv, rank r")
        ax.fill_between(ranks, [min(c) for c in per_r], [max(c) for c in per_r], alpha=0.15,
                        color="tab:blue", linewidth=0)
        for name, style in zip(d["full"], styles):
            ax.axhline(mean(counts(d, task, name)), color="black", linestyle=style,
                       label=name.replace("full", "full fine-tuning,"))
        log2_axis(ax, ranks)
        ax.set_xlabel("LoRA rank r", fontsize=9)
        ax.set_title(f"'{task}'", fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"intruder dimensions (of {total})", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Intruder dimensions: top-{d['k']} singular vectors of the merged Wq, Wv with "
                 f"max |cos| < {d['threshold']} to W0's (mean of {len(d['seeds'])} seeds, "
                 f"band: min–max)", fontsize=9)
    paths = [save_figure(fig, f"{out_dir}/intruders.png")]

    fig, axes = new_figure(1, len(names), figsize=(7.4, 3.2), squeeze=False, sharey=True,
                           layout="constrained")
    for ax, task in zip(axes[0], names):
        for r in ranks + d["full"]:
            sel = [row for row in d["rows"] if row["task"] == task and row["r"] == r]
            full = isinstance(r, str)
            ax.plot([row["relative_change"] for row in sel], [row["intruders"] for row in sel],
                    "s" if full else "o", markersize=4, alpha=0.6,
                    color=("black" if d["full"].index(r) == 0 else "gray") if full else None,
                    label=r.replace("full", "full FT,") if full else f"LoRA r={r}")
        ax.set_xscale("log")
        ax.set_xlabel("relative change ‖W − W0‖_F / ‖W0‖_F", fontsize=9)
        ax.set_title(f"'{task}': one point per matrix and seed", fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"intruders in the matrix (of {d['k']})", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("Intruders in each fine-tuned matrix against how far it moved from W0",
                 fontsize=10)
    paths.append(save_figure(fig, f"{out_dir}/intruders_change.png"))
    return paths
