# %% [markdown]
# # Lesson 07: what the adapters learn, seen through the SVD
#
# Section 7 of the paper opens the trained adapters. Two measurements explain why a tiny
# rank works. **Subspace similarity** (Section 7.2, Figures 3 and 4): the top directions an
# adapter of rank 8 learns are, to a large extent, the ones an adapter of rank 64 learns too;
# the rest is mostly noise. **ΔW versus W** (Section 7.3, Table 7): the update points in
# directions the pre-trained W has but does not emphasize, and amplifies them. This lesson
# builds the similarity measure φ from principal angles, trains adapters and measures both,
# then reads the committed figures' data.
#
# **What you'll learn**
# - principal angles between subspaces, and the paper's Eq. 4 as their mean squared cosine;
# - why φ uses the right singular vectors of A, and the random baseline $\max(i, j)/k$;
# - φ between adapters of different rank and between seeds, against random matrices;
# - Table 7: projecting W onto ΔW's top singular directions, and the amplification factor;
# - where the toy agrees with GPT-3 and where its numbers differ.
#
# **Prerequisites**: lesson 04 (the SVD, Eckart–Young), lesson 06 (the experiment set-up:
# `lora_spec`, `run_one`, the "rev" task).
#
# **Time**: 45–60 minutes to read and do the exercises; how long it runs (full and
# `MINILORA_FAST=1`, wall and CPU time) is measured in `lessons/README.md`.

# %%
import json
import os
import sys
from pathlib import Path
from statistics import mean

import matplotlib
import numpy as np
from threadpoolctl import threadpool_limits
import scipy.linalg

if "ipykernel" not in sys.modules:  # run as a script: draw into files, open no window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

import minilora
from minilora import analysis
from minilora.experiments.common import lora_spec, setup_lrs
from minilora.experiments.config import FULL, QUICK
from minilora.experiments.pretrain import load_or_pretrain
from minilora.experiments.runs import run_one
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT

# One BLAS thread: these matrices are small, so extra threads gain little, and on a busy
# machine a thread waiting for a core makes each product slower (lessons/README.md's times
# were measured so). threadpoolctl sets it for this process only.
threadpool_limits(1)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"  # CI runs every lesson with MINILORA_FAST=1
SETUP = QUICK if FAST else FULL
ROOT = Path(minilora.__file__).resolve().parents[1]
FIGURES = ROOT / "figures" / "lessons"
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Principal angles, and φ
#
# Two subspaces of $\mathbb{R}^k$, of dimensions $i$ and $j$, with orthonormal bases as the
# columns of $U_1$ (k, i) and $U_2$ (k, j). The singular values of $U_1^\top U_2$ are the
# cosines of the **principal angles** $\theta_1 \le \dots \le \theta_{\min(i,j)}$ between
# them: the best-aligned pair of unit vectors, then the best pair orthogonal to those, and so
# on. The paper's Eq. 4 is their mean squared cosine:
#
# $$\phi = \frac{\lVert U_1^\top U_2\rVert_F^2}{\min(i, j)}
#        = \frac{1}{\min(i,j)}\sum_{m} \cos^2\theta_m \;\in [0, 1],$$
#
# 1 when one subspace contains the other, 0 when they are orthogonal. By hand, with
# `scipy.linalg.subspace_angles` as an independent check:

# %%
k_demo, i, j = 32, 3, 5
U1 = np.linalg.qr(rng.standard_normal((k_demo, i)))[0]  # (k, i), orthonormal columns
U2 = np.linalg.qr(rng.standard_normal((k_demo, j)))[0]  # (k, j)
M = U1.T @ U2  # (i, j)
cosines = np.linalg.svd(M, compute_uv=False)  # (min(i, j),) cos θ, largest first
phi_by_hand = np.sum(M ** 2) / min(i, j)
angles = scipy.linalg.subspace_angles(U1, U2)  # radians, largest first
print("cos θ by SVD:  ", np.round(cosines, 4))
print("cos θ by scipy:", np.round(np.cos(angles[::-1]), 4))
print(f"φ = {phi_by_hand:.4f} = mean cos² θ = {np.mean(np.cos(angles) ** 2):.4f}")

