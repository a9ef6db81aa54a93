"""Which weights to adapt under a fixed parameter budget (Table 5 of the paper).

Every configuration trains the same number of parameters, 2 · L̂ · d_model · r with L̂ the
number of adapted matrices: Wq at r = 8, Wk at 8, Wv at 8, Wo at 8, {Wq, Wk} at 4, {Wq, Wv} at
4, all four at 2. The paper's finding (GPT-3): spreading the budget over more weight types
beats a larger r on one, and Wq or Wk alone is the worst choice.

Figure ``target_modules.png``: accuracy per configuration and task (bars: mean over seeds,
dots: each seed).
"""
from __future__ import annotations

from statistics import mean

from .common import base_spec, full_spec, lora_spec, new_figure, save_figure

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
        row = {"weights": label, "r": r}
        for task in setup.tasks:
            runs = [results[lora_spec(setup, task, label, r, s, lrs).key()] for s in setup.seeds]
            row[task] = [res["accuracy"] for res in runs]
            row[f"{task}_lr"] = lrs[(task, label)]
            row["trainable"] = runs[0]["trainable"]
        configs.append(row)
    reference = {task: {"full": [results[full_spec(setup, task, s).key()]["accuracy"]
                                 for s in setup.seeds],
                        "base": results[base_spec(setup, task).key()]["accuracy"]}
                 for task in setup.tasks}
    return {"target_modules": {"setup": setup.name, "tasks": list(setup.tasks),
                               "seeds": list(setup.seeds), "configs": configs,
                               "reference": reference}}


def tables(data: dict) -> dict:
    d = data["target_modules"]
    rows = [{"weights": c["weights"], "r": c["r"], "trainable": c["trainable"],
             **{task: round(mean(c[task]), 4) for task in d["tasks"]}} for c in d["configs"]]
    return {"target_modules": rows}


def plot(data: dict, out_dir) -> list:
    d = data["target_modules"]
    names, configs = d["tasks"], d["configs"]
    fig, ax = new_figure(figsize=(9, 4))
    width = 0.8 / len(names)
    colors = ["tab:blue", "tab:red", "tab:green"]
    for k, (task, color) in enumerate(zip(names, colors)):
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(configs))]
        ax.bar(xs, [mean(c[task]) for c in configs], width, color=color, alpha=0.6,
               label=f"task '{task}' (full FT {mean(d['reference'][task]['full']):.3f}, "
                     f"base {d['reference'][task]['base']:.3f})")
        for x, c in zip(xs, configs):
            ax.plot([x] * len(c[task]), c[task], "k.", markersize=4)
    ax.set_xticks(range(len(configs)))
    ax.set_xticklabels([f"{c['weights']}\nr={c['r']}" for c in configs], fontsize=8)
    ax.set_ylabel("token accuracy on y (held-out)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Same budget, different weights (Table 5 analog): {configs[0]['trainable']:,} "
                 f"trainable parameters each; bars = mean, dots = {len(d['seeds'])} seeds",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/target_modules.png")]
