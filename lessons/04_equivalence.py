# %% [markdown]
# # Lesson 04: at r = min(d, k), LoRA is full fine-tuning
#
# The paper (Section 4.1) notes that LoRA generalizes full fine-tuning: "as we increase the
# number of trainable parameters, training LoRA roughly converges to training the original
# model". This lesson proves the exact version of that statement, then checks it three ways
# with code: the factorizations exist, a rank-$r$ update can do no better than the
# Eckart–Young bound, and with the right initialization LoRA follows full fine-tuning's SGD
# trajectory step for step.
#
# **What you'll learn**
# - why every $\Delta W \in \mathbb{R}^{d\times k}$ is some $s\,BA$ once $r = \min(d, k)$;
# - why, with $B = I$ frozen, training $A$ *is* full fine-tuning (a reparametrization),
#   with learning rate $\eta s^2$;
# - what $r < \mathrm{rank}(\Delta W)$ costs: the Eckart–Young tail
#   $\sqrt{\sum_{i>r}\sigma_i^2}$;
# - how to turn a theorem into an executable check, and into a law of your own with
#   `minilora.testing` (and why $\alpha/\sqrt r$ keeps the first step's size independent of $r$).
#
# **Prerequisites**: lesson 03 ($\Delta W = s\,BA$ and its gradients); the singular value
# decomposition. Section 5 uses hypothesis (`pip install 'minilora[test]'`).
#
# **Time**: 30–45 minutes to read and do the exercises; how long it runs (full and
# `MINILORA_FAST=1`, wall and CPU time) is measured in `lessons/README.md`.

# %%
import os
import sys
from pathlib import Path

import matplotlib
import numpy as np
from threadpoolctl import threadpool_limits

if "ipykernel" not in sys.modules:  # run as a script: draw into files, open no window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

import minilora
from minilora import Tensor
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT, GPTConfig
from minilora.optim import SGD, AdamW
from minilora.train import IGNORE_INDEX, loss_fn

# One BLAS thread: these matrices are small, so extra threads gain little, and on a busy
# machine a thread waiting for a core makes each product slower (lessons/README.md's times
# were measured so). threadpoolctl sets it for this process only.
threadpool_limits(1)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"  # CI runs every lesson with MINILORA_FAST=1
FIT_STEPS = 800 if FAST else 1500  # AdamW steps fitting B A to a target (section 3)
SGD_STEPS = 5 if FAST else 60  # steps of the two training runs compared in section 4
FIGURES = Path(minilora.__file__).resolve().parents[1] / "figures" / "lessons"
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The proof
#
# **Expressivity.** Let $W_0 \in \mathbb{R}^{d\times k}$ and take $r = \min(d, k)$. Every
# $\Delta W$ has rank at most $\min(d, k) = r$, so it factors through $\mathbb{R}^r$: with
# the SVD $\Delta W = U \Sigma V^\top$ (keeping $r$ singular values),
# $B = U\Sigma^{1/2}/\sqrt{s}$ and $A = \Sigma^{1/2}V^\top/\sqrt{s}$ give $s\,BA = \Delta W$.
# Simpler still, if $d \le k$: $B = I_d$ and $A = \Delta W / s$. So LoRA at full rank can
# represent exactly the updates full fine-tuning can.
#
# **Dynamics.** Take $d \le k$, freeze $B = I_d$ and start from $A = 0$ (so $\Delta W = 0$).
# With $G = \partial L/\partial W$ at the current weights, lesson 03 gave
# $\partial L/\partial A = s\,B^\top G = s\,G$. One SGD step with learning rate $\eta$:
#
# $$A \leftarrow A - \eta\, s\, G \quad\Longrightarrow\quad
#   \Delta W = s\,A \;\leftarrow\; \Delta W - \eta\, s^2\, G,$$
#
# which is exactly full fine-tuning's step $W \leftarrow W - \eta' G$ with
# $\eta' = \eta s^2$. Both runs start at $W_0$ and see the same $G$ at every step (it depends
# only on the current $W = W_0 + \Delta W$), so by induction they agree forever. LoRA with
# $B = I$ is full fine-tuning, written in other coordinates.
#
# Two remarks. With the usual initialization ($B = 0$, both trained) the *set* of reachable
# updates is the same, but the path is not: a step changes $\Delta W$ by
# $-\eta s^2 (G A^\top A + B B^\top G)$ to first order in $\eta$, a preconditioned gradient.
# And for $r$ below the rank of the update a task needs, no choice of $A, B$ reaches it: the
# best possible rank-$r$ approximation, and its error, are given by the Eckart–Young theorem
# (section 3).