# %% [markdown]
# An adapter's $\Delta W = s\,BA$ sees its input $x$ only through $Ax$, so what it reads from
# the input space is the row space of $A$ (r, k), spanned by the right singular vectors of A
# (the rows of $V^\top$ in $A = U\Sigma V^\top$), ordered by singular value.
# `analysis.subspace_similarity(A1, A2, i, j)` takes the top $i$ of A1's and the top $j$ of
# A2's and returns φ; the same by hand:

# %%
A1, A2 = rng.standard_normal((4, k_demo)), rng.standard_normal((8, k_demo))  # two "adapters"
V1, V2 = np.linalg.svd(A1)[2], np.linalg.svd(A2)[2]  # rows: right singular vectors, (k, k)
phi_2_6 = np.sum((V1[:2] @ V2[:6].T) ** 2) / 2  # (2, k) @ (k, 6) -> (2, 6)
print(f"φ(A1, A2, 2, 6): by hand {phi_2_6:.6f}, "
      f"analysis {analysis.subspace_similarity(A1, A2, 2, 6):.6f}")

# %% [markdown]
# What φ do *unrelated* subspaces have? A unit vector keeps on average $i/k$ of its squared
# length in a random $i$-dimensional subspace, so $E\lVert U_1^\top U_2\rVert_F^2 = ij/k$ and
# $E[\phi] = \max(i, j)/k$ (`analysis.random_subspace_similarity`). Checked by drawing:

# %%
draws = [analysis.subspace_similarity(rng.standard_normal((8, k_demo)),  # two random (8, k)
                                      rng.standard_normal((8, k_demo)), 2, 6) for _ in range(400)]
print(f"random pairs, φ(2, 6): mean of 400 draws {np.mean(draws):.4f}, "
      f"max(i, j)/k = {analysis.random_subspace_similarity(k_demo, 2, 6):.4f}")
print(f"in R^128, chance gives phi(1, 1) = {analysis.random_subspace_similarity(128, 1, 1):.4f} "
      f"but phi(64, 64) = {analysis.random_subspace_similarity(128, 64, 64):.2f}")

# %% [markdown]
# So a φ means something only next to $\max(i, j)/k$: a value that is far above chance for
# one direction is no more than chance for half the space.
#
# ## 2. Two adapters of different rank
#
# Figure 3 of the paper compares $A_{r=8}$ and $A_{r=64}$, trained on the same task from the
# same base model. We train $\{W_q, W_v\}$ adapters on "rev" at the set-up's two ranks (8 and
# 64; in fast mode 4 and 16), and a second seed at the larger rank for section 3. Each run's
# A starts from its own random draw (its seed is a hash of the whole run description), so any
# similarity is learned, not inherited.

# %%
lrs = setup_lrs(SETUP)
small, large = SETUP.subspace_ranks
specs = {"small": lora_spec(SETUP, "rev", "Wq,Wv", small, 0, lrs),
         "large": lora_spec(SETUP, "rev", "Wq,Wv", large, 0, lrs),
         "large, seed 1": lora_spec(SETUP, "rev", "Wq,Wv", large, 1, lrs)}
runs = {name: run_one(spec) for name, spec in specs.items()}
for name, res in runs.items():
    print(f"{specs[name].label():28} accuracy {res['accuracy']:.4f}  ({res['seconds']:.1f} s)")
modules = list(runs["small"]["weights"])  # "layers.0.attn.q_proj", ...
k = SETUP.base.model.n_embd  # A is (r, k) with k = d_model

# %% [markdown]
# `run_one` returns each adapted layer's A, B and scaling. To see how far training moved A, we
# redraw each run's initial A: `get_lora_model` with the run's `init_seed()` draws exactly
# the A the run started from (A does not depend on the base weights).

# %%
def initial_A(spec):
    config = LoraConfig(r=spec.r, lora_alpha=spec.lora_alpha, target_modules=list(spec.targets))
    lm = get_lora_model(GPT(SETUP.base.model), config, seed=spec.init_seed())
    return {path: layer.lora_A["default"].weight.numpy() for path, layer in lm.lora_layers()}


