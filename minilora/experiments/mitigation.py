"""Intruder mitigation (after the paper: Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An
Illusion of Equivalence"; PEFT's ``reduce_intruder_dimension``).

Their claim: the intruder dimensions of a LoRA-trained weight carry its forgetting; scaling
their singular values by λ < 1 recovers pre-training behaviour at little cost to the new task.
PEFT ships it with λ = 0.75 on the top 10 singular vectors with max |cos| < 0.5.

Here: the adapters of the forgetting experiment's runs on ``setup.mitigation_tasks`` (every
target set, rank and seed; forgetting.py) each go through ``intruders.reduce_intruder_dimension``
at every λ of ``setup.mitigation_lambdas`` (top_k and ε: ``setup.intruder_k``,
``setup.intruder_threshold``). The mitigated model is scored on the task (learning) and on
copyrev (forgetting), and its merged weights W0 + ΔW' are searched for intruders again. What is
reported against the unmitigated run: forgetting recovered (copyrev accuracy gained) and
accuracy lost. PEFT's method rebuilds ΔW' as the rank-r part of W' − W0, so at λ = 0 the
merged model need not be free of intruders (issue 17's note): the count is measured, not
assumed.

The evaluations run here, in the parent process, after the sweep: one BLAS thread and the
fast path, as in the workers, so the numbers do not depend on ``--jobs``.

Figure ``mitigation.png``: forgetting recovered against accuracy lost (one line per adapter,
λ along it), and the merged model's intruder count against λ.
"""
from __future__ import annotations

from statistics import mean

from .. import analysis, backend, fast, tasks
from .forgetting import OVERWRITTEN, PRETRAINING, cells
from .common import new_figure, save_figure
from .findings import fmt, table

FIGURES = ("mitigation",)


def specs(setup, lrs) -> list:
    return [spec for task, method, _, group in cells(setup, lrs)
            if task in setup.mitigation_tasks and method != "full" for spec in group]


def _lora_model(setup, spec, res: dict):
    """The run's LoRA model, rebuilt from its A and B on a fresh copy of the base."""
    from ..lora import LoraConfig, get_lora_model
    from .runs import ALL_LINEAR, _base_model

    targets = "all-linear" if spec.targets == ALL_LINEAR else list(spec.targets)
    model = get_lora_model(_base_model(setup.base, None),
                           LoraConfig(r=spec.r, lora_alpha=spec.lora_alpha, target_modules=targets))
    for path, layer in model.lora_layers():
        layer.lora_A["default"].weight.data = backend.from_numpy(res["weights"][path]["A"])
        layer.lora_B["default"].weight.data = backend.from_numpy(res["weights"][path]["B"])
    return model


def _mitigated(setup, spec, res: dict, lam: float) -> dict:
    from ..intruders import reduce_intruder_dimension

    model = _lora_model(setup, spec, res)
    found = reduce_intruder_dimension(model, mitigation_lambda=lam, top_k=setup.intruder_k,
                                      threshold_epsilon=setup.intruder_threshold,
                                      logging_sink=None)
    merged = sum(analysis.intruder_dimensions(
        layer.base_layer.weight.data + layer.delta_weight("intruder_reduced"),
        layer.base_layer.weight.data, setup.intruder_k, setup.intruder_threshold)
        for _, layer in model.lora_layers())
    return {"learning": _score(model, spec, spec.task, "all"),
            "retained": _score(model, spec, PRETRAINING, OVERWRITTEN[spec.task]),
            "intruders_found": sum(found.values()), "intruders_merged": int(merged),
            "matrices": len(found)}


def _score(model, spec, task: str, part: str) -> float:
    """Accuracy on ``task``'s held-out set: "all" of it, or a flag's half ("F0", "F1")."""
    from ..train import evaluate
    from .runs import held_out_scores

    if part == "all":  # one evaluation, not held_out_scores' three
        batches = tasks.eval_set(task, spec.eval_size, seed=spec.eval_seed)
        return evaluate(model, batches)["accuracy"]
    return held_out_scores(model, task, spec.eval_size, spec.eval_seed)[part]["accuracy"]


