# %% [markdown]
# # Solutions to lesson 07: what the adapters learn, seen through the SVD
#
# `python lessons/solutions/07_subspace.py` runs and checks them (`MINILORA_FAST=1`: the
# small set-up).
#
# The answers the checks grade are in `ex07.py` beside this file (the same names as in
# `lessons/exercises/ex07.py`); this script runs them and explains what they show.
# `MINILORA_ANSWERS=lessons/solutions pytest lessons/checks/test_07.py` grades them.

# %%
import os

import numpy as np
from threadpoolctl import threadpool_limits

from ex07 import output_phi, phi_after_mixing, top_energy  # this folder's ex07.py
from minilora import analysis
from minilora.experiments.common import full_spec, lora_spec, setup_lrs
from minilora.experiments.config import FULL, QUICK
from minilora.experiments.pretrain import load_or_pretrain
from minilora.experiments.runs import run_one

threadpool_limits(1)  # one BLAS thread, as in the lessons (see their first code cell)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"
SETUP = QUICK if FAST else FULL
lrs = setup_lrs(SETUP)
small, large = SETUP.subspace_ranks
runs = {r: run_one(lora_spec(SETUP, "rev", "Wq,Wv", r, 0, lrs)) for r in (small, large)}
modules = list(runs[small]["weights"])
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Subspaces, not matrices
#
# $RA$ has the row space of $A$, so with all $r$ directions φ is 1. But the *order* of the
# directions, by singular value, is not a property of the row space: $R$ reweights and mixes
# them, and the top one moves. For a trained adapter this matters because $B A$ is what the
# model uses, and $(BR^{-1})(RA) = BA$: any $R$ gives the same $\Delta W$. φ of A's top
# directions reads how training happened to split $\Delta W$ between the factors. The split
# is not arbitrary in practice (A and B start at very different sizes and are trained by the
# same optimizer), but the gauge-free quantity is $\Delta W$ itself: its right singular
# vectors are the input directions the update really reads, ordered by how much it uses them.

# %%
A = runs[small]["weights"][modules[0]]["A"]  # (r, k)
R = rng.standard_normal((small, small))  # invertible with probability 1
phi_all, phi_top = phi_after_mixing(A, R)
print(f"phi(A, RA, r, r) = {phi_all:.6f}, phi(A, RA, 1, 1) = {phi_top:.4f}")
assert np.isclose(phi_all, 1.0)
assert phi_top < 0.999


def delta(res, path):
    w = res["weights"][path]
    return w["scaling"] * w["B"] @ w["A"]  # ΔW (out, in)


for path in modules:
    via_A = analysis.subspace_similarity(runs[small]["weights"][path]["A"],
                                         runs[large]["weights"][path]["A"], 1, 1)
    via_dW = analysis.subspace_similarity(delta(runs[small], path), delta(runs[large], path), 1, 1)
    print(f"{path:22} phi(1, 1) from A: {via_A:.3f}, "
          f"from ΔW's right singular vectors: {via_dW:.3f}")

# %% [markdown]
# ## 2. The output side
#
# The rows of $B^\top$ (r, out) are the columns of $B$; their right singular vectors are the left
# singular vectors of $B$, the output directions the update writes into.

# %%
k_out = SETUP.base.model.n_embd
phi_A_all, phi_B = {}, {}
for path in modules:
    B1, B2 = runs[small]["weights"][path]["B"], runs[large]["weights"][path]["B"]
    phi_A = phi_A_all[path] = analysis.subspace_similarity(
        runs[small]["weights"][path]["A"], runs[large]["weights"][path]["A"], 1, 1)
    phi_B[path] = output_phi(B1, B2, 1, 1)
    print(f"{path:22} phi(1, 1): A (inputs) {phi_A:.3f}, B (outputs) {phi_B[path]:.3f}; "
          f"random {1 / k_out:.4f}")
assert all(0 <= v <= 1 + 1e-6 for v in phi_B.values())
if not FAST:
    assert all(phi_B[path] >= phi_A_all[path] for path in modules)

# %% [markdown]
# B starts at zero, so everything in it is learned; in the full set-up its top direction is
# shared between the two ranks at least as clearly as A's, in every module (A keeps part of
# its random initialization in the directions training does not need).
#
# ## 3. Full fine-tuning's ΔW

# %%
full = run_one(full_spec(SETUP, "rev", seed=0))
path = modules[0]  # layer 0's q_proj
W0 = load_or_pretrain(SETUP.base)[0].get_submodule(path).weight.numpy()
dW_full = full["weights"][path]["W"] - W0
top = top_energy(dW_full, small)
print(f"full fine-tuning, {path}: accuracy {full['accuracy']:.4f}, |ΔW|_F = "
      f"{np.linalg.norm(dW_full):.3f}, top {small} singular values hold "
      f"{100 * top:.1f}% of |ΔW|_F²")
amp = {}
for r in (small, large):
    amp[("full", r)] = analysis.amplification_factor(W0, dW_full, r)
    amp[("lora", r)] = analysis.amplification_factor(W0, delta(runs[r], path), r)
    print(f"r = {r:2d}: amplification, full fine-tuning {amp[('full', r)]:.2f}, "
          f"LoRA {amp[('lora', r)]:.2f}")

# %% [markdown]
# Full fine-tuning's $\Delta W$ is itself nearly low-rank here: a few directions hold most of
# its energy, so "rev" is a low-rank change whichever way it is learned. But it amplifies
# less than LoRA at both $r$: its main directions are ones $W$ already has more of, while
# LoRA, with its whole change squeezed into $r$ directions and trained from a random A,
# pushes harder along directions that $W$ barely uses. This matches the committed
# `figures/delta_w.csv` (its `full_ft_amplification` column).

# %%
if not FAST:
    assert amp[("full", small)] < amp[("lora", small)]
    assert amp[("full", large)] < amp[("lora", large)]
    assert top > 0.5  # a few directions hold most of full fine-tuning's ΔW
