"""Learning against forgetting (after the paper: Biderman et al. 2024, "LoRA Learns Less and
Forgets Less").

Their claim, on LLMs fine-tuned on code and maths: LoRA learns the new task less well than full
fine-tuning but keeps more of what pre-training taught; both lie on one learning-forgetting
curve; and full fine-tuning's ΔW has 10-100× the rank of typical LoRA configurations.

Here the base model copies after F0 and reverses after F1 (copyrev). Each run fine-tunes it on
a downstream task (LoRA on ``setup.forgetting_targets`` at ``setup.forgetting_ranks`` with the
rank ablation's learning rates; full fine-tuning at each of ``setup.forgetting_full_lrs``, from
little learned to all) and then also scores copyrev's held-out set (``RunSpec.also_eval``).
Learning is the downstream accuracy; forgetting, the base model's copyrev accuracy minus the
fine-tuned model's, on the part of copyrev the task asks differently:

* perm asks π(x) where copyrev asks x (F0) or reversed(x) (F1): all of copyrev;
* rev is copyrev's F1 half (reversal) asked for both flags: only the F0 half (copy) can be
  forgotten, and forgetting it is the task itself (the F1 half is what rev trains on).

How much forgetting is forced: scoring is teacher-forced, and the two tasks' answers differ, so
from the second answer token on the prefix already tells which task is asked, and a model could
answer both. Only at the first answer token are the contexts the same ([F, x, SEP]): 1 in L of
the tokens must trade one task for the other. The rest of the forgetting is the model's.

"One curve": full fine-tuning's runs, from the base model (nothing learned, nothing forgotten)
through its learning rates in order of learning, make a piecewise-linear curve of forgetting
against learning; each LoRA cell inside its span is read against it (:func:`against_full`).
The effective rank of each ΔW (analysis.effective_rank at ``setup.effective_energy``) sets full
fine-tuning's against LoRA's r.

Figure ``forgetting.png``: forgetting against learning per task (the paper's Pareto figure),
cell means with min-max bars over seeds and full fine-tuning's curve; below, effective rank
against r.
"""
from __future__ import annotations

from dataclasses import replace
from statistics import mean

from .. import analysis, backend
from .common import base_spec, full_spec, log2_axis, lora_spec, new_figure, save_figure
from .delta_w import base_weights, lora_delta
from .findings import fmt, table

FIGURES = ("forgetting",)
PRETRAINING = "copyrev"
OVERWRITTEN = {"perm": "all", "rev": "F0"}  # the part of copyrev each task asks differently
TIE = 0.01  # learning this close counts as equal (1% of the answer tokens)


def _observed(spec):
    """The same run (same key), also scoring copyrev's held-out set at its end."""
    return replace(spec, also_eval=(PRETRAINING,))


def cells(setup, lrs) -> list[tuple]:
    """(task, method name, r or lr, spec of each seed) for every point of the figure."""
    out = []
    for task in setup.tasks:
        for label in setup.forgetting_targets:
            out += [(task, label, r, [_observed(lora_spec(setup, task, label, r, s, lrs))
                                      for s in setup.seeds]) for r in setup.forgetting_ranks]
        out += [(task, "full", lr, [_observed(full_spec(setup, task, s, lr=lr))
                                    for s in setup.seeds]) for lr in setup.forgetting_full_lrs]
    return out


def specs(setup, lrs) -> list:
    return [_observed(base_spec(setup, task)) for task in setup.tasks] + \
        [spec for *_, group in cells(setup, lrs) for spec in group]


def _point(res: dict, task: str) -> dict:
    part = OVERWRITTEN[task]
    return {"learning": res["accuracy"],
            "retained": res["also_eval"][PRETRAINING][part]["accuracy"]}


def _delta_ws(spec, res: dict, W0: dict) -> dict:
    """ΔW of every matrix the run changed, by module path."""
    if spec.method == "lora":
        return {path: lora_delta(res, path) for path in res["weights"]}
    return {path: backend.from_numpy(w["W"]) - W0[path] for path, w in res["weights"].items()}


