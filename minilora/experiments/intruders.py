"""Intruder dimensions against r (after the paper: Shuttleworth et al. 2024).

For every {Wq, Wv} run, each adapted matrix of every layer is merged, W = W0 + ΔW, and its top
``setup.intruder_k`` singular vectors are compared with all of W0's: a vector whose best
|cosine| is below ``setup.intruder_threshold`` is an intruder dimension (analysis.py). Full
fine-tuning's q_proj and v_proj are counted the same way, at each learning rate of
``setup.intruder_full_lrs``. Their finding on LLMs: LoRA introduces intruder dimensions, full
fine-tuning few. How far training moves W matters here, so each row also records the relative
change ‖W − W0‖_F / ‖W0‖_F.

Figure ``intruders.png``: the count against r with full fine-tuning as reference lines, the
count against the threshold, and the count of each matrix against its relative change.
"""
from __future__ import annotations

from statistics import mean

from .. import analysis, backend
from .common import full_spec, log2_axis, lora_spec, new_figure, save_figure
from .delta_w import base_weights, lora_delta

FIGURES = ("intruders",)
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
    return {"intruders": {"setup": setup.name, "targets": LABEL, "k": setup.intruder_k,
                          "threshold": setup.intruder_threshold, "ranks": list(setup.ranks),
                          "full": [f"full lr={lr:g}" for lr in setup.intruder_full_lrs],
                          "seeds": list(setup.seeds), "modules": paths, "rows": rows,
                          "accuracy": accuracy}}


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


def plot(data: dict, out_dir) -> list:
    d = data["intruders"]
    names, ranks = list(dict.fromkeys(row["task"] for row in d["rows"])), d["ranks"]
    total = d["k"] * len(d["modules"])
    styles = ["--", "-.", ":"]
    fig, axes = new_figure(3, len(names), figsize=(5.6 * len(names), 11), squeeze=False)
    for col, task in enumerate(names):
        ax = axes[0][col]
        per_r = [counts(d, task, r) for r in ranks]
        ax.plot(ranks, [mean(c) for c in per_r], "o-", label="LoRA Wq,Wv at rank r")
        ax.fill_between(ranks, [min(c) for c in per_r], [max(c) for c in per_r], alpha=0.15,
                        linewidth=0)
        for name, style in zip(d["full"], styles):
            acc = mean(a["accuracy"] for a in d["accuracy"] if a["task"] == task and a["r"] == name)
            ax.axhline(mean(counts(d, task, name)), color="black", linestyle=style,
                       label=f"{name.replace('full', 'full fine-tuning,')}: "
                             f"{mean(counts(d, task, name)):.1f} (accuracy {acc:.3f})")
        log2_axis(ax, ranks)
        ax.set_ylim(-0.5, max(max(c) for c in per_r + [counts(d, task, n) for n in d["full"]]) + 2)
        ax.set_xlabel("LoRA rank r (log2 scale)")
        ax.set_ylabel(f"intruder dimensions (of {total} examined)")
        ax.set_title(f"'{task}': top-{d['k']} singular vectors of {len(d['modules'])} matrices, "
                     f"max |cos| < {d['threshold']}", fontsize=9)
        ax = axes[1][col]
        for r in [ranks[0], ranks[len(ranks) // 2], ranks[-1]] + d["full"]:
            full = isinstance(r, str)
            ax.plot(THRESHOLDS, [mean(counts(d, task, r, t)) for t in THRESHOLDS],
                    "s" + styles[d["full"].index(r)] if full else "o-",
                    color="black" if full else None,
                    label=r.replace("full", "full FT,") if full else f"LoRA r = {r}")
        ax.set_xlabel("threshold ε on the max |cosine|")
        ax.set_ylabel("intruder dimensions (mean over seeds)")
        ax.set_title(f"'{task}': count against the threshold", fontsize=9)
        ax = axes[2][col]
        for r in ranks + d["full"]:
            sel = [row for row in d["rows"] if row["task"] == task and row["r"] == r]
            full = isinstance(r, str)
            ax.plot([row["relative_change"] for row in sel], [row["intruders"] for row in sel],
                    "s" if full else "o", markersize=5 if full else 4, alpha=0.7,
                    color="black" if full else None,
                    markerfacecolor="none" if full and d["full"].index(r) else None,
                    label=r.replace("full", "full FT,") if full else f"LoRA r={r}")
        ax.set_xscale("log")
        ax.set_xlabel("relative change ‖W − W0‖_F / ‖W0‖_F of one matrix")
        ax.set_ylabel(f"intruders in that matrix (of {d['k']})")
        ax.set_title(f"'{task}': each fine-tuned matrix, intruders against how far it moved",
                     fontsize=9)
        for ax in axes[:, col]:
            ax.legend(fontsize=6)
            ax.grid(alpha=0.3)
    fig.suptitle("Intruder dimensions (Shuttleworth et al. 2024) in the fine-tuned Wq, Wv",
                 fontsize=11)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/intruders.png")]
