"""Subspace similarity between adapters (Section 7.2, Figures 3 and 4 of the paper).

From the {Wq, Wv} runs, take A (r, d) of q_proj and v_proj and compare the subspaces spanned
by their top right singular vectors with φ (Eq. 4, ``analysis.subspace_similarity``):

* Figure 3 (``subspace_rank.png``): φ(A_{r=8}, A_{r=64}, i, j), i ≤ 8, j ≤ 64, and its
  i, j ≤ 8 zoom, for ΔWq and ΔWv of one layer ("rev", layer 0; the paper: layer 48 of 96),
  same seed, mean over seeds. The paper: the top direction is shared (φ > 0.5), the rest much
  less: the update has a very low intrinsic rank.
* Figure 4 (``subspace_seeds.png``): φ(A_{r=64}, A'_{r=64}, i, j) between two seeds (mean over
  the pairs of seeds), beside two random Gaussian matrices. The paper: ΔWq shares more
  directions across seeds than ΔWv.
* Appendix (``subspace_layers.png``): the diagonals φ(i, i) of both comparisons in every layer
  of both tasks, with their spread over seeds.
* A wider base (``subspace_wide.png``, d_model 256): both figures once more on a base model twice as wide
  ("rev", one pair of seeds), where r = 64 is a quarter of the space rather than half.

Chance. For independent uniformly random subspaces of R^d of dimensions i and j, E[φ] =
max(i, j)/d exactly (``analysis.random_subspace_similarity``; the top singular subspaces of
Gaussian matrices are such subspaces, tests/test_analysis.py checks it). At d = 128 that is
0.5 at j = 64, so the heat maps show φ − max(i, j)/d: how far above chance. The data files
keep φ itself, every seed's grid (Figure 3) and every pair's diagonal (Figure 4).
"""
from __future__ import annotations

from dataclasses import replace
from itertools import combinations
from statistics import mean

import numpy as np  # host-side: averaging the grids for the data file and the plot

from .. import analysis, backend
from .common import log2_axis, lora_spec, new_figure, save_figure

FIGURES = ("subspace_rank", "subspace_seeds", "subspace_layers", "subspace_wide")
LABEL = "Wq,Wv"
MODULES = ("q_proj", "v_proj")
RANDOM_PAIRS = 10  # pairs of random Gaussian matrices averaged for Figure 4's reference
MAIN = ("rev", 0)  # the (task, layer) of the main figures, fixed before looking at the data
WIDE_TASK = "rev"  # the wide run's task


def wide_setup(setup):
    """The wider variant: the same setup on ``setup.wide_base``, the first two seeds."""
    return replace(setup, base=setup.wide_base, seeds=setup.seeds[:2])


def _wide_specs(setup, lrs) -> list:
    small, large = setup.subspace_ranks
    wide, (a, b) = wide_setup(setup), setup.seeds[:2]
    return [lora_spec(wide, WIDE_TASK, LABEL, r, s, lrs) for r, s in
            ((small, a), (large, a), (large, b))]


def specs(setup, lrs) -> list:
    return [lora_spec(setup, task, LABEL, r, seed, lrs) for task in setup.tasks
            for r in setup.subspace_ranks for seed in setup.seeds] + _wide_specs(setup, lrs)


def _A(setup, lrs, results, task, r, seed, layer, module):
    res = results[lora_spec(setup, task, LABEL, r, seed, lrs).key()]
    return backend.from_numpy(res["weights"][f"layers.{layer}.attn.{module}"]["A"])


def _grid(A1, A2) -> list:
    """φ for every (i, j), rounded to 5 digits for a readable data file."""
    return np.round(backend.to_numpy(analysis.subspace_similarity_grid(A1, A2)), 5).tolist()