def compute(setup, lrs, results: dict) -> dict:
    W0 = base_weights(setup)
    base = {task: _point(results[_observed(base_spec(setup, task)).key()], task)
            for task in setup.tasks}
    runs = []
    for task, name, value, group in cells(setup, lrs):
        for spec in group:
            res = results[spec.key()]
            point = _point(res, task)
            ranks = {path: analysis.effective_rank(d, setup.effective_energy)
                     for path, d in _delta_ws(spec, res, W0).items()}
            runs.append({"task": task, "method": name, "r": spec.r, "lr": spec.lr,
                         "seed": spec.seed, **point,
                         "forgetting": base[task]["retained"] - point["retained"],
                         "effective_rank": ranks})
    return {"forgetting": {
        "setup": setup.name, "pretraining": PRETRAINING, "overwritten": OVERWRITTEN,
        "tasks": list(setup.tasks), "steps": {t: s.steps for t, s in setup.tasks.items()},
        "seeds": list(setup.seeds), "targets": list(setup.forgetting_targets),
        "ranks": list(setup.forgetting_ranks), "full_lrs": list(setup.forgetting_full_lrs),
        "energy": setup.effective_energy, "d_model": setup.base.model.n_embd,
        "eval_size": setup.eval_size, "base": base, "runs": runs}}


def cell_names(d: dict) -> list[tuple]:
    return [(m, r) for m in d["targets"] for r in d["ranks"]] + \
        [("full", lr) for lr in d["full_lrs"]]


def select(d: dict, task: str, method: str, value) -> list[dict]:
    key = "lr" if method == "full" else "r"
    return [run for run in d["runs"] if run["task"] == task and run["method"] == method
            and run[key] == value]


def _stats(values) -> dict:
    values = list(values)
    return {"mean": mean(values), "min": min(values), "max": max(values), "n": len(values)}


def _qv(ranks: dict) -> float:
    """Mean effective rank over the q_proj and v_proj matrices (what every run changes)."""
    return mean(k for path, k in ranks.items() if path.endswith(("q_proj", "v_proj")))


def summary(d: dict, task: str, method: str, value) -> dict:
    sel = select(d, task, method, value)
    return {"learning": _stats(r["learning"] for r in sel),
            "forgetting": _stats(r["forgetting"] for r in sel),
            "rank_qv": _stats(_qv(r["effective_rank"]) for r in sel),
            "rank_all": _stats(mean(r["effective_rank"].values()) for r in sel)}


def _name(method: str, value) -> str:
    return f"full lr={value:g}" if method == "full" else f"LoRA {method} r={value}"


def tables(data: dict) -> dict:
    d, rows = data["forgetting"], []
    for task in d["tasks"]:
        for method, value in cell_names(d):
            s = summary(d, task, method, value)
            rows.append({"task": task, "run": _name(method, value), "seeds": s["learning"]["n"],
                         **{f"{k}_{m}": round(s[k][m], 4) for k in
                            ("learning", "forgetting", "rank_qv", "rank_all")
                            for m in ("mean", "min", "max")}})
    return {"forgetting": rows}


def full_curve(d: dict, task: str) -> list[tuple[float, float]]:
    """(learning, forgetting): the base model, then full fine-tuning's cells by learning."""
    cells = [summary(d, task, "full", lr) for lr in d["full_lrs"]]
    return [(d["base"][task]["learning"], 0.0)] + sorted(
        (c["learning"]["mean"], c["forgetting"]["mean"]) for c in cells)


def against_full(d: dict, task: str, learning: float) -> tuple[float, float] | None:
    """Full fine-tuning's forgetting at this learning, as an interval: the range of its cells
    whose learning is within ``TIE`` of it (at the ceiling several rates learn all and forget
    different amounts), else one value, linear between the neighbouring cells; None outside the
    learning its runs span."""
    curve = full_curve(d, task)
    near = [y for x, y in curve if abs(x - learning) <= TIE]
    if near:
        return min(near), max(near)
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= learning <= x1:
            y = y0 + (y1 - y0) * (learning - x0) / (x1 - x0)
            return y, y
    return None


def _range(s: dict, digits: int = 3) -> str:
    return f"{fmt(s['mean'], digits)} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"