A0 = {name: initial_A(spec) for name, spec in specs.items()}
A = {name: {path: w["A"] for path, w in res["weights"].items()} for name, res in runs.items()}
print(f"{'module':22} {'|A - A0|/|A0|':>14} {'phi(1,1) trained':>17} {'at init':>8} "
      f"{'phi(' + str(small) + ',' + str(small) + ')':>10} {'random 1/k':>10}")
phi11, phi11_init = {}, {}
for path in modules:
    moved = np.linalg.norm(A["small"][path] - A0["small"][path]) / np.linalg.norm(A0["small"][path])
    phi11[path] = analysis.subspace_similarity(A["small"][path], A["large"][path], 1, 1)
    phi11_init[path] = analysis.subspace_similarity(A0["small"][path], A0["large"][path], 1, 1)
    phi_rr = analysis.subspace_similarity(A["small"][path], A["large"][path], small, small)
    print(f"{path:22} {moved:14.2f} {phi11[path]:17.3f} {phi11_init[path]:8.3f} "
          f"{phi_rr:10.3f} {1 / k:10.4f}")

# %% [markdown]
# Compare each φ with its baseline: $1/k$ for $\phi(1, 1)$, and $r_{small}/k$ for
# $\phi(r_{small}, r_{small})$. In the full set-up the top direction of the rank-8 adapter
# shares about half or more of its squared length with the rank-64 adapter's top direction,
# in every module: about a hundred times chance, while the same pair at initialization was at
# chance. Training moved every A by a large fraction of its initial size. The full grid
# $\phi(A_{small}, A_{large}, i, j)$ of one module, as in Figure 3 (rows $i$, columns $j$):

# %%
path = modules[0]
grid = np.asarray(analysis.subspace_similarity_grid(A["small"][path], A["large"][path]))
columns = [j for j in (1, 2, 4, 8, 16, 32, 64) if j <= large]
print(f"{path}: φ(A_r={small}, A_r={large}, i, j)")
print("   i \\ j" + "".join(f"{j:7d}" for j in columns))
for i_ in range(min(small, 4)):
    print(f"{i_ + 1:8d}" + "".join(f"{grid[i_, j - 1]:7.3f}" for j in columns))
print(f"random: max(i, j)/{k}, e.g. {analysis.random_subspace_similarity(k, 1, 1):.4f} at "
      f"(1, 1), {analysis.random_subspace_similarity(k, 1, large):.4f} at (1, {large})")

# %% [markdown]
# Reading along a row: $\phi(1, j)$ asks how much of the small adapter's top direction lies in
# the large adapter's top-$j$ subspace. It rises with $j$ and, in the full set-up, is already
# high at $j = 1$: both adapters found the same most important direction. That is the
# paper's explanation of Table 6: the useful part of the update has a very low intrinsic rank,
# and a rank-64 adapter spends most of its extra directions on noise.
#
# ## 3. Two seeds at the same rank (Figure 4)
#
# $\phi(A_{r=64}, A'_{r=64}, i, i)$ between two seeds, against two random Gaussian matrices of
# the same shape (`analysis.random_gaussian`) and against $i/k$:

# %%
noise = [np.asarray(analysis.random_gaussian((large, k), seed=SETUP.random_seed + n))
         for n in range(20)]  # 10 pairs: one pair's φ(1, 1) is a single noisy cos²
diag = [i_ for i_ in (1, 2, 4, 8, 16, 32, 64) if i_ <= large]
print(f"{'phi(i, i)':22}" + "".join(f"{i_:7d}" for i_ in diag))
seed_phi = {}
for path in modules:
    g = np.asarray(analysis.subspace_similarity_grid(A["large"][path], A["large, seed 1"][path]))
    seed_phi[path] = [g[i_ - 1, i_ - 1] for i_ in diag]
    print(f"{path:22}" + "".join(f"{v:7.3f}" for v in seed_phi[path]))
g = np.mean([analysis.subspace_similarity_grid(noise[2 * n], noise[2 * n + 1])
            for n in range(10)], axis=0)
random_phi = [g[i_ - 1, i_ - 1] for i_ in diag]
print(f"{'random, mean of 10':22}" + "".join(f"{v:7.3f}" for v in random_phi))
print(f"{'i / k':22}" + "".join(f"{i_ / k:7.3f}" for i_ in diag))