def _similarities(setup, lrs, results, tasks, rank_seeds) -> tuple[dict, dict, dict]:
    """Figure 3's grids per seed of ``rank_seeds``, Figure 4's mean grid and per-pair
    diagonals over the pairs of ``setup.seeds``, by "task layers.N.module"."""
    small, large = setup.subspace_ranks
    pairs = list(combinations(setup.seeds, 2))
    rank_grids, seed_grids, seed_diag = {}, {}, {}
    for task in tasks:
        for layer in range(setup.base.model.n_layer):
            for module in MODULES:
                name = f"{task} layers.{layer}.{module}"
                A = lambda r, s: _A(setup, lrs, results, task, r, s, layer, module)  # noqa: E731
                rank_grids[name] = {str(s): _grid(A(small, s), A(large, s)) for s in rank_seeds}
                grids = [np.asarray(_grid(A(large, a), A(large, b))) for a, b in pairs]
                seed_grids[name] = np.round(np.mean(grids, axis=0), 4).tolist()
                seed_diag[name] = {f"{a}-{b}": np.diag(g).tolist()
                                   for (a, b), g in zip(pairs, grids)}
    return rank_grids, seed_grids, seed_diag


def _random_grid(setup, k: int) -> list:
    large = setup.subspace_ranks[1]
    random = [analysis.random_gaussian((large, k), setup.random_seed + n)
              for n in range(2 * RANDOM_PAIRS)]
    return np.round(np.mean([_grid(random[2 * n], random[2 * n + 1])
                             for n in range(RANDOM_PAIRS)], axis=0), 4).tolist()


def compute(setup, lrs, results: dict) -> dict:
    small, large = setup.subspace_ranks
    k = setup.base.model.n_embd
    rank_grids, seed_grids, seed_diag = _similarities(setup, lrs, results, setup.tasks,
                                                      setup.seeds)
    common = {"setup": setup.name, "tasks": list(setup.tasks), "d_model": k,
              "ranks": [small, large], "seeds": list(setup.seeds), "targets": LABEL,
              "lr": {task: lrs[(task, LABEL)] for task in setup.tasks},
              "main": {"task": MAIN[0], "layer": MAIN[1]},
              "random_baseline": "E[phi(i, j)] = max(i, j) / d_model"}
    wide = wide_setup(setup)
    w_rank, w_seed, _ = _similarities(wide, lrs, results, [WIDE_TASK], wide.seeds[:1])
    return {
        "subspace_rank": {**common, "grids": rank_grids},
        "subspace_seeds": {**common, "pairs": list(seed_diag[next(iter(seed_diag))]),
                           "mean_grid": seed_grids, "diagonal_per_pair": seed_diag,
                           "random_gaussian": _random_grid(setup, k),
                           "random_pairs": RANDOM_PAIRS},
        "subspace_layers": {**common, "phi_ii_rank": {
            n: [[g[i][i] for i in range(small)] for g in grids.values()]
            for n, grids in rank_grids.items()}, "phi_ii_seeds": {
            n: np.mean(list(d.values()), axis=0).tolist() for n, d in seed_diag.items()}},
        "subspace_wide": {**common, "tasks": [WIDE_TASK], "d_model": wide.base.model.n_embd,
                          "seeds": list(wide.seeds), "grids": w_rank, "seed_grid": w_seed,
                          "random_gaussian": _random_grid(wide, wide.base.model.n_embd),
                          "lr": {WIDE_TASK: lrs[(WIDE_TASK, LABEL)]},
                          "accuracy": {spec.label(): results[spec.key()]["accuracy"]
                                       for spec in _wide_specs(setup, lrs)}},
    }


# -- findings: tables and verdicts computed from the data --------------------------------------
TOP = 8  # Figure 3's small rank: the directions both adapters have


def excess(diag, d_model: int, top: int = TOP) -> float:
    """mean over i ≤ top of φ(i, i) − i/d: how far the top-i subspaces agree above chance."""
    n = min(top, len(diag))
    return mean(diag[i] - (i + 1) / d_model for i in range(n))