def findings(data: dict) -> str:
    d = data["forgetting"]
    n = len(d["seeds"])
    out = [f"Learning: downstream accuracy; forgetting: the base model's copyrev accuracy minus "
           f"the fine-tuned one's (perm: all of copyrev; rev: its F0 half, copy); \"full at "
           f"equal learning\": full fine-tuning's forgetting at the cell's learning (linear "
           f"between its cells; the range of those within {TIE:g} of it; · outside their span). "
           f"Effective rank: singular values holding "
           f"{d['energy']:.0%} of ‖ΔW‖_F², mean over q_proj and v_proj (all: over every "
           f"matrix the run changed; d_model {d['d_model']}). Mean of {n} seeds (min–max).\n"]
    for task in d["tasks"]:
        rows = []
        for method, value in cell_names(d):
            s = summary(d, task, method, value)
            at = against_full(d, task, s["learning"]["mean"]) if method != "full" else None
            rows.append([_name(method, value), _range(s["learning"]), _range(s["forgetting"]),
                         "·" if at is None else fmt(at[0]) if at[0] == at[1] else
                         f"{fmt(at[0])}–{fmt(at[1])}", f"{s['rank_qv']['mean']:.1f}",
                         f"{s['rank_all']['mean']:.1f}"])
        out.append(f"{task} ({d['steps'][task]} steps; base model: {task} "
                   f"{fmt(d['base'][task]['learning'])}, copyrev "
                   f"({d['overwritten'][task]}) {fmt(d['base'][task]['retained'])}):\n")
        out.append(table(["run", "learning", "forgetting", "full at equal learning",
                          "eff. rank q,v", "eff. rank all"], rows))
    out.append(_verdicts(d))
    return "\n".join(out)


def _side(s: dict, low: float, high: float | None = None) -> str:
    """Where a cell's seeds lie against a reference value (or interval [low, high]): all
    "above", all "below", or "within" (some on each side, or inside)."""
    return "above" if s["min"] > (low if high is None else high) else \
        "below" if s["max"] < low else "within"


def best_full(d: dict, task: str):
    """Full fine-tuning's best cell: among those within ``TIE`` of the most learning, the one
    that forgets least."""
    cells = {("full", lr): summary(d, task, "full", lr) for lr in d["full_lrs"]}
    top = max(c["learning"]["mean"] for c in cells.values())
    return min((c for c, v in cells.items() if v["learning"]["mean"] >= top - TIE),
               key=lambda c: cells[c]["forgetting"]["mean"])


def _verdicts(d: dict) -> str:
    """Per task: LoRA's cells against full fine-tuning's best and against its curve, each read
    on every seed; full fine-tuning's effective rank against LoRA's r and LoRA's own."""
    lines = []
    for task in d["tasks"]:
        s = {cell: summary(d, task, *cell) for cell in cell_names(d)}
        full = {c: v for c, v in s.items() if c[0] == "full"}
        lora = {c: v for c, v in s.items() if c[0] != "full"}
        best = best_full(d, task)
        f = full[best]
        count = {what: [_side(v[what], f[what]["mean"]) for v in lora.values()]
                 for what in ("learning", "forgetting")}
        side = {"above": [], "below": [], "within": []}  # forgetting vs full's at equal learning
        for c, v in lora.items():
            at = against_full(d, task, v["learning"]["mean"])
            if at is not None:
                side[_side(v["forgetting"], *at)].append(f"{c[0]} r={c[1]}")
        inside = sum(map(len, side.values()))
        lines.append(
            f"- {task}: against full fine-tuning at its best rate ({_name(*best)}: learning "
            f"{fmt(f['learning']['mean'])}, forgetting {fmt(f['forgetting']['mean'])}), LoRA "
            f"learns less on every seed in {count['learning'].count('below')} of {len(lora)} "
            f"cells (more in {count['learning'].count('above')}) and forgets less on every seed "
            f"in {count['forgetting'].count('below')} (more in "
            f"{count['forgetting'].count('above')}). At equal learning ({inside} of "
            f"{len(lora)} LoRA cells inside full fine-tuning's span), LoRA forgets more on every "
            f"seed in {len(side['above'])}, less in {len(side['below'])}, and its seeds straddle "
            f"full's curve in {len(side['within'])}" + "".join(
                f"; {k}: " + ", ".join(v) for k, v in side.items() if v) + ".")
        r1 = d["ranks"][-1]
        own = max(s[(m, r1)]["rank_qv"]["mean"] for m in d["targets"])
        lines.append(
            f"- {task}: effective rank of ΔW (q_proj, v_proj): full fine-tuning "
            + ", ".join(f"{v['rank_qv']['mean']:.1f} at lr={c[1]:g}" for c, v in full.items())
            + f" of {d['d_model']}; LoRA " + "; ".join(
                f"{m} " + ", ".join(f"{s[(m, r)]['rank_qv']['mean']:.1f} at r={r}"
                                    for r in d["ranks"]) for m in d["targets"])
            + f". Full fine-tuning at its best rate has " + ", ".join(
                f"{f['rank_qv']['mean'] / r:.2g}× r = {r}" for r in d["ranks"])
            + f", and {f['rank_qv']['mean'] / own:.2g}× the largest effective rank LoRA reaches "
              f"at r = {r1} ({own:.1f}).")
    return "\n".join(lines) + "\n"