def compute(setup, lrs, results: dict) -> dict:
    from threadpoolctl import threadpool_limits

    rows = []
    with threadpool_limits(1), fast.enabled():
        for spec in specs(setup, lrs):
            res = results[spec.key()]
            part = OVERWRITTEN[spec.task]
            before = {"learning": res["accuracy"],
                      "retained": res["also_eval"][PRETRAINING][part]["accuracy"]}
            for lam in setup.mitigation_lambdas:
                after = _mitigated(setup, spec, res, lam)
                rows.append({"task": spec.task, "targets": _label(setup, spec), "r": spec.r,
                             "seed": spec.seed, "lambda": lam, **after,
                             "recovered": after["retained"] - before["retained"],
                             "lost": before["learning"] - after["learning"]})
    return {"mitigation": {
        "setup": setup.name, "tasks": list(setup.mitigation_tasks),
        "targets": list(setup.forgetting_targets), "ranks": list(setup.forgetting_ranks),
        "lambdas": list(setup.mitigation_lambdas), "seeds": list(setup.seeds),
        "top_k": setup.intruder_k, "threshold": setup.intruder_threshold,
        "rows": rows}}


def _label(setup, spec) -> str:
    return next(label for label in setup.forgetting_targets
                if setup.targets(label) == spec.targets)


def pick(d: dict, task: str, targets: str, r: int, lam: float) -> list[dict]:
    return [row for row in d["rows"] if row["task"] == task and row["targets"] == targets
            and row["r"] == r and row["lambda"] == lam]


def _mean(rows, field: str) -> float:
    return mean(row[field] for row in rows)


def signed(x: float) -> str:
    """+.034 / −.002 (the paper tables' style with a sign)."""
    return ("−" if x < 0 else "+") + fmt(abs(x))


def tables(data: dict) -> dict:
    d, out = data["mitigation"], []
    for task in d["tasks"]:
        for targets in d["targets"]:
            for r in d["ranks"]:
                for lam in d["lambdas"]:
                    rows = pick(d, task, targets, r, lam)
                    out.append({"task": task, "targets": targets, "r": r, "lambda": lam,
                                "seeds": len(rows),
                                **{f"{f}_{m}": round(g(row[f] for row in rows), 4)
                                   for f in ("learning", "retained", "recovered", "lost",
                                             "intruders_merged")
                                   for m, g in (("mean", mean), ("min", min), ("max", max))}})
    return {"mitigation": out}


def findings(data: dict) -> str:
    d = data["mitigation"]
    n, lams = len(d["seeds"]), d["lambdas"]
    out = [f"Each adapter through `reduce_intruder_dimension` (top {d['top_k']}, max |cos| < "
           f"{d['threshold']}) at λ = {', '.join(f'{x:g}' for x in lams)}; per cell the mean over "
           f"{n} seeds of copyrev accuracy recovered / task accuracy lost against the "
           f"unmitigated run, and the merged model's intruder count (summed over its adapted "
           f"matrices, min–max over seeds).\n"]
    verdicts = []
    for task in d["tasks"]:
        rows = []
        for targets in d["targets"]:
            for r in d["ranks"]:
                line = [f"{targets} r={r}"]
                for lam in lams:
                    sel = pick(d, task, targets, r, lam)
                    counts = [row["intruders_merged"] for row in sel]
                    line.append(f"{signed(_mean(sel, 'recovered'))} / {signed(_mean(sel, 'lost'))}"
                                f"; {mean(counts):.1f} ({min(counts)}–{max(counts)})")
                rows.append(line)
        out.append(f"{task}: recovered / lost; intruders (of {d['top_k']} per matrix):\n")
        out.append(table(["adapter", *[f"λ={x:g}" for x in lams]], rows))
        verdicts += _verdicts(d, task)
    return "\n".join(out + verdicts) + "\n"


