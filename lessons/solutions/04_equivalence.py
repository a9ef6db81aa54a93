# %% [markdown]
# # Solutions to lesson 04: at r = min(d, k), LoRA is full fine-tuning
#
# `python lessons/solutions/04_equivalence.py` runs and checks them (`MINILORA_FAST=1`: fewer
# steps).
#
# The answers the checks grade are in `ex04.py` beside this file (the same names as in
# `lessons/exercises/ex04.py`); this script runs them and explains what they show.
# `MINILORA_ANSWERS=lessons/solutions pytest lessons/checks/test_04.py` grades them.

# %%
import os

import numpy as np
from threadpoolctl import threadpool_limits

from ex04 import AtA_diagonal, rank_needed, tall_identity  # this folder's ex04.py
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT, GPTConfig
from minilora.optim import SGD
from minilora.train import IGNORE_INDEX, loss_fn

threadpool_limits(1)  # one BLAS thread, as in the lessons (see their first code cell)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"
SGD_STEPS = 5 if FAST else 60
rng = np.random.default_rng(0)

V, L = 16, 6
config = GPTConfig(vocab_size=V + 1, block_size=2 * L, n_layer=2, n_head=2, n_embd=32,
                   dtype="float64")
C = config.n_embd


def reverse_batch(rng, n):
    x = rng.integers(0, V, (n, L))  # (n, L)
    seq = np.concatenate([x, np.full((n, 1), V), x[:, ::-1]], axis=1)  # (n, 2L + 1)
    inputs, targets = seq[:, :-1], seq[:, 1:].copy()
    targets[:, :L] = IGNORE_INDEX
    return inputs, targets