def plot(data: dict, out_dir) -> list:
    d = data["forgetting"]
    fig, axes = new_figure(2, len(d["tasks"]), figsize=(7.4, 6.4), squeeze=False)
    colors = {m: c for m, c in zip([*d["targets"], "full"], ["tab:blue", "tab:green", "black"])}
    for ax, task in zip(axes[0], d["tasks"]):
        for method, value in cell_names(d):
            sel, s = select(d, task, method, value), summary(d, task, method, value)
            color = colors[method]
            ax.plot([r["learning"] for r in sel], [r["forgetting"] for r in sel], ".",
                    color=color, alpha=0.3, markersize=4)
            ax.errorbar(s["learning"]["mean"], s["forgetting"]["mean"],
                        xerr=[[s["learning"]["mean"] - s["learning"]["min"]],
                              [s["learning"]["max"] - s["learning"]["mean"]]],
                        yerr=[[s["forgetting"]["mean"] - s["forgetting"]["min"]],
                              [s["forgetting"]["max"] - s["forgetting"]["mean"]]],
                        fmt="s" if method == "full" else "o", color=color, markersize=4,
                        capsize=2, linewidth=0.8)
            ax.annotate(f"{value:g}", (s["learning"]["mean"], s["forgetting"]["mean"]),
                        textcoords="offset points", xytext=(4, -9), fontsize=8, color=color)
        curve = full_curve(d, task)
        ax.plot(*zip(*curve), color="black", linestyle=":", linewidth=1)
        ax.plot(*curve[0], "*", color="gray", markersize=8)
        ax.set_xlim(-0.03, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(f"learning: {task} accuracy", fontsize=9)
        ax.set_ylabel(f"forgetting: drop of copyrev ({OVERWRITTEN[task]})", fontsize=9)
        ax.set_title(f"{task}: star base model; dotted: full FT's curve", fontsize=9)
    for ax, task in zip(axes[1], d["tasks"]):
        for method in d["targets"]:
            st = [summary(d, task, method, r)["rank_qv"] for r in d["ranks"]]
            ax.plot(d["ranks"], [x["mean"] for x in st], "o-", color=colors[method],
                    markersize=4, label=f"LoRA {method}")
            ax.fill_between(d["ranks"], [x["min"] for x in st], [x["max"] for x in st],
                            color=colors[method], alpha=0.15, linewidth=0)
        for lr, style in zip(d["full_lrs"], ["--", "-.", ":"]):
            ax.axhline(summary(d, task, "full", lr)["rank_qv"]["mean"], color="black",
                       linestyle=style, linewidth=1, label=f"full lr={lr:g}")
        ax.plot(d["ranks"], d["ranks"], color="gray", linewidth=0.6, label="= r")
        log2_axis(ax, d["ranks"])
        ax.set_yscale("log", base=2)
        ax.set_xlabel("LoRA rank r", fontsize=9)
        ax.set_ylabel(f"effective rank ({d['energy']:.0%}), q_proj, v_proj", fontsize=9)
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    for ax in axes.flat:
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Learning vs forgetting: mean of {len(d['seeds'])} seeds, bars min–max "
                 f"(blue/green LoRA, label r; black full FT, label lr)", fontsize=9)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/forgetting.png")]