# %% [markdown]
# ## 2. Check: the factorizations exist
#
# For random shapes and random $\Delta W$: the SVD factors at $r = \min(d, k)$, and the
# identity factor ($B = I$ when $d \le k$, $A = I$ when $d > k$).

# %%
def svd_factors(delta, r, s):
    """B (d, r), A (r, k) with s B A = the best rank-r approximation of delta."""
    U, S, Vt = np.linalg.svd(delta, full_matrices=False)
    root = np.sqrt(S[:r] / s)  # (r,): split sqrt(S/s) between B and A
    return U[:, :r] * root, root[:, None] * Vt[:r]  # (d, r), (r, k)


factorization_errors = []
for _ in range(10):
    d, k = rng.integers(1, 40, size=2)
    s = rng.uniform(0.1, 4.0)  # any scaling alpha / r
    delta = rng.standard_normal((d, k))  # (d, k), of rank min(d, k)
    r = min(d, k)
    B, A = svd_factors(delta, r, s)
    if d <= k:
        B_id, A_id = np.eye(d), delta / s  # (d, d), (d, k)
    else:
        B_id, A_id = delta / s, np.eye(k)  # (d, k), (k, k)
    factorization_errors += [np.abs(s * B @ A - delta).max(), np.abs(s * B_id @ A_id - delta).max()]
    print(f"d={d:2d} k={k:2d} r={r:2d}: B {B.shape}, A {A.shape}, max |sBA - dW| "
          f"{factorization_errors[-2]:.1e} (SVD), {factorization_errors[-1]:.1e} (identity)")

# %% [markdown]
# ## 3. Check: below full rank, the Eckart–Young tail
#
# Let $\Delta W^*$ be an update a task needs, with singular values
# $\sigma_1 \ge \sigma_2 \ge \dots$. The Eckart–Young theorem: the closest matrix of rank at
# most $r$, in Frobenius norm, is the truncated SVD, and its error is
#
# $$\min_{\mathrm{rank}(M) \le r} \lVert \Delta W^* - M\rVert_F
#   = \sqrt{\textstyle\sum_{i>r}\sigma_i^2}.$$
#
# Any $s\,BA$ has rank at most $r$, so LoRA can never beat this. We *train* $A$ and $B$ (from
# LoRA's initialization, $B = 0$, with AdamW) to minimize $\lVert s\,BA - \Delta W^*\rVert_F^2$
# and watch where they end up, for each $r$.

# %%
d, k = 16, 12
target = rng.standard_normal((d, k)) * 0.9 ** np.arange(k)  # (d, k): columns of decaying size
sigma = np.linalg.svd(target, compute_uv=False)  # (min(d, k),) singular values, descending
tail = np.sqrt([np.sum(sigma[r:] ** 2) for r in range(1, k + 1)])  # Eckart-Young error per r


def fit_lora(target, r, steps, alpha=1.0, seed=0):
    """Train B (d, r) = 0 and A (r, k) random to minimize |s B A - target|_F^2; return the error."""
    gen = np.random.default_rng(seed)
    d, k = target.shape
    s = alpha / r
    B = Tensor(np.zeros((d, r)), requires_grad=True, dtype="float64")  # (d, r), LoRA's B = 0
    A = Tensor(gen.uniform(-1, 1, (r, k)) / np.sqrt(k), requires_grad=True, dtype="float64")
    optimizer = AdamW([A, B], lr=0.02, weight_decay=0.0)
    for _ in range(steps):
        loss = ((s * B @ A - target) ** 2.0).sum()  # (d, r) @ (r, k) -> (d, k) -> ()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(np.linalg.norm(s * B.numpy() @ A.numpy() - target))


ranks = list(range(1, k + 1))
trained = [fit_lora(target, r, FIT_STEPS) for r in ranks]
truncated = []
for r in ranks:
    B, A = svd_factors(target, r, 1.0)  # (d, r), (r, k)
    truncated.append(np.linalg.norm(target - B @ A))