def compare(target, r, alpha, eta, prepare):
    """Full fine-tuning of `target` (lr eta s^2) vs LoRA on it (lr eta), from the same GPT.

    `prepare(layer)` sets up each LoRA layer's A and B; returns the per-step weight gaps and
    the (full, LoRA) losses.
    """
    full = GPT(config, seed=0)
    full.requires_grad_(False)
    for name, p in full.named_parameters():
        p.requires_grad = name.endswith(f"{target}.weight")
    lm = get_lora_model(GPT(config, seed=0),
                        LoraConfig(r=r, lora_alpha=alpha, target_modules=[target]))
    for _, layer in lm.lora_layers():
        prepare(layer)
    s = alpha / r
    full_opt, lora_opt = SGD(full.parameters(), lr=eta * s * s), SGD(lm.parameters(), lr=eta)
    gaps, losses = [], []
    for step in range(SGD_STEPS):
        inputs, targets = reverse_batch(np.random.default_rng([0, step]), 32)
        pair = []
        for model, optimizer in ((full, full_opt), (lm, lora_opt)):
            loss = loss_fn(model, inputs, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            pair.append(loss.item())
        losses.append(pair)
        gaps.append(max(np.abs(full.get_submodule(path).weight.numpy()
                               - (layer.base_layer.weight.numpy() + layer.delta_weight())).max()
                        for path, layer in lm.lora_layers()))
    return np.array(gaps), np.array(losses)


# %% [markdown]
# ## 1. The tall case
#
# `up_proj` is $4C \times C$: $d = 4C > k = C$, so $r = \min(d, k) = C$, $A$ is $C \times C$
# and $B$ is $4C \times C$. Now $A = I_C$ must be the frozen identity and $B$ (from 0) trains:
# $\partial L/\partial B = s\,G A^\top = s\,G$, so $\Delta W = s\,B$ moves by $-\eta s^2 G$,
# full fine-tuning's step at $\eta s^2$ again.

# %%
gaps, losses = compare("up_proj", r=C, alpha=2 * C, eta=0.5, prepare=tall_identity)
print(f"up_proj, A = I: max weight gap over {SGD_STEPS} steps {gaps.max():.1e}; "
      f"losses {losses[0, 0]:.4f} -> {losses[-1, 0]:.4f} (full), {losses[-1, 1]:.4f} (LoRA)")
assert gaps.max() < 1e-10 and np.allclose(losses[:, 0], losses[:, 1], atol=1e-12)

# %% [markdown]
# ## 2. The usual initialization
#
# With $B = 0$ and $A$ random, both trained, one step changes $\Delta W$ by
# $-\eta s^2 (G A^\top A + B B^\top G)$ (plus a second-order term). At the start $B = 0$, so it
# is $-\eta s^2 G A^\top A$: the gradient multiplied by the random matrix $A^\top A$, not by
# the identity. With Kaiming-uniform $A$ (entries of variance $1/(3k)$) and $r = k$,
# $A^\top A \approx \tfrac13 I$ plus noise: LoRA starts out moving about a third as fast as full
# fine-tuning, in a slightly rotated direction, and the weights leave full fine-tuning's path
# from the first step. Same reachable set, different trajectory.

# %%
diagonals = []


def record_AtA(layer):
    A = layer.lora_A["default"].weight.numpy()  # (r, k)
    diagonals.append(np.diag(A.T @ A).mean())


gaps, losses = compare("q_proj", r=C, alpha=2 * C, eta=0.5, prepare=record_AtA)
print(f"mean diagonal of A^T A at the start: {np.mean(diagonals):.3f} (1/3 expected)")
print(f"q_proj, usual init: weight gap after step 1 {gaps[0]:.1e}, after step {SGD_STEPS} "
      f"{gaps[-1]:.1e}")
assert gaps[0] > 1e-6  # a different path from the first step
assert abs(np.mean(diagonals) - AtA_diagonal(C, C)) < 0.05  # r / (3k) = 1/3

# %% [markdown]
# ## 3. How much rank does an update need?
#
# With $\sigma_i = 0.8^i$ the energy $\sum_{i>r}\sigma_i^2$ falls geometrically, so a handful
# of directions hold almost all of $\Delta W^*$: low intrinsic rank, where LoRA with small $r$
# loses almost nothing. With equal singular values every direction matters equally: the
# error falls only like $\sqrt{(64 - r)/64}$, and 10% needs $r$ close to 64, i.e. LoRA would
# need (nearly) full rank.

# %%
n = 64
U, _ = np.linalg.qr(rng.standard_normal((n, n)))  # random orthogonal (n, n)
Vt, _ = np.linalg.qr(rng.standard_normal((n, n)))


geometric = rank_needed(U @ np.diag(0.8 ** np.arange(1, n + 1)) @ Vt)  # ex04.py
flat = rank_needed(U @ np.diag(np.ones(n)) @ Vt)
print(f"rank needed for 10% error: sigma_i = 0.8^i -> r = {geometric};  all equal -> r = {flat}")
assert geometric == int(np.ceil(np.log(0.1) / np.log(0.8)))  # 0.8^r < 0.1
assert flat == 64  # sqrt((64 - r)/64) < 0.1 needs r > 63.36

# %% [markdown]
# ## 4. Write a law of your own
#
# One step from any $(A, B)$, both updated from the same gradient:
# $B_1 = B - \eta s G A^\top$ and $A_1 = A - \eta s B^\top G$. Then
#
# $$s B_1 A_1 = s BA - \eta s^2 (B B^\top G + G A^\top A) + \eta^2 s^3 G A^\top B^\top G,$$
#
# exactly: the product of two factors that both moved has a second-order term. It is why
# "LoRA's step is a preconditioned gradient step" holds only to first order in $\eta$; at
# $B = 0$ the $\eta^2$ term and $BB^\top G$ vanish, which is lesson 04's worked example. The
# law over `lora_linears(trained=True)` (A and B drawn, $\Delta W_0 \ne 0$):

# %%
from hypothesis import given, settings

from minilora.tensor import Tensor
from minilora.testing import assert_close, factors, lora_linears, seeds

LAW_EXAMPLES = 30 if FAST else 200


def one_step_law(second_order=True):
    """The law of one SGD step from any A, B; without its η² term when second_order=False."""

    @settings(max_examples=LAW_EXAMPLES, database=None)
    @given(layer=lora_linears(trained=True), seed=seeds)
    def test_one_sgd_step_from_any_A_and_B(layer, seed):
        """ΔW₁ − ΔW₀ = −η s² (G AᵀA + B BᵀG) + η² s³ G Aᵀ Bᵀ G, G = ∂L/∂W at W0 + ΔW₀."""
        rng, eta, s = np.random.default_rng(seed), 0.1, layer.scaling["default"]
        x = Tensor(rng.standard_normal((5, layer.in_features)))  # (N, k)
        C = Tensor(rng.standard_normal((5, layer.out_features)))  # (N, d)
        A, B = factors(layer)  # (r, k), (d, r)
        W0 = layer.base_layer.weight
        W0.requires_grad = True  # G = dL/dW0 = dL/dW: the loss sees W0 and dW only as a sum
        A0, B0, dW0 = A.data.copy(), B.data.copy(), layer.delta_weight()
        (layer(x).tanh() * C).sum().backward()
        SGD([A, B], lr=eta).step()
        G = W0.grad  # (d, k)
        expected = -eta * s**2 * (G @ A0.T @ A0 + B0 @ B0.T @ G)
        if second_order:
            expected = expected + eta**2 * s**3 * G @ A0.T @ B0.T @ G
        nG, nA, nB = np.linalg.norm(G), np.linalg.norm(A0), np.linalg.norm(B0)
        size = eta * s**2 * nG * (nA**2 + nB**2) + eta**2 * abs(s)**3 * nG**2 * nA * nB \
            + np.linalg.norm(dW0)  # the terms' sizes: round-off is relative to them
        assert_close(layer.delta_weight() - dW0, expected, scale=size)

    return test_one_sgd_step_from_any_A_and_B


one_step_law()()  # raises on a counterexample
try:
    one_step_law(second_order=False)()
    first_order_holds = True
except AssertionError:
    first_order_holds = False
print(f"the one-step law held on {LAW_EXAMPLES} drawn layers; without its η² term it "
      f"{'held (!)' if first_order_holds else 'fails, as it must'}")
assert not first_order_holds
