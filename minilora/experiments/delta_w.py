"""How the update ΔW relates to the pre-trained W (Section 7.3, Table 7 of the paper).

For the {Wq, Wv} runs at every r, with U, V the top-r singular vectors of ΔW = s·B A (every
layer; the toy has two): ‖Uᵀ W V‖_F, the same with W's own top-r singular vectors and with a
random Gaussian matrix's, ‖W‖_F, ‖ΔW‖_F, and the amplification factor ‖ΔW‖_F / ‖Uᵀ W V‖_F.
Full fine-tuning's ΔW = W_ft − W is measured the same way (its top-r directions) for reference.

The paper (GPT-3, layer 48, Wq): W's projection on ΔW's directions is small (0.32 at r = 4)
next to its own top directions (21.67) though above random (0.02): ΔW amplifies directions
that W has but does not emphasize, by ≈ 21.5 at r = 4 and ≈ 1.9 at r = 64.

Figures ``delta_w.png``: amplification against r, and the three projections of W against r.
"""
from __future__ import annotations

from statistics import mean

from .. import analysis, backend
from .common import full_spec, log2_axis, lora_spec, new_figure, save_figure

FIGURES = ("delta_w",)
LABEL = "Wq,Wv"
MODULES = ("q_proj", "v_proj")
COLUMNS = ("from_delta_w", "from_w", "random", "w_norm", "delta_w_norm", "amplification")


def specs(setup, lrs) -> list:
    return [lora_spec(setup, task, LABEL, r, seed, lrs) for task in setup.tasks
            for r in setup.ranks for seed in setup.seeds] + \
        [full_spec(setup, task, seed) for task in setup.tasks for seed in setup.seeds]


def base_weights(setup) -> dict:
    """Pre-trained weights by module path (the cached base model)."""
    from .pretrain import load_or_pretrain

    model = load_or_pretrain(setup.base)[0]
    return {path: layer.weight.data for path, layer in model.named_modules()
            if hasattr(layer, "weight") and path.endswith("_proj")}


def lora_delta(res: dict, path: str):
    """ΔW = scaling · B A of one adapted layer of a run's result (a backend array)."""
    w = res["weights"][path]
    return w["scaling"] * backend.from_numpy(w["B"] @ w["A"])  # (out, r) @ (r, in)


def compute(setup, lrs, results: dict) -> dict:
    W0 = base_weights(setup)
    rows = []
    for task in setup.tasks:
        for layer in range(setup.base.model.n_layer):
            for module in MODULES:
                path = f"layers.{layer}.attn.{module}"
                for r in setup.ranks:
                    for seed in setup.seeds:
                        res = results[lora_spec(setup, task, LABEL, r, seed, lrs).key()]
                        full = results[full_spec(setup, task, seed).key()]
                        deltas = {"lora": lora_delta(res, path),
                                  "full": backend.from_numpy(full["weights"][path]["W"]) - W0[path]}
                        for method, delta in deltas.items():
                            rows.append({"task": task, "layer": layer, "module": module,
                                         "method": method, "seed": seed,
                                         **analysis.delta_w_projections(
                                             W0[path], delta, r, seed=setup.random_seed)})
    return {"delta_w": {"setup": setup.name, "targets": LABEL, "ranks": list(setup.ranks),
                        "table_ranks": list(setup.delta_w_ranks), "seeds": list(setup.seeds),
                        "layers": list(range(setup.base.model.n_layer)), "rows": rows}}


def _mean(rows, column, **where) -> float:
    return mean(row[column] for row in rows if all(row[k] == v for k, v in where.items()))


def tables(data: dict) -> dict:
    """Table 7's layout: one row per (task, layer, module, r), each column the mean over seeds
    (LoRA's ΔW), and full fine-tuning's amplification at the same r for comparison."""
    d = data["delta_w"]
    out = []
    for task in dict.fromkeys(row["task"] for row in d["rows"]):
        for layer in d["layers"]:
            for module in MODULES:
                for r in d["table_ranks"]:
                    where = dict(task=task, layer=layer, module=module, r=r)
                    out.append({"task": task, "layer": layer, "module": module, "r": r, **{
                        c: round(_mean(d["rows"], c, method="lora", **where), 4)
                        for c in COLUMNS}, "full_ft_amplification": round(
                            _mean(d["rows"], "amplification", method="full", **where), 4)})
    return {"delta_w": out}


def plot(data: dict, out_dir) -> list:
    d = data["delta_w"]
    names, ranks = list(dict.fromkeys(row["task"] for row in d["rows"])), d["ranks"]
    fig, axes = new_figure(2, len(names), figsize=(5.8 * len(names), 8), squeeze=False)
    colors = {"q_proj": "tab:blue", "v_proj": "tab:orange"}
    markers = ["o", "^", "s", "D"]
    for col, task in enumerate(names):
        ax = axes[0][col]
        for layer, marker in zip(d["layers"], markers):
            for module in MODULES:
                for method, style in (("lora", "-"), ("full", ":")):
                    ax.plot(ranks, [_mean(d["rows"], "amplification", task=task, layer=layer,
                                          module=module, r=r, method=method) for r in ranks],
                            marker + style, color=colors[module], markersize=4,
                            label=f"layer {layer} Δ{module[0].upper()} "
                                  f"{'LoRA rank r' if method == 'lora' else 'full FT, top r'}")
        log2_axis(ax, ranks)
        ax.set_yscale("log")
        ax.set_xlabel("r (LoRA rank = number of ΔW directions used)")
        ax.set_ylabel("amplification ‖ΔW‖_F / ‖UᵀWV‖_F")
        ax.set_title(f"'{task}': amplification factor", fontsize=10)
        ax.legend(fontsize=6, ncol=2)
        ax.grid(alpha=0.3)
        ax = axes[1][col]
        for layer, marker in zip(d["layers"], markers):
            for column, color, text in (("from_w", "black", "U, V from Wq (top r)"),
                                        ("from_delta_w", "tab:blue", "U, V from ΔWq (LoRA)"),
                                        ("random", "gray", "U, V from a random matrix")):
                ax.plot(ranks, [_mean(d["rows"], column, task=task, layer=layer,
                                      module="q_proj", r=r, method="lora") for r in ranks],
                        marker + "-", color=color, markersize=4, label=f"layer {layer}: {text}")
        log2_axis(ax, ranks)
        ax.set_yscale("log")
        ax.set_xlabel("r")
        ax.set_ylabel("‖UᵀWqV‖_F")
        ax.set_title(f"'{task}': Wq projected on r-dimensional subspaces "
                     f"(‖Wq‖_F = {_mean(d['rows'], 'w_norm', task=task, layer=d['layers'][-1], module='q_proj'):.2f} "
                     f"in layer {d['layers'][-1]})", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
        ax.grid(alpha=0.3)
    fig.suptitle(f"ΔW vs W (Table 7 analog), {d['targets']} runs, mean over "
                 f"{len(d['seeds'])} seeds", fontsize=11)
    fig.tight_layout()
    return [save_figure(fig, f"{out_dir}/delta_w.png")]