print(f"{'r':>3} {'Eckart-Young tail':>18} {'truncated SVD':>14} {'trained LoRA':>13}")
for r, t, u, e in zip(ranks, tail, truncated, trained):
    print(f"{r:3d} {t:18.4f} {u:14.4f} {e:13.4f}")

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(ranks, tail, "-", label=r"Eckart–Young tail $\sqrt{\sum_{i>r}\sigma_i^2}$")
ax.plot(ranks, trained, "o", label="trained LoRA, $\\|sBA - \\Delta W^*\\|_F$")
ax.set(xlabel="rank r", ylabel="error (Frobenius)", title=f"fitting a {d}x{k} update")
ax.legend()
fig.tight_layout()
if not FAST:
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "04_eckart_young.png", dpi=120)
plt.show()

# %% [markdown]
# ## 4. Check: the same SGD trajectory, on a GPT
#
# Two copies of the same GPT (float64, so that round-off stays far below what we compare).
# The first is fully fine-tuned on `q_proj` and `v_proj` of every layer, with SGD at
# $\eta' = \eta s^2$. The second gets LoRA on the same matrices with $r = \min(d, k) = C$,
# $B = I$ frozen, $A = 0$ trainable, SGD at $\eta$. Both see the same batches (a reversing
# task as in lesson 02). After every step, compare full fine-tuning's $W$ with LoRA's
# $W_0 + s\,BA$.

# %%
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


full = GPT(config, seed=0)  # full fine-tuning of q_proj and v_proj
full.requires_grad_(False)
for name, p in full.named_parameters():
    p.requires_grad = name.endswith(("q_proj.weight", "v_proj.weight"))

r, alpha, eta = C, 2 * C, 0.5  # r = min(d, k); s = alpha / r = 2
lm = get_lora_model(GPT(config, seed=0), LoraConfig(r=r, lora_alpha=alpha,
                                                     target_modules=["q_proj", "v_proj"]))
for _, layer in lm.lora_layers():
    layer.lora_B["default"].weight.data = np.eye(C)  # B = I (C, C) ...
    layer.lora_B["default"].weight.requires_grad = False  # ... frozen
    layer.lora_A["default"].weight.data = np.zeros((C, C))  # A = 0: the run starts at W0
s = lm.lora_layers()[0][1].scaling["default"]
print(f"r = {r}, s = alpha/r = {s}: LoRA lr eta = {eta}, full fine-tuning lr eta s^2 = "
      f"{eta * s * s}")

full_opt = SGD(full.parameters(), lr=eta * s * s)
lora_opt = SGD(lm.parameters(), lr=eta)
print("trainable matrices: full", len(full_opt.param_groups[0]["params"]),
      "| LoRA", len(lora_opt.param_groups[0]["params"]), "(the A's)")