def _verdicts(d: dict, task: str, default: float = 0.75) -> list[str]:
    cells = [(t, r) for t in d["targets"] for r in d["ranks"]]
    lines = []
    if default in d["lambdas"]:
        at = {c: (_mean(pick(d, task, *c, default), "recovered"),
                  _mean(pick(d, task, *c, default), "lost")) for c in cells}
        lines.append(
            f"- {task}, λ = {default:g} (PEFT's default): copyrev accuracy recovered "
            f"{signed(min(a for a, _ in at.values()))} to {signed(max(a for a, _ in at.values()))}"
            f", {task} accuracy lost {signed(min(b for _, b in at.values()))} to "
            f"{signed(max(b for _, b in at.values()))} (recovered/lost: " + ", ".join(
                f"{t} r={r} {signed(a)}/{signed(b)}" for (t, r), (a, b) in at.items()) + ").")
    wins = {lam: sum(_mean(pick(d, task, *c, lam), "recovered") > _mean(pick(d, task, *c, lam),
                                                                         "lost") for c in cells)
            for lam in d["lambdas"] if lam < 1}
    lines.append(f"- {task}: forgetting recovered exceeds accuracy lost in " + ", ".join(
        f"{k} at λ = {lam:g}" for lam, k in wins.items()) + f" (of {len(cells)} adapters).")
    low, high = min(d["lambdas"]), max(d["lambdas"])
    falls = [c for c in cells if _mean(pick(d, task, *c, low), "intruders_merged")
             < _mean(pick(d, task, *c, high), "intruders_merged")]
    kept = [c for c in cells if min(row["intruders_merged"] for row in pick(d, task, *c, low)) > 0]
    lines.append(
        f"- {task}: the merged model's intruder count is lower at λ = {low:g} than at λ = "
        f"{high:g} in {len(falls)} of {len(cells)} adapters; at λ = {low:g} intruders remain on "
        f"every seed in {len(kept)} of {len(cells)} (" + ", ".join(f"{t} r={r}" for t, r in kept)
        + "): the new adapter is the rank-r part of W' − W0, which brings intruders of its own.")
    return lines


def plot(data: dict, out_dir) -> list:
    d = data["mitigation"]
    fig, axes = new_figure(len(d["tasks"]), 2, figsize=(7.4, 3.4 * len(d["tasks"])),
                           squeeze=False)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for (ax, ax_n), task in zip(axes, d["tasks"]):
        cells = [(t, r) for t in d["targets"] for r in d["ranks"]]
        for color, (targets, r) in zip(colors, cells):
            sel = [pick(d, task, targets, r, lam) for lam in d["lambdas"]]
            style = "o-" if targets == d["targets"][0] else "s--"
            ax.plot([_mean(s, "lost") for s in sel], [_mean(s, "recovered") for s in sel],
                    style, color=color, markersize=4, label=f"{targets} r={r}")
            for lam, s in zip(d["lambdas"], sel):
                if lam not in (0.0, 0.75):  # the ends of the claim: removed, PEFT's default
                    continue
                ax.annotate(f"{lam:g}", (_mean(s, "lost"), _mean(s, "recovered")),
                            textcoords="offset points", xytext=(3, 3), fontsize=7, color=color)
            counts = [[row["intruders_merged"] for row in s] for s in sel]
            ax_n.plot(d["lambdas"], [mean(c) for c in counts], style, color=color, markersize=4)
            ax_n.fill_between(d["lambdas"], [min(c) for c in counts], [max(c) for c in counts],
                              color=color, alpha=0.12, linewidth=0)
        top = max(max(_mean(pick(d, task, *c, lam), "lost") for c in cells for lam in d["lambdas"]),
                  0.05)
        ax.plot([0, top], [0, top], color="gray", linestyle=":", linewidth=1)
        ax.set_xlabel(f"{task} accuracy lost", fontsize=9)
        ax.set_ylabel("copyrev accuracy recovered", fontsize=9)
        ax.set_title(f"{task}: labels λ; dotted: recovered = lost", fontsize=9)
        ax_n.set_xlabel("λ (1: unchanged)", fontsize=9)
        ax_n.set_ylabel(f"intruders in the merged model", fontsize=9)
        ax_n.set_title(f"top {d['top_k']}, max |cos| < {d['threshold']}", fontsize=9)
        for a in (ax, ax_n):
            a.tick_params(labelsize=8)
            a.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.1))
    fig.suptitle(f"Intruder mitigation (PEFT's reduce_intruder_dimension): mean of "
                 f"{len(d['seeds'])} seeds, band min–max", fontsize=9)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/mitigation.png")]
