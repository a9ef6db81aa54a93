"""How the update ΔW relates to the pre-trained W (Section 7.3, Table 7 of the paper).

For the {Wq, Wv} runs at every r, with U, V the top-r singular vectors of ΔW = s·B A (every
layer; the toy has two): ‖Uᵀ W V‖_F, the same with W's own top-r singular vectors and with a
random Gaussian matrix's, ‖W‖_F, ‖ΔW‖_F, and the amplification factor ‖ΔW‖_F / ‖Uᵀ W V‖_F.
Full fine-tuning's ΔW = W_ft − W is measured the same way (its top-r directions) for reference.

The paper (GPT-3, layer 48, Wq): W's projection on ΔW's directions is small (0.32 at r = 4)
next to its own top directions (21.67) though above random (0.02): ΔW amplifies directions
that W has but does not emphasize, by ≈ 21.5 at r = 4 and ≈ 1.9 at r = 64.

Amplification, two ways. Per seed, a = ‖ΔW‖_F / ‖UᵀWV‖_F; the tables give the mean of these
per-seed ratios (with their range) and, beside it, the ratio of the two columns' means
(mean ‖ΔW‖_F / mean ‖UᵀWV‖_F), which is not the same number when seeds differ.

A caveat the paper does not state: the ratio falls with r for *any* fixed ΔW, since U_r and
V_r take in more of W as r grows (for random directions E‖UᵀWV‖_F² = r²‖W‖_F²/(d_out·d_in)).
Full fine-tuning's ΔW is one matrix at every r, so its fall is only this; the tables show it
beside LoRA's, whose ΔW is a different run at each r.

Figure ``delta_w.png``: amplification against r, LoRA and full fine-tuning.
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


def _select(rows, column, **where) -> list[float]:
    return [row[column] for row in rows if all(row[k] == v for k, v in where.items())]


def cells(data: dict) -> list[tuple]:
    """(task, layer, module) in data order."""
    d = data["delta_w"]
    return [(task, layer, module) for task in dict.fromkeys(row["task"] for row in d["rows"])
            for layer in d["layers"] for module in MODULES]


def summarize(rows, **where) -> dict:
    """Every column's mean, min and max over seeds, and the amplification two ways: the mean
    of the per-seed ratios ‖ΔW‖_F / ‖UᵀWV‖_F ("amplification") and the ratio of the two
    columns' means ("amplification_of_means")."""
    out = {}
    for c in COLUMNS:
        values = _select(rows, c, **where)
        out[c], out[f"{c}_min"], out[f"{c}_max"] = mean(values), min(values), max(values)
    out["amplification_of_means"] = out["delta_w_norm"] / out["from_delta_w"]
    out["seeds"] = len(_select(rows, "amplification", **where))
    return out


def tables(data: dict) -> dict:
    """Table 7's layout, for every (task, layer, module): rows r = table_ranks for LoRA's ΔW
    and for full fine-tuning's (its top-r directions); each column's mean and range over seeds."""
    d = data["delta_w"]
    out = []
    for task, layer, module in cells(data):
        for method in ("lora", "full"):
            for r in d["table_ranks"]:
                s = summarize(d["rows"], task=task, layer=layer, module=module, r=r,
                              method=method)
                out.append({"task": task, "layer": layer, "module": module,
                            "method": "LoRA" if method == "lora" else "full FT", "r": r,
                            **{k: round(v, 4) for k, v in s.items() if k != "seeds"},
                            "seeds": s["seeds"]})
    return {"delta_w": out}


def _fmt(s: dict, c: str, digits: int = 2) -> str:
    if s["seeds"] == 1 or s[f"{c}_min"] == s[f"{c}_max"]:
        return f"{s[c]:.{digits}f}"
    return f"{s[c]:.{digits}f} ({s[c + '_min']:.{digits}f}–{s[c + '_max']:.{digits}f})"


def table7(data: dict, task: str, layer: int, module: str) -> list[str]:
    """The paper's Table 7 for one matrix: markdown lines."""
    d = data["delta_w"]
    lines = ["| | r | ‖UᵀWV‖_F from ΔW | from W | random | ‖W‖_F | ‖ΔW‖_F | amplification "
             "(mean of per-seed ratios) | ratio of the means |", "|---|---|---|---|---|---|---|---|---|"]
    for method, name in (("lora", "LoRA"), ("full", "full FT")):
        for r in d["table_ranks"]:
            s = summarize(d["rows"], task=task, layer=layer, module=module, r=r, method=method)
            lines.append(f"| {name} | {r} | {_fmt(s, 'from_delta_w')} | {_fmt(s, 'from_w')} | "
                         f"{_fmt(s, 'random', 3)} | {s['w_norm']:.2f} | "
                         f"{_fmt(s, 'delta_w_norm')} | {_fmt(s, 'amplification')} | "
                         f"{s['amplification_of_means']:.2f} |")
    return lines


