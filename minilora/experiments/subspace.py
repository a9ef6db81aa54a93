"""Subspace similarity between adapters (Section 7.2, Figures 3 and 4 of the paper).

From the {Wq, Wv} runs of the rank ablation, take A (r, d_model) of q_proj and v_proj:

* Figure 3 analog (``subspace_rank.png``): φ(A_{r=8}, A_{r=64}, i, j) for i = 1..8, j = 1..64,
  with the i, j ≤ 8 zoom, for the same seed, in every layer (the toy has two: no "middle"). The paper: the top direction overlaps strongly
  (φ > 0.5), the others much less: the update has a very low "intrinsic rank", which is why
  r = 1 already works.
* Figure 4 analog (``subspace_seeds.png``): φ(A_{r=64}, A'_{r=64}, i, j) between two seeds, beside
  random Gaussian matrices of the same shape (mean of 10 pairs). The paper: ΔWq shares more directions across
  seeds than ΔWv, and both far more than random.
* Diagonals (``subspace_layers.png``): φ(i, i) of both comparisons, every layer, with spread.

Heat maps average the seeds (pairs of seeds for Figure 4) rather than show a chosen one; the
data files keep every seed's grid (Figure 3) and every pair's diagonal (Figure 4).
"""
from __future__ import annotations

from itertools import combinations

import numpy as np  # host-side: averaging the grids for the data file and the plot

from .. import analysis, backend
from .common import log2_axis, lora_spec, new_figure, save_figure

FIGURES = ("subspace_rank", "subspace_seeds", "subspace_layers")
LABEL = "Wq,Wv"
MODULES = ("q_proj", "v_proj")
RANDOM_PAIRS = 10  # pairs of random Gaussian matrices averaged for Figure 4's reference


def specs(setup, lrs) -> list:
    return [lora_spec(setup, task, LABEL, r, seed, lrs) for task in setup.tasks
            for r in setup.subspace_ranks for seed in setup.seeds]


def _A(setup, lrs, results, task, r, seed, layer, module):
    res = results[lora_spec(setup, task, LABEL, r, seed, lrs).key()]
    return backend.from_numpy(res["weights"][f"layers.{layer}.attn.{module}"]["A"])


def _grid(A1, A2) -> list:
    """φ for every (i, j), rounded to 5 digits for a readable data file."""
    return np.round(backend.to_numpy(analysis.subspace_similarity_grid(A1, A2)), 5).tolist()


def compute(setup, lrs, results: dict) -> dict:
    small, large = setup.subspace_ranks
    k = setup.base.model.n_embd
    pairs = list(combinations(setup.seeds, 2))
    random = [analysis.random_gaussian((large, k), setup.random_seed + n)
              for n in range(2 * RANDOM_PAIRS)]
    rank_grids, seed_grids, seed_diag, per_layer = {}, {}, {}, {}
    for task in setup.tasks:
        for layer in range(setup.base.model.n_layer):
            for module in MODULES:
                name = f"{task} layers.{layer}.{module}"
                A = lambda r, s: _A(setup, lrs, results, task, r, s, layer, module)  # noqa: E731
                rank_grids[name] = {str(s): _grid(A(small, s), A(large, s)) for s in setup.seeds}
                per_layer[name] = [[g[i][i] for i in range(small)]
                                   for g in rank_grids[name].values()]
                grids = [np.asarray(_grid(A(large, a), A(large, b))) for a, b in pairs]
                seed_grids[name] = np.round(np.mean(grids, axis=0), 4).tolist()
                seed_diag[name] = {f"{a}-{b}": np.diag(g).tolist() for (a, b), g in
                                   zip(pairs, grids)}
    random_grid = np.round(np.mean([_grid(random[2 * n], random[2 * n + 1])
                                    for n in range(RANDOM_PAIRS)], axis=0), 4).tolist()
    common = {"setup": setup.name, "tasks": list(setup.tasks), "d_model": k, "ranks": [small, large],
              "seeds": list(setup.seeds), "targets": LABEL,
              "lr": {task: lrs[(task, LABEL)] for task in setup.tasks}}
    return {
        "subspace_rank": {**common, "grids": rank_grids,
                          "random_baseline": "E[phi(i, j)] = max(i, j) / d_model"},
        "subspace_seeds": {**common, "pairs": [f"{a}-{b}" for a, b in pairs],
                           "mean_grid": seed_grids, "diagonal_per_pair": seed_diag,
                           "random_gaussian": random_grid, "random_pairs": RANDOM_PAIRS},
        "subspace_layers": {**common, "phi_ii_rank": per_layer,
                            "phi_ii_seeds": {n: np.mean(list(d.values()), axis=0).tolist()
                                             for n, d in seed_diag.items()},
                            "phi_ii_random_gaussian": np.diag(random_grid).tolist(),
                            "random_baseline": [i / k for i in range(1, large + 1)]},
    }


def _mean_grid(grids: dict) -> np.ndarray:
    return np.mean([np.asarray(g) for g in grids.values()], axis=0)


def _heatmap(ax, fig, grid, title, vmax=1.0):
    from matplotlib.ticker import MaxNLocator

    image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto",
                      origin="upper", interpolation="nearest",
                      extent=(0.5, grid.shape[1] + 0.5, grid.shape[0] + 0.5, 0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("j")
    ax.set_ylabel("i")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)