gaps, losses = [], []
for step in range(SGD_STEPS):
    inputs, targets = reverse_batch(np.random.default_rng([0, step]), 32)
    for model, optimizer in ((full, full_opt), (lm, lora_opt)):
        loss = loss_fn(model, inputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    gaps.append(max(
        np.abs(full.get_submodule(path).weight.numpy()
               - (layer.base_layer.weight.numpy() + layer.delta_weight())).max()
        for path, layer in lm.lora_layers()))
    if step % max(1, SGD_STEPS // 8) == 0 or step == SGD_STEPS - 1:
        print(f"step {step:3d}: loss full {losses[-2]:.6f}  LoRA {losses[-1]:.6f}  "
              f"max |W_full - (W0 + sBA)| {gaps[-1]:.1e}")
moved = max(np.abs(layer.delta_weight()).max() for _, layer in lm.lora_layers())
print(f"largest entry of any dW after {SGD_STEPS} steps: {moved:.3f}")

# %% [markdown]
# **For the PyTorch reader.** Section 4's set-up in PyTorch and PEFT: the frozen identity is
# `layer.lora_B["default"].weight.data = torch.eye(d)` with `.requires_grad_(False)`, the
# zero start `torch.nn.init.zeros_(layer.lora_A["default"].weight)`, and the two optimizers
# `torch.optim.SGD(full.parameters(), lr=eta * s**2)` and `torch.optim.SGD(lora.parameters(),
# lr=eta)`: the same theorem, the same few lines.

# %% [markdown]
# ## 5. Your own law
#
# Section 1 noted that, from LoRA's usual start, a step moves $\Delta W$ by
# $-\eta s^2 (G A^\top A + B B^\top G)$ to first order. At the very first step this is exact:
# $B = 0$ makes $\partial L/\partial A = s\,B^\top G = 0$, so $A$ does not move, while
# $B_1 = -\eta\, s\, G A^\top$. Hence
#
# $$\Delta W_1 = s\,B_1 A = -\eta\, s^2\, G A^\top A \qquad (G = \partial L/\partial W \text{ at } W_0).$$
#
# A statement like this is a *law*: it must hold for every layer and every input, so we let
# hypothesis draw them and search for a counterexample. `minilora.testing` holds the
# strategies minilora's own laws are written with (here `lora_linears()`: a `LoraLinear` of
# drawn shape, rank, alpha, scaling rule and initialization) and their assertions
# (`assert_close` measures the error against the size of the terms). `docs/laws.md` lists every
# law minilora proves, with its source; this one is its worked example. (`minilora.testing`
# needs hypothesis: `pip install 'minilora[test]'`.)

# %%
from hypothesis import given, settings

from minilora.testing import assert_close, factors, lora_linears, seeds

LAW_EXAMPLES = 30 if FAST else 200


@settings(max_examples=LAW_EXAMPLES, database=None)  # database=None: leave no .hypothesis/ behind
@given(layer=lora_linears(), seed=seeds)
def test_one_sgd_step_from_B_zero_moves_dW_by_minus_eta_s2_G_AtA(layer, seed):
    """After one SGD step from B = 0: ΔW = −η s² G AᵀA, with G = ∂L/∂W at W0."""
    rng, eta, s = np.random.default_rng(seed), 0.1, layer.scaling["default"]
    x = Tensor(rng.standard_normal((5, layer.in_features)))  # (N, k)
    C = Tensor(rng.standard_normal((5, layer.out_features)))  # (N, d)
    A, B = factors(layer)  # (r, k), (d, r)
    W0 = layer.base_layer.weight
    W0.requires_grad = True  # only to read G = dL/dW0 from the same backward pass
    A0 = A.data.copy()
    (layer(x).tanh() * C).sum().backward()  # any loss of h = W0 x + s B A x
    SGD([A, B], lr=eta).step()  # W0 is not in the optimizer: it stays frozen
    G = W0.grad  # (d, k)
    size = eta * s**2 * np.linalg.norm(G) * np.linalg.norm(A0) ** 2
    assert_close(layer.delta_weight(), -eta * s**2 * G @ A0.T @ A0, scale=size)


test_one_sgd_step_from_B_zero_moves_dW_by_minus_eta_s2_G_AtA()  # raises on a counterexample
print(f"the first-step law held on {LAW_EXAMPLES} drawn layers")

# %% [markdown]
# **What the law says about $\alpha/r$ versus $\alpha/\sqrt r$.** To first order the first
# step lowers the loss by $-\langle G, \Delta W_1\rangle = \eta s^2 \lVert G A^\top\rVert_F^2$.
# With the default initialization ($A$ Kaiming-uniform, entries of variance $1/(3k)$), each of
# $A$'s $r$ rows contributes about $\lVert G\rVert_F^2/(3k)$, so the descent is
# $\eta s^2 \tfrac{r}{3k}\lVert G\rVert_F^2$. With $s = \alpha/r$ that is
# $\eta\tfrac{\alpha^2}{3k r}\lVert G\rVert_F^2$, shrinking as the rank grows; with rsLoRA's
# $s = \alpha/\sqrt r$ it is $\eta\tfrac{\alpha^2}{3k}\lVert G\rVert_F^2$ for every $r$. We
# measure $-\langle G, \Delta W_1\rangle / (\eta \lVert G\rVert_F^2)$ after one real step.

# %%
from minilora import Generator
from minilora.lora import LoraLinear
from minilora.nn import Linear


def first_step_descent(r, rslora, k=64, alpha=8.0, eta=0.1, n_seeds=10):
    """Mean over seeds of -<G, dW_1> / (eta |G|_F^2) after one SGD step from B = 0."""
    descents = []
    for seed in range(n_seeds):
        base = Linear(k, k, generator=Generator(seed), dtype="float64")
        layer = LoraLinear(base, r=r, lora_alpha=alpha, use_rslora=rslora,
                           generator=Generator(seed + 1))
        base.weight.requires_grad = True  # to read G
        data = np.random.default_rng(seed)
        x, C = Tensor(data.standard_normal((16, k))), Tensor(data.standard_normal((16, k)))
        (layer(x).tanh() * C).sum().backward()
        SGD([layer.lora_A["default"].weight, layer.lora_B["default"].weight], lr=eta).step()
        G = base.weight.grad  # (k, k)
        descents.append(-np.sum(G * layer.delta_weight()) / (eta * np.sum(G * G)))
    return float(np.mean(descents))


k_in, alpha_step = 64, 8.0
step_ranks = [1, 2, 4, 8, 16, 32, 64]
descent = {rule: [first_step_descent(r, rule == "alpha/sqrt(r)") for r in step_ranks]
           for rule in ("alpha/r", "alpha/sqrt(r)")}
print(f"{'r':>3} {'alpha/r':>9} {'predicted':>10} {'alpha/sqrt(r)':>14} {'predicted':>10}")
for i, r in enumerate(step_ranks):
    print(f"{r:3d} {descent['alpha/r'][i]:9.4f} {alpha_step**2 / (3 * k_in * r):10.4f} "
          f"{descent['alpha/sqrt(r)'][i]:14.4f} {alpha_step**2 / (3 * k_in):10.4f}")

# %% [markdown]
# ## Self-checks

# %%
assert max(factorization_errors) < 1e-10  # r = min(d, k) factors every dW, two ways
assert np.allclose(truncated, tail, atol=1e-10)  # the truncated SVD attains the tail
assert all(e >= t - 1e-8 for e, t in zip(trained, tail))  # no rank-r update beats it
assert trained[-1] < 1e-3  # at r = min(d, k) LoRA fits any update
if not FAST:
    assert all(e <= t + 0.02 * sigma[0] for e, t in zip(trained, tail))  # and training gets there
assert max(gaps) < 1e-10 and moved > 1e-3  # the same trajectory, and it really moved
assert np.allclose(losses[0::2], losses[1::2], atol=1e-12)  # the same losses at every step
predicted = alpha_step**2 / (3 * k_in)
assert all(abs(d - predicted / r) < 0.2 * predicted / r  # alpha/r: the first step shrinks as 1/r
           for d, r in zip(descent["alpha/r"], step_ranks))
assert all(abs(d - predicted) < 0.2 * predicted for d in descent["alpha/sqrt(r)"])  # rsLoRA: flat
print("all self-checks passed")

# %% [markdown]
# ## Exercises
#
# Solutions are in `lessons/solutions/04_equivalence.py`.
# Graded: exercises 1-3. Write your answers in `lessons/exercises/ex04.py` (each function's
# docstring says what to compute) and run `pytest lessons/checks/test_04.py`: a wrong answer
# fails with what was expected and a hint.
#
# 1. **The tall case.** Repeat section 4 for `up_proj`, which is $4C \times C$ ($d > k$).
#    Which factor must be the identity now, which one trains, and what is
#    $\partial L/\partial B$?
# 2. **The usual initialization.** Run section 4 again with LoRA's usual start ($B = 0$, $A$
#    random, both trained) at $r = C$. Do the weights follow full fine-tuning? Relate what you
#    see to the step $-\eta s^2 (G A^\top A + B B^\top G)$: how large is $A^\top A$ at the
#    start, and what does that mean for LoRA's early speed?
# 3. **How much rank does an update need?** Build a $64 \times 64$ target with singular values
#    $\sigma_i = 0.8^i$ (random singular vectors) and find the smallest $r$ whose
#    Eckart–Young error is below 10% of $\lVert \Delta W^*\rVert_F$. Then do the same for
#    singular values that are all equal. Which of the two is a "low intrinsic rank" update,
#    in the paper's sense, and which would need $r = \min(d, k)$?
# 4. **Write a law of your own.** From any state (not only $B = 0$), one SGD step with
#    learning rate $\eta$ moves $A \leftarrow A - \eta s B^\top G$ and $B \leftarrow B - \eta s G A^\top$
#    at once. Expand $s\,B_1 A_1$ and write the exact law
#    $\Delta W_1 - \Delta W_0 = -\eta s^2 (G A^\top A + B B^\top G) + \eta^2 s^3 G A^\top B^\top G$
#    as a test in the style of section 5, over `lora_linears(trained=True)` (A and B both
#    drawn, so $\Delta W_0 \ne 0$). Check that it fails when you drop the $\eta^2$ term, and
#    say why first-order reasoning about LoRA's steps is only ever approximate.
