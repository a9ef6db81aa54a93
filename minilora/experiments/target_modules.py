"""Which weights to adapt under a fixed parameter budget (Table 5 of the paper).

Every configuration trains the same number of parameters, 2 · L̂ · d_model · r, with L̂ the
number of adapted matrices, n_layer × the number of weight types: Wq at r = 8, Wk at 8, Wv at
8, Wo at 8, {Wq, Wk} at 4, {Wq, Wv} at 4, all four at 2 (2 · 2 · 128 · 8 = 4,096 here). The
paper's finding (GPT-3): spreading the budget over more weight types beats a larger r on one,
and Wq or Wk alone is the worst choice.

Figure ``target_modules.png``: accuracy per configuration and task (bars: mean over seeds,
dots: each seed).
"""
from __future__ import annotations

from .common import base_spec, full_spec, lora_spec, new_figure, save_figure, seed_summary
from .findings import fmt, table

FIGURES = ("target_modules",)


def specs(setup, lrs) -> list:
    out = [base_spec(setup, task) for task in setup.tasks]
    for task in setup.tasks:
        out += [full_spec(setup, task, seed) for seed in setup.seeds]
        out += [lora_spec(setup, task, label, r, seed, lrs)
                for label, r in setup.budget for seed in setup.seeds]
    return out


def compute(setup, lrs, results: dict) -> dict:
    configs = []
    for label, r in setup.budget:
        row = {"weights": label, "r": r, "n_types": len(setup.targets(label))}
        for task in setup.tasks:
            specs_ = [lora_spec(setup, task, label, r, s, lrs) for s in setup.seeds]
            row[task] = [results[s.key()]["accuracy"] for s in specs_]
            row[f"{task}_lr"] = specs_[0].lr
            row["trainable"] = results[specs_[0].key()]["trainable"]
        configs.append(row)
    reference = {task: {"full": [results[full_spec(setup, task, s).key()]["accuracy"]
                                 for s in setup.seeds],
                        "base": results[base_spec(setup, task).key()]["accuracy"]}
                 for task in setup.tasks}
    return {"target_modules": {"setup": setup.name, "tasks": list(setup.tasks),
                               "seeds": list(setup.seeds), "configs": configs,
                               "n_layer": setup.base.model.n_layer,
                               "d_model": setup.base.model.n_embd,
                               "escape_accuracy": setup.escape_accuracy,
                               "solve_accuracy": setup.solve_accuracy,
                               "reference": reference}}


def _summary(d: dict, values) -> dict:
    return seed_summary(values, d["escape_accuracy"], d["solve_accuracy"])


def tables(data: dict) -> dict:
    d = data["target_modules"]
    rows = []
    for c in d["configs"]:
        row = {"weights": c["weights"], "r": c["r"], "trainable": c["trainable"]}
        for task in d["tasks"]:
            s = _summary(d, c[task])
            row.update({task: round(s["mean"], 4), f"{task}_min": round(s["min"], 4),
                        f"{task}_max": round(s["max"], 4), f"{task}_escaped": s["escaped"],
                        f"{task}_lr": c[f"{task}_lr"]})
        rows.append(row)
    return {"target_modules": rows}


def findings(data: dict) -> str:
    d = data["target_modules"]
    n, configs = len(d["seeds"]), d["configs"]
    first = configs[0]
    out = [f"One budget, {first['trainable']:,} trainable parameters each: 2 · L̂ · d · r with "
           f"L̂ = layers × weight types ({d['n_layer']} × 1 at r = {first['r']}: 2 · "
           f"{d['n_layer']} · {d['d_model']} · {first['r']} = "
           f"{2 * d['n_layer'] * d['d_model'] * first['r']:,}). Mean of {n} seeds (min–max), "
           f"escaped/solved seeds on perm.\n"]
    rows = []
    for c in configs:
        line = [c["weights"], c["r"]]
        for task in d["tasks"]:
            s = _summary(d, c[task])
            text = f"{fmt(s['mean'])} ({fmt(s['min'])}–{fmt(s['max'])})"
            line.append(text + (f" {s['escaped']}/{s['solved']}" if task != "rev" else ""))
        rows.append(line)
    out.append(table(["weights", "r", *d["tasks"]], rows))
    for task in d["tasks"]:
        stats = {(c["weights"], c["r"]): _summary(d, c[task]) for c in configs}
        solved = [f"{w} r={r}" for (w, r), s in stats.items() if s["solved"] == n]
        best = max(stats, key=lambda k: stats[k]["mean"])
        single = [k for k, c in zip(stats, configs) if c["n_types"] == 1]
        spread = [k for k, c in zip(stats, configs) if c["n_types"] > 1]
        best_single = max(single, key=lambda k: stats[k]["mean"])
        best_spread = max(spread, key=lambda k: stats[k]["mean"])
        spread_mean, single_mean = fmt(stats[best_spread]["mean"]), fmt(stats[best_single]["mean"])
        verdict = ("ties (the same to three digits)" if spread_mean == single_mean else
                   "holds" if stats[best_spread]["mean"] > stats[best_single]["mean"] else "fails")
        out.append(f"- {task}: solved on every seed by {', '.join(solved) or 'none'}; best mean "
                   f"{best[0]} r={best[1]} ({fmt(stats[best]['mean'])}). The paper's \"spread "
                   f"the budget over more types\" {verdict} here: best "
                   f"spread {best_spread[0]} r={best_spread[1]} "
                   f"{fmt(stats[best_spread]['mean'])} against best single type "
                   f"{best_single[0]} r={best_single[1]} {fmt(stats[best_single]['mean'])}.")
    return "\n".join(out) + "\n"


def plot(data: dict, out_dir) -> list:
    from statistics import mean

    d = data["target_modules"]
    names, configs = d["tasks"], d["configs"]
    fig, ax = new_figure(figsize=(7.2, 3.4))
    width = 0.8 / len(names)
    colors = ["tab:blue", "tab:red", "tab:green"]
    for k, (task, color) in enumerate(zip(names, colors)):
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(configs))]
        ax.bar(xs, [mean(c[task]) for c in configs], width, color=color, alpha=0.6,
               label=f"{task} (full FT {mean(d['reference'][task]['full']):.3f}, "
                     f"base {d['reference'][task]['base']:.3f})")
        for x, c in zip(xs, configs):
            ax.plot([x] * len(c[task]), c[task], "k.", markersize=3)
    ax.set_xticks(range(len(configs)))
    ax.set_xticklabels([f"{c['weights']}\nr={c['r']}" for c in configs], fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_ylabel("token accuracy", fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Same budget, different weights (Table 5): {configs[0]['trainable']:,} "
                 f"parameters each\nbars: mean, dots: {len(d['seeds'])} seeds", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2,
              frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/target_modules.png")]