def _rows(names) -> list[tuple[str, str]]:
    """(task, "layers.N") pairs in data order, from keys like "rev layers.0.q_proj"."""
    rows = []
    for name in names:
        task, path = name.split(" ")
        if (task, path.rsplit(".", 1)[0]) not in rows:
            rows.append((task, path.rsplit(".", 1)[0]))
    return rows


def plot(data: dict, out_dir) -> list:
    paths = []
    d = data["subspace_rank"]
    small, large = d["ranks"]
    rows = sorted(_rows(d["grids"]), key=lambda row: d["tasks"].index(row[0]))
    fig, axes = new_figure(len(rows), 4, figsize=(16, 2.9 * len(rows)), squeeze=False)
    for ax_row, (task, layer) in zip(axes, rows):
        for col, module in enumerate(MODULES):
            grid = _mean_grid(d["grids"][f"{task} {layer}.{module}"])
            what = f"'{task}' {layer} Δ{module[0].upper()}"
            _heatmap(ax_row[col], fig, grid, f"{what}: φ(A_r={small}, A_r={large}, i, j)")
            _heatmap(ax_row[col + 2], fig, grid[:, :small],
                     f"{what}: i, j ≤ {small} (φ(1,1) = {grid[0, 0]:.2f})")
    fig.suptitle(f"Figure 3 analog: {d['targets']} adapters at r = {small} and r = {large} of "
                 f"the same seed, mean over {len(d['seeds'])} seeds; random subspaces: "
                 f"φ ≈ max(i, j)/{d['d_model']}", fontsize=11)
    fig.tight_layout()
    paths.append(save_figure(fig, f"{out_dir}/subspace_rank.png"))

    d = data["subspace_seeds"]
    fig, axes = new_figure(len(rows), 3, figsize=(13, 3.2 * len(rows)), squeeze=False)
    for ax_row, (task, layer) in zip(axes, rows):
        for col, module in enumerate(MODULES):
            grid = np.asarray(d["mean_grid"][f"{task} {layer}.{module}"])
            _heatmap(ax_row[col], fig, grid, f"'{task}' {layer} Δ{module[0].upper()}: "
                     f"φ(A_r={large}, A'_r={large}) (φ(1,1) = {grid[0, 0]:.2f})")
        random = np.asarray(d["random_gaussian"])
        _heatmap(ax_row[2], fig, random, f"random Gaussian ({large}, {d['d_model']}) matrices, "
                 f"mean of {RANDOM_PAIRS} pairs (φ(1,1) = {random[0, 0]:.3f})")
    fig.suptitle(f"Figure 4 analog: {d['targets']} adapters at r = {large} from two seeds, "
                 f"mean over the {len(d['pairs'])} pairs of seeds", fontsize=11)
    fig.tight_layout()
    paths.append(save_figure(fig, f"{out_dir}/subspace_seeds.png"))

    d = data["subspace_layers"]
    tasks = d["tasks"]
    fig, axes = new_figure(2, len(tasks), figsize=(5.5 * len(tasks), 7.6), squeeze=False)
    for col, task in enumerate(tasks):
        ax = axes[0][col]
        i = np.arange(1, small + 1)
        for name, diag in d["phi_ii_rank"].items():
            if name.startswith(task + " "):
                diag = np.asarray(diag)
                line, = ax.plot(i, diag.mean(axis=0), "o-", label=name.split(" ")[1])
                ax.fill_between(i, diag.min(axis=0), diag.max(axis=0), color=line.get_color(),
                                alpha=0.15, linewidth=0)
        ax.plot(i, d["random_baseline"][:small], "k:", label=f"random: i/{d['d_model']}")
        ax.set_xlabel("i (top-i directions of each)")
        ax.set_ylabel(f"φ(A_r={small}, A_r={large}, i, i)")
        ax.set_title(f"'{task}': r = {small} vs r = {large}, same seed "
                     f"(mean, min–max over seeds)", fontsize=9)
        ax = axes[1][col]
        i = np.arange(1, large + 1)
        for name, diag in d["phi_ii_seeds"].items():
            if name.startswith(task + " "):
                ax.plot(i, diag, "-", label=name.split(" ")[1])
        ax.plot(i, d["phi_ii_random_gaussian"], color="gray",
                label=f"random Gaussians ({RANDOM_PAIRS} pairs)")
        ax.plot(i, d["random_baseline"], "k:", label=f"random: i/{d['d_model']}")
        log2_axis(ax, [2 ** n for n in range(int(np.log2(large)) + 1)])
        ax.set_xlabel("i (top-i directions of each, log2 scale)")
        ax.set_ylabel(f"φ(A_r={large}, A'_r={large}, i, i)")
        ax.set_title(f"'{task}': two seeds at r = {large} (mean over pairs)", fontsize=9)
        for ax in axes[:, col]:
            ax.set_ylim(0, 1)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle("Subspace similarity in every layer: diagonal φ(i, i)", fontsize=11)
    fig.tight_layout()
    paths.append(save_figure(fig, f"{out_dir}/subspace_layers.png"))
    return paths