def _span(values) -> str:
    values = list(values)
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{mean(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def _module(name: str) -> str:
    return f"ΔW{name.rsplit('.', 1)[-1][0]}"


def _rank_table(grids: dict, d_model: int) -> list[str]:
    small = len(next(iter(next(iter(grids.values())).values())))
    lines = [f"| task | layer | | φ(1, 1) | φ({small}, {small}) | chance: 1/d, {small}/d |",
             "|---|---|---|---|---|---|"]
    for name, per_seed in grids.items():
        task, path = name.split(" ")
        layer = path.split(".")[1]
        lines.append(f"| {task} | {layer} | {_module(name)} | "
                     f"{_span(g[0][0] for g in per_seed.values())} | "
                     f"{_span(g[small - 1][small - 1] for g in per_seed.values())} | "
                     f"{1 / d_model:.4f}, {small / d_model:.4f} |")
    return lines


def seed_comparison(diagonals: dict, d_model: int) -> dict:
    """Per (task, layer): ΔWq's and ΔWv's excess over chance (mean over pairs) and in how
    many pairs of seeds ΔWq's is the larger. ``diagonals``: name -> {pair: φ(i, i) list}."""
    out = {}
    for name, per_pair in diagonals.items():
        task, path = name.split(" ")
        if not path.endswith("q_proj"):
            continue
        q, v = per_pair, diagonals[name.replace("q_proj", "v_proj")]
        out[(task, path.split(".")[1])] = {
            "q": [excess(q[p], d_model) for p in q], "v": [excess(v[p], d_model) for p in q],
            "q11": [q[p][0] for p in q], "v11": [v[p][0] for p in q]}
    return out


def _seed_table(comparison: dict) -> list[str]:
    lines = ["| task | layer | φ(1, 1) ΔWq | φ(1, 1) ΔWv | excess, i ≤ 8: ΔWq | ΔWv | "
             "pairs with ΔWq > ΔWv |", "|---|---|---|---|---|---|---|"]
    for (task, layer), c in comparison.items():
        wins = sum(q > v for q, v in zip(c["q"], c["v"]))
        lines.append(f"| {task} | {layer} | {_span(c['q11'])} | {_span(c['v11'])} | "
                     f"{_span(c['q'])} | {_span(c['v'])} | {wins} of {len(c['q'])} |")
    return lines


def seed_verdicts(comparison: dict) -> dict:
    """task -> "holds" (ΔWq's mean excess above ΔWv's in every layer), "reversed" (below in
    every layer) or "mixed"."""
    verdict = {}
    for task in dict.fromkeys(task for task, _ in comparison):
        signs = [mean(c["q"]) > mean(c["v"]) for (t, _), c in comparison.items() if t == task]
        verdict[task] = "holds" if all(signs) else "reversed" if not any(signs) else "mixed"
    return verdict


def rank_verdicts(grids: dict, d_model: int) -> dict:
    """task -> (matrices with mean φ(1, 1) > 0.5, with mean φ(1, 1) > 10/d, all matrices)."""
    out = {}
    for name, per_seed in grids.items():
        task = name.split(" ")[0]
        top = mean(g[0][0] for g in per_seed.values())
        half, far, total = out.get(task, (0, 0, 0))
        out[task] = (half + (top > 0.5), far + (top > 10 / d_model), total + 1)
    return out


def _in_task_order(by_name: dict, tasks) -> dict:
    """The entries "task layers.N.module" in the order of ``tasks`` (the JSON sorts keys)."""
    return {n: by_name[n] for t in tasks for n in sorted(by_name) if n.startswith(t + " ")}


def findings(data: dict) -> str:
    rank, seeds, wide = (dict(data[stem]) for stem in
                         ("subspace_rank", "subspace_seeds", "subspace_wide"))
    rank["grids"] = _in_task_order(rank["grids"], rank["tasks"])
    seeds["diagonal_per_pair"] = _in_task_order(seeds["diagonal_per_pair"], seeds["tasks"])
    d, small, large = rank["d_model"], *rank["ranks"]
    lines = [f"Figure 3: φ(A_r={small}, A_r={large}, i, j) of the same seed, d = {d}, "
             f"{len(rank['seeds'])} seeds (mean, min–max):", ""]
    lines += _rank_table(rank["grids"], d) + [""]
    for task, (half, far, total) in rank_verdicts(rank["grids"], d).items():
        lines.append(f"- {task}: the top direction is shared (mean φ(1, 1) > 0.5) in {half} of "
                     f"{total} matrices, and more than 10× chance in {far} of {total}.")
    random = seeds["random_gaussian"]
    comparison = seed_comparison(seeds["diagonal_per_pair"], d)
    lines += ["", f"Figure 4: φ(A_r={large}, A'_r={large}, i, i) between two seeds "
              f"({len(seeds['pairs'])} pairs); excess = mean over i ≤ {TOP} of φ(i, i) − i/d; "
              f"{seeds['random_pairs']} pairs of random Gaussian matrices give φ(1, 1) = "
              f"{random[0][0]:.4f} (chance 1/d = {1 / d:.4f}) and excess "
              f"{excess(np.diag(random).tolist(), d):+.4f}:", ""]
    lines += _seed_table(comparison) + [""]
    for task, verdict in seed_verdicts(comparison).items():
        lines.append(f"- {task}: \"ΔWq shares more directions across seeds than ΔWv\" "
                     f"**{verdict}** (by the mean excess, layer by layer).")
    wd = wide["d_model"]
    w_comparison = seed_comparison({n: {f"{wide['seeds'][0]}-{wide['seeds'][1]}": np.diag(
        g).tolist()} for n, g in wide["seed_grid"].items()}, wd)
    accuracy = ", ".join(f"{label.split(' ', 2)[2]}: {a:.4f}"
                         for label, a in wide["accuracy"].items())
    lines += ["", f"d_model {wd} ({wide['tasks'][0]}, seed {wide['seeds'][0]} for Figure 3, "
              f"seeds {wide['seeds'][0]}-{wide['seeds'][1]} for Figure 4: one pair, so no "
              f"spread; accuracy {accuracy}):", ""]
    lines += _rank_table(wide["grids"], wd) + [""] + _seed_table(w_comparison) + [""]
    for task, (half, far, total) in rank_verdicts(wide["grids"], wd).items():
        lines.append(f"- {task} at d_model {wd}: top direction shared (φ(1, 1) > 0.5) in "
                     f"{half} of {total} matrices; ΔWq vs ΔWv across seeds: "
                     f"**{seed_verdicts(w_comparison)[task]}**.")
    return "\n".join(lines) + "\n"


# -- figures -----------------------------------------------------------------------------------
NORM = dict(vmin=-0.25, vcenter=0.0, vmax=1.0)  # φ − chance: below chance is possible


def _excess_grid(grid, d_model: int) -> np.ndarray:
    grid = np.asarray(grid)
    i = np.arange(1, grid.shape[0] + 1)[:, None]
    j = np.arange(1, grid.shape[1] + 1)[None, :]
    return grid - np.maximum(i, j) / d_model  # (i, j): φ − max(i, j)/d


def _heatmap(ax, grid, title):
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.ticker import MaxNLocator

    image = ax.imshow(grid, cmap="RdBu_r", norm=TwoSlopeNorm(**NORM), aspect="auto",
                      origin="upper", interpolation="nearest",
                      extent=(0.5, grid.shape[1] + 0.5, grid.shape[0] + 0.5, 0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("j", fontsize=9)
    ax.set_ylabel("i", fontsize=9)
    ax.tick_params(labelsize=8)
    return image


def _colorbar(fig, image, axes, d_model):
    bar = fig.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
    bar.set_label(f"φ − max(i, j)/{d_model}  (0 = chance)", fontsize=9)
    bar.ax.tick_params(labelsize=8)


def _mean_grid(grids: dict) -> np.ndarray:
    return np.mean([np.asarray(g) for g in grids.values()], axis=0)


def _plot_rank(d, grids, path, title):
    small, large = d["ranks"]
    k = d["d_model"]
    fig, axes = new_figure(2, 2, figsize=(7.4, 4.4), squeeze=False,
                           gridspec_kw={"width_ratios": (3, 1)}, layout="constrained")
    for row, (module, per_seed) in enumerate(grids.items()):
        grid = _mean_grid(per_seed)
        image = _heatmap(axes[row][0], _excess_grid(grid, k),
                         f"{module}: i ≤ {small}, j ≤ {large}")
        _heatmap(axes[row][1], _excess_grid(grid, k)[:, :small],
                 f"zoom, φ(1, 1) = {grid[0, 0]:.2f}")
    _colorbar(fig, image, axes, k)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot(data: dict, out_dir) -> list:
    paths = []
    d = data["subspace_rank"]
    task, layer = d["main"]["task"], d["main"]["layer"]
    small, large = d["ranks"]
    pick = lambda grids, t=task: {_module(m): grids[f"{t} layers.{layer}.{m}"]  # noqa: E731
                                  for m in MODULES}
    paths.append(_plot_rank(d, pick(d["grids"]), f"{out_dir}/subspace_rank.png",
                            f"Figure 3: φ(A_r={small}, A_r={large}, i, j), '{task}', layer "
                            f"{layer}, d = {d['d_model']}, mean of {len(d['seeds'])} seeds"))

    d = data["subspace_seeds"]
    k = d["d_model"]
    fig, axes = new_figure(1, 3, figsize=(7.4, 2.7), squeeze=False, layout="constrained")
    for ax, m in zip(axes[0], MODULES):
        grid = np.asarray(d["mean_grid"][f"{task} layers.{layer}.{m}"])
        image = _heatmap(ax, _excess_grid(grid, k), f"{_module(m)}, φ(1, 1) = {grid[0, 0]:.2f}")
    random = np.asarray(d["random_gaussian"])
    _heatmap(axes[0][2], _excess_grid(random, k), f"random, φ(1, 1) = {random[0, 0]:.3f}")
    _colorbar(fig, image, axes, k)
    fig.suptitle(f"Figure 4: φ(A_r={large}, A'_r={large}, i, j), two seeds, '{task}', layer "
                 f"{layer}, mean of {len(d['pairs'])} pairs", fontsize=10)
    paths.append(save_figure(fig, f"{out_dir}/subspace_seeds.png"))

    paths.append(_plot_layers(data["subspace_layers"], f"{out_dir}/subspace_layers.png"))

    d = data["subspace_wide"]
    w, k = d["tasks"][0], d["d_model"]
    fig, axes = new_figure(2, 2, figsize=(7.4, 4.4), squeeze=False, layout="constrained")
    for col, m in enumerate(MODULES):
        grid = _mean_grid(d["grids"][f"{w} layers.{layer}.{m}"])
        image = _heatmap(axes[0][col], _excess_grid(grid, k),
                         f"Figure 3, {_module(m)}: φ(1, 1) = {grid[0, 0]:.2f}")
        grid = np.asarray(d["seed_grid"][f"{w} layers.{layer}.{m}"])
        _heatmap(axes[1][col], _excess_grid(grid, k),
                 f"Figure 4, {_module(m)}: φ(1, 1) = {grid[0, 0]:.2f}")
    _colorbar(fig, image, axes, k)
    fig.suptitle(f"d_model {k}: '{w}', layer {layer}; r = {small} vs {large} (seed "
                 f"{d['seeds'][0]}), two seeds at r = {large}", fontsize=10)
    paths.append(save_figure(fig, f"{out_dir}/subspace_wide.png"))
    return paths


def _plot_layers(d, path):
    """Appendix: φ(i, i) − i/d of both comparisons, every layer and matrix, both tasks."""
    small, large = d["ranks"]
    k = d["d_model"]
    tasks = d["tasks"]
    fig, axes = new_figure(len(tasks), 2, figsize=(7.4, 2.5 * len(tasks) + 0.6), squeeze=False,
                           sharey=True, layout="constrained")
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for row, task in enumerate(tasks):
        names = [n for n in d["phi_ii_rank"] if n.startswith(task + " ")]
        for name, color in zip(names, colors):
            label = f"layer {name.split('.')[1]} {_module(name)}"
            diag = np.asarray(d["phi_ii_rank"][name]) - np.arange(1, small + 1) / k
            i = np.arange(1, small + 1)
            ax = axes[row][0]
            ax.plot(i, diag.mean(axis=0), "o-", color=color, markersize=3, label=label)
            ax.fill_between(i, diag.min(axis=0), diag.max(axis=0), color=color, alpha=0.15,
                            linewidth=0)
            seeds = np.asarray(d["phi_ii_seeds"][name]) - np.arange(1, large + 1) / k
            axes[row][1].plot(np.arange(1, large + 1), seeds, "-", color=color, label=label)
        axes[row][0].set_title(f"'{task}': r = {small} vs {large}, same seed (band: seeds)",
                               fontsize=9)
        axes[row][1].set_title(f"'{task}': two seeds at r = {large} (mean of pairs)",
                               fontsize=9)
        axes[row][0].set_xticks(range(1, small + 1))
        log2_axis(axes[row][1], [2 ** n for n in range(int(np.log2(large)) + 1)])
        for ax in axes[row]:
            ax.axhline(0, color="gray", linewidth=0.8)
            ax.set_ylabel("φ(i, i) − i/d", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
    axes[-1][0].set_xlabel("i", fontsize=9)
    axes[-1][1].set_xlabel("i (log2 scale)", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"Appendix: diagonal φ(i, i) above chance, every layer, d = {k}", fontsize=10)
    return save_figure(fig, path)