def verdicts(data: dict) -> dict:
    """Per task, in how many (layer, module) cells each claim holds (means over seeds)."""
    d = data["delta_w"]
    lo, hi = min(d["table_ranks"]), max(d["table_ranks"])
    out = {}
    for task, layer, module in cells(data):
        s = {(m, r): summarize(d["rows"], task=task, layer=layer, module=module, r=r, method=m)
             for m in ("lora", "full") for r in (lo, hi)}
        fall = {m: s[(m, lo)]["amplification"] / s[(m, hi)]["amplification"]
                for m in ("lora", "full")}
        claims = {
            f"random < from ΔW < from W (LoRA, r = {lo} and {hi})": all(
                s[("lora", r)]["random"] < s[("lora", r)]["from_delta_w"] < s[("lora", r)]["from_w"]
                for r in (lo, hi)),
            f"LoRA's amplification larger at r = {lo} than at r = {hi}": fall["lora"] > 1,
            f"full FT's amplification also larger at r = {lo} than at r = {hi}": fall["full"] > 1,
            f"LoRA's amplification falls more from r = {lo} to {hi} than full FT's": (
                fall["lora"] > fall["full"]),
            f"LoRA amplifies more than full FT at r = {lo}": (
                s[("lora", lo)]["amplification"] > s[("full", lo)]["amplification"]),
            f"LoRA's amplification larger at r = {lo} than at {hi} in every seed": all(
                a > b for a, b in zip(
                    _select(d["rows"], "amplification", task=task, layer=layer, module=module,
                            r=lo, method="lora"),
                    _select(d["rows"], "amplification", task=task, layer=layer, module=module,
                            r=hi, method="lora"))),
        }
        for claim, held in claims.items():
            count = out.setdefault(task, {}).setdefault(claim, [0, 0])
            count[0] += held
            count[1] += 1
    return out


def findings(data: dict) -> str:
    d = data["delta_w"]
    task, layer, module = "rev", 0, "q_proj"
    task = task if any(row["task"] == task for row in d["rows"]) else d["rows"][0]["task"]
    lo, hi = min(d["table_ranks"]), max(d["table_ranks"])
    lines = [f"Table 7 for '{task}', layer {layer}, ΔWq ({module}), {len(d['seeds'])} seeds "
             f"(mean, min–max); full FT: ΔW = W_ft − W0 with its own top-r directions:", ""]
    lines += table7(data, task, layer, module) + [""]
    lines += [f"Every matrix: amplification (mean of per-seed ratios) at r = {lo} and {hi}, "
              f"and how much it falls (r = {lo} / r = {hi}):", "",
              f"| task | layer | | LoRA r={lo} | LoRA r={hi} | LoRA fall | full FT r={lo} | "
              f"full FT r={hi} | full FT fall |", "|---|---|---|---|---|---|---|---|---|"]
    for t, layer_, m in cells(data):
        s = {(meth, r): summarize(d["rows"], task=t, layer=layer_, module=m, r=r, method=meth)
             for meth in ("lora", "full") for r in (lo, hi)}
        fall = lambda meth: s[(meth, lo)]["amplification"] / s[(meth, hi)]["amplification"]  # noqa: E731
        lines.append(f"| {t} | {layer_} | ΔW{m[0]} | {_fmt(s[('lora', lo)], 'amplification')} | "
                     f"{_fmt(s[('lora', hi)], 'amplification')} | {fall('lora'):.1f}× | "
                     f"{s[('full', lo)]['amplification']:.2f} | "
                     f"{s[('full', hi)]['amplification']:.2f} | {fall('full'):.1f}× |")
    lines.append("")
    for t, claims in verdicts(data).items():
        for claim, (held, total) in claims.items():
            lines.append(f"- {t}: {claim}: {held} of {total} matrices.")
    return "\n".join(lines) + "\n"


def _mean(rows, column, **where) -> float:
    return mean(_select(rows, column, **where))


def plot(data: dict, out_dir) -> list:
    d = data["delta_w"]
    names, ranks = list(dict.fromkeys(row["task"] for row in d["rows"])), d["ranks"]
    fig, axes = new_figure(1, len(names), figsize=(7.4, 3.3), squeeze=False, sharey=True,
                           layout="constrained")
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for ax, task in zip(axes[0], names):
        for color, (_, layer, module) in zip(colors, [c for c in cells(data) if c[0] == task]):
            where = dict(task=task, layer=layer, module=module)
            label = f"layer {layer} ΔW{module[0]}"
            lora = [_select(d["rows"], "amplification", r=r, method="lora", **where) for r in ranks]
            ax.plot(ranks, [mean(v) for v in lora], "o-", color=color, markersize=3,
                    label=f"{label}, LoRA")
            ax.fill_between(ranks, [min(v) for v in lora], [max(v) for v in lora], color=color,
                            alpha=0.15, linewidth=0)
            ax.plot(ranks, [_mean(d["rows"], "amplification", r=r, method="full", **where)
                            for r in ranks], ":", color=color, label=f"{label}, full FT")
        log2_axis(ax, ranks)
        ax.set_yscale("log")
        ax.set_xlabel("r (LoRA rank; full FT: its top r directions)", fontsize=9)
        ax.set_title(f"'{task}'", fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("amplification ‖ΔW‖_F / ‖UᵀWV‖_F", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"Table 7's amplification against r (mean of {len(d['seeds'])} seeds, band: "
                 f"min–max; dotted: full fine-tuning)", fontsize=10)
    return [save_figure(fig, f"{out_dir}/delta_w.png")]