# %% [markdown]
# Two seeds see different batches and start from different A, yet (in the full set-up) share
# their top direction far more than random matrices do. The paper found that $\Delta W_q$
# shares more directions across seeds than $\Delta W_v$ (a higher "intrinsic rank" for
# $W_q$'s update). One pair of seeds is one draw; section 5 checks the claim on every pair of
# the committed sweep, where it holds on "rev" and reverses on "perm". At $i = 64$ of
# $k = 128$, any two subspaces share half their energy, so the right end of each row says
# nothing.
#
# ## 4. ΔW versus W (Table 7)
#
# How does the update relate to the weight it modifies? Take $U, V$ (out, r) and (in, r), the
# top-$r$ singular vectors of $\Delta W = s\,BA$, and measure how much of $W$ lives there,
# $\lVert U^\top W V\rVert_F$; compare with $W$'s own top-$r$ singular vectors (the most $W$ can
# have in any $r$ directions) and with a random matrix's. The **amplification factor**
# $\lVert \Delta W\rVert_F / \lVert U^\top W V\rVert_F$ says how much the update boosts
# the directions it acts on. `analysis.delta_w_projections` computes the whole row; first one
# entry by hand:

# %%
base_model, _ = load_or_pretrain(SETUP.base)
W0 = {path: base_model.get_submodule(path).weight.numpy() for path in modules}
path = modules[0]  # layer 0's q_proj
w = runs["small"]["weights"][path]
delta = w["scaling"] * w["B"] @ w["A"]  # ΔW = s B A: (out, r) @ (r, in) -> (out, in)
U, _, Vh = np.linalg.svd(delta)
proj_by_hand = np.linalg.norm(U[:, :small].T @ W0[path] @ Vh[:small].T)  # (r, out)(out, in)(in, r)
row = analysis.delta_w_projections(W0[path], delta, small, seed=SETUP.random_seed)
print(f"|U^T W V|_F from ΔW, r = {small}: by hand {proj_by_hand:.4f}, "
      f"analysis {row['from_delta_w']:.4f}")

table7 = []
print(f"\n{'':22} {'r':>3} {'from dW':>8} {'from W':>7} {'random':>7} {'|W|_F':>6} "
      f"{'|dW|_F':>7} {'amplif.':>8}")
for path in (m for m in modules if m.endswith("q_proj")):
    for name in ("small", "large"):
        w = runs[name]["weights"][path]
        delta = w["scaling"] * w["B"] @ w["A"]
        r = specs[name].r
        row = analysis.delta_w_projections(W0[path], delta, r, seed=SETUP.random_seed)
        table7.append(row)
        print(f"{path:22} {r:3d} {row['from_delta_w']:8.3f} {row['from_w']:7.3f} "
              f"{row['random']:7.3f} {row['w_norm']:6.2f} {row['delta_w_norm']:7.2f} "
              f"{row['amplification']:8.2f}")
print("the paper, GPT-3 layer 48 Wq:    r = 4: 0.32 from dW, 21.67 from W, 0.02 random, "
      "|W|_F 61.95, |dW|_F 6.91, amplification 21.5;  r = 64: amplification 1.9")
print(f"our base model: pre-trained for {SETUP.base.steps} steps from weights of std "
      f"{SETUP.base.model.init_std}")

# %% [markdown]
# The paper's row for GPT-3 (layer 48, $W_q$, $r = 4$): 0.32 from $\Delta W_q$, 21.67 from
# $W_q$, 0.02 random, amplification about 21.5. In the full set-up ours has the same order:
# $W$'s projection on $\Delta W$'s directions lies between random and $W$'s own top
# directions, so $\Delta W$ mostly boosts directions that $W$ has but does not emphasize; and
# the amplification is larger at the small rank than at the large one, as in the paper
# (about 21.5 at $r = 4$, 1.9 at $r = 64$). One difference is plain in the norms: here
# $\lVert\Delta W\rVert_F$ is about as large as $\lVert W\rVert_F$, where for GPT-3 it was a
# tenth. A toy model pre-trained for 600 steps has small weights, and the task shift is
# large next to them. (`from_w` is never below `from_delta_w`: no $r$-dimensional pair of
# subspaces holds more of $W$ than its own top singular vectors.)
#
# ## 5. The committed figures
#
# `minilora figures` did this for every layer, both tasks and five seeds:
# `figures/subspace_rank.json` (Figure 3), `subspace_seeds.json` (Figure 4),
# `subspace_layers.json` (their diagonals), `subspace_wide.json` (both at d_model 256) and
# `delta_w.json` / `.csv` (Table 7). The experiment modules turn them into the README's
# tables and verdicts (`findings`); here are the verdicts, computed from the data files:

# %%
from minilora.experiments import delta_w as delta_w_experiment
from minilora.experiments import subspace as subspace_experiment

STEMS = subspace_experiment.FIGURES + delta_w_experiment.FIGURES
committed = {stem: json.loads((ROOT / "figures" / f"{stem}.json").read_text())
             for stem in STEMS if (ROOT / "figures" / f"{stem}.json").exists()}
if len(committed) == len(STEMS):
    sub_rank, sub_seeds = committed["subspace_rank"], committed["subspace_seeds"]
    d_committed = sub_rank["d_model"]
    top_shared = subspace_experiment.rank_verdicts(sub_rank["grids"], d_committed)
    seed_comparison = subspace_experiment.seed_comparison(sub_seeds["diagonal_per_pair"],
                                                          d_committed)
    seed_verdict = subspace_experiment.seed_verdicts(seed_comparison)
    for task, (half, far, total) in top_shared.items():
        print(f"{task}: top direction shared (phi(1,1) > 0.5) in {half} of {total} matrices, "
              f"> 10x chance in {far} of {total}; dWq shares more across seeds than dWv: "
              f"{seed_verdict[task]}")
    for (task, layer), c in seed_comparison.items():
        wins = sum(q > v for q, v in zip(c["q"], c["v"]))
        print(f"  {task} layer {layer}: excess over chance dWq {mean(c['q']):.2f}, "
              f"dWv {mean(c['v']):.2f}, dWq ahead in {wins} of {len(c['q'])} pairs")
    amplification = delta_w_experiment.verdicts({"delta_w": committed["delta_w"]})
    for task, claims in amplification.items():
        for claim, (held, total) in claims.items():
            print(f"{task}: {claim}: {held} of {total}")
else:
    print("no committed figures: run `minilora figures` first")

# %% [markdown]
# On both tasks the top directions agree above chance in every module (on average at least
# five times chance, $1/d$), most clearly in "rev"'s layer 0 $W_q$ (above 0.5 in every seed).
# How many modules pass 0.5, or pass ten times chance, changes with the BLAS kernel, so it
# is no finding. Between seeds, on "rev", $W_q$ agrees better than $W_v$ in both layers (in
# every pair at layer 0), as in the paper; on "perm" it is $W_v$, not $W_q$, that agrees
# better: the paper's observation belongs to its task, not to LoRA. The amplification falls
# with $r$ for LoRA, and for full fine-tuning's $\Delta W$
# too: for any fixed $\Delta W$, $U_r$ and $V_r$ take in more of $W$ as $r$ grows, so part
# of the trend is mechanical (the README shows both falls side by side).

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
image = axes[0].imshow(np.asarray(analysis.subspace_similarity_grid(A["small"][modules[0]],
                                                                    A["large"][modules[0]])),
                       vmin=0, vmax=1, aspect="auto", extent=(0.5, large + 0.5, small + 0.5, 0.5))
axes[0].set(xlabel="j", ylabel="i", title=f"{modules[0]}: φ(A_r={small}, A_r={large}, i, j)")
fig.colorbar(image, ax=axes[0])
for path in modules:
    axes[1].plot(diag, seed_phi[path], "o-", label=path)
axes[1].plot(diag, random_phi, "k-", label="random Gaussians (10 pairs)")
axes[1].plot(diag, [i_ / k for i_ in diag], "k:", label="i / k")
axes[1].set(xlabel="i", ylabel="φ(i, i)", title=f"two seeds, r = {large}")
axes[1].set_xscale("log", base=2)
axes[1].set_xticks(diag, [str(i_) for i_ in diag])
axes[1].legend(fontsize=7)
fig.tight_layout()
if not FAST:
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "07_subspace.png", dpi=120)
plt.show()

# %% [markdown]
# ## Self-checks

# %%
assert np.allclose(cosines, np.cos(angles[::-1]), atol=1e-10)  # φ's cosines are principal angles
assert np.isclose(phi_by_hand, np.mean(np.cos(angles) ** 2))
assert np.isclose(phi_2_6, analysis.subspace_similarity(A1, A2, 2, 6))
assert np.isclose(proj_by_hand, table7[0]["from_delta_w"], rtol=1e-4)
assert abs(np.mean(draws) / analysis.random_subspace_similarity(k_demo, 2, 6) - 1) < 0.15
assert -1e-9 <= grid.min() and grid.max() <= 1 + 1e-6  # φ lies in [0, 1]
assert np.isclose(analysis.subspace_similarity(A["large"][path], A["large"][path], large, large), 1)
for row in table7:  # W's own top directions hold the most of W; ΔW's lie in between
    assert row["from_w"] >= row["from_delta_w"] - 1e-6
if not FAST:
    assert mean(phi11.values()) > 10 / k  # trained top directions agree far above chance
    assert mean(phi11.values()) > 3 * mean(phi11_init.values())  # and far above their init
    assert table7[0]["amplification"] > table7[1]["amplification"]  # larger at small r
    for layer in (0, 1):  # on rev, across these two seeds, W_q's top direction agrees better
        q, v = (seed_phi[f"layers.{layer}.attn.{m}"][0] for m in ("q_proj", "v_proj"))
        assert q > v
if len(committed) == len(STEMS):  # the findings as the README states them, on the data
    for grids in sub_rank["grids"].values():  # >= 5x chance in every matrix of both tasks
        assert mean(g[0][0] for g in grids.values()) > 5 / d_committed
    for layer in ("0", "1"):  # on rev, dWq's excess over chance is the larger in both layers
        c = seed_comparison[("rev", layer)]
        assert mean(c["q"]) > mean(c["v"])
    rev0 = seed_comparison[("rev", "0")]
    assert all(q > v for q, v in zip(rev0["q"], rev0["v"]))  # and in every pair at layer 0
    assert min(g[0][0] for g in sub_rank["grids"]["rev layers.0.q_proj"].values()) > 0.5
    assert seed_verdict == {"rev": "holds", "perm": "reversed"}
    lo, hi = committed["delta_w"]["table_ranks"][0], committed["delta_w"]["table_ranks"][-1]
    for task, claims in amplification.items():
        for claim in (f"LoRA's amplification larger at r = {lo} than at r = {hi}",
                      f"full FT's amplification also larger at r = {lo} than at r = {hi}"):
            held, total = claims[claim]
            assert held == total, (task, claim)
print("all self-checks passed")

# %% [markdown]
# ## Exercises
#
# Solutions are in `lessons/solutions/07_subspace.py`.
# Graded: exercises 1-3. Write your answers in `lessons/exercises/ex07.py` (each function's
# docstring says what to compute) and run `pytest lessons/checks/test_07.py`: a wrong answer
# fails with what was expected and a hint.
#
# 1. **Subspaces, not matrices.** For a trained $A$ (r, k) and a random invertible $R$ (r, r),
#    $RA$ has the same row space as $A$. Compute $\phi(A, RA, r, r)$ and $\phi(A, RA, 1, 1)$.
#    Why is the first 1 and the second not? What does that say about reading $\phi(1, 1)$ of
#    a trained adapter, whose $B$ could absorb any such $R$?
# 2. **The output side.** $\Delta W = s\,BA$ writes into the column space of $B$ (out, r).
#    Compute φ for the left singular vectors of $B$ of the two adapters of section 2
#    (hint: `analysis.subspace_similarity(B1.T, B2.T, i, j)`) and compare with A's.
# 3. **Full fine-tuning's ΔW.** Run `full_spec(SETUP, "rev", seed=0)` and compute Table 7's row
#    for its $\Delta W = W_{ft} - W_0$ of layer 0's `q_proj` at $r = 8$ and $r = 64$. Is its
#    amplification larger or smaller than LoRA's, and how much of $\lVert\Delta W\rVert_F$
#    do its top 8 singular values hold?
