# %% [markdown]
# # Solutions to lesson 03: the LoRA update
#
# `python lessons/solutions/03_lora_update.py` runs and checks them (`MINILORA_FAST=1`: fewer
# training steps in exercise 3).
#
# The answers the checks grade are in `ex03.py` beside this file (the same names as in
# `lessons/exercises/ex03.py`); this script runs them and explains what they show.
# `MINILORA_ANSWERS=lessons/solutions pytest lessons/checks/test_03.py` grades them.

# %%
import os

import numpy as np
from threadpoolctl import threadpool_limits

from ex03 import MyLoraLinear, cat_factors, first_step, fit_target  # this folder's ex03.py
from minilora import Tensor
from minilora.lora import LoraConfig, LoraLinear, get_lora_model
from minilora.model import GPT, GPTConfig
from minilora.nn import Linear
from minilora.optim import AdamW
from minilora.train import IGNORE_INDEX, evaluate, train

threadpool_limits(1)  # one BLAS thread, as in the lessons (see their first code cell)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"
BASE_STEPS = 40 if FAST else 150
ADAPTER_STEPS = 20 if FAST else 150
rng = np.random.default_rng(0)

# %% [markdown]
# ## 0. `MyLoraLinear` (section 3)
#
# The answer is in `ex03.py` beside this file: about twenty lines. Two details matter: the
# forward builds $h$ from `Tensor` operations on `A` and `B` (so autograd gives
# $\partial L/\partial B = s\,G A^\top$ and $\partial L/\partial A = s\,B^\top G$), and the
# merged layer must not add $s\,BAx$ a second time.

# %%
base = Linear(10, 6)
base.requires_grad_(False)
mine = MyLoraLinear(base, r=2, lora_alpha=4)
x = Tensor(rng.standard_normal((5, 10)), dtype="float32")  # (N, k)
assert np.array_equal(mine(x).numpy(), base(x).numpy())  # B = 0: it starts as the base
mine.B.data = rng.standard_normal((6, 2)).astype(np.float32)  # as if trained
theirs = LoraLinear(base, r=2, lora_alpha=4)
theirs.lora_A["default"].weight.data = mine.A.numpy().copy()
theirs.lora_B["default"].weight.data = mine.B.numpy().copy()
unmerged = mine(x).numpy()
print("max |MyLoraLinear - LoraLinear|:", np.abs(unmerged - theirs(x).numpy()).max())
assert np.allclose(unmerged, theirs(x).numpy(), atol=1e-5)
W0 = base.weight.numpy().copy()
mine.merge()
assert np.allclose(mine(x).numpy(), unmerged, atol=1e-5)  # merged: the same outputs
mine.unmerge()
assert np.allclose(base.weight.numpy(), W0, atol=1e-6)  # unmerged: W0 again

# %% [markdown]
# ## 1. Other initializations
#
# `"gaussian"` draws A from $\mathcal{N}(0, 1/r^2)$ and sets $B = 0$: the model starts
# unchanged and, as with the default, $\partial L/\partial A = s\,B^\top G = 0$ at step 1.
# `"pissa"` takes $A$ and $B$ from the top-$r$ singular triplets of $W_0$ and leaves the
# residual $W_0 - s\,BA$ in the base layer: the sum is still $W_0$ (to round-off), but
# $B \neq 0$, so both $A$ and $B$ get a gradient from the first step. (PiSSA's point: train the
# principal directions of $W_0$, not a random subspace.)

# %%
first_step_grad_A = {}
for init in (True, "gaussian", "pissa"):
    start_gap, first_step_grad_A[init] = first_step(init)
    print(f"init {init!s:9}: max |layer(x) - base(x)| {start_gap:.1e}, "
          f"max |dL/dA| at step 1 {first_step_grad_A[init]:.3f}")
    assert start_gap < 1e-5
assert first_step_grad_A[True] == 0 and first_step_grad_A["gaussian"] == 0
assert first_step_grad_A["pissa"] > 0

# %% [markdown]
# ## 2. rsLoRA in training
#
# With SGD, one step changes $B$ by $-\eta\, s\, G A^\top$, so it changes $\Delta W = s\,BA$ by
# $-\eta\, s^2\, G A^\top A$. At initialization $A^\top A$ has size proportional to $r$
# (a sum of $r$ rank-one terms), so the change is proportional to $s^2 r$:
# $\alpha^2/r$ with $s = \alpha/r$ (large ranks barely move) and $\alpha^2$ with
# $s = \alpha/\sqrt{r}$ (the same at every rank, so a larger rank can use its extra capacity).
# AdamW divides each gradient by its own running size, which removes most of this effect: its
# steps are about `lr` whatever the gradient's scale.

# %%
results = {}
for use_rslora in (False, True):
    for r in (2, 8, 32, 64):
        results[use_rslora, r] = fit_target(r, use_rslora)  # (|dW|_F, loss) after 50 SGD steps
        print(f"use_rslora={use_rslora!s:5} r={r:2d}: |dW|_F {results[use_rslora, r][0]:.3f}, "
              f"loss {results[use_rslora, r][1]:.3f}")
assert results[False, 64][0] < 0.1 * results[False, 2][0]  # alpha/r: large r barely moves
assert results[True, 64][0] > 0.5 * results[True, 2][0]  # alpha/sqrt(r): it keeps moving
assert results[True, 64][1] < results[False, 64][1]

# %% [markdown]
# ## 3. Adding adapters
#
# `"cat"` stacks the factors: $A = [s_1 A_1; s_2 A_2]$ (rows), $B = [B_1, B_2]$ (columns),
# scaling 1, so $BA = s_1 B_1 A_1 + s_2 B_2 A_2$ exactly, of rank at most $r_1 + r_2 = 8$.
# As a model, it is the base plus *both* changes at once. The two tasks ask for different
# outputs from the same input, so the sum serves neither well: each update was learned
# assuming the other one absent.

# %%
V, L = 16, 8
SEP = V
TASKS = {"copy": lambda x: x, "plus_one": lambda x: (x + 1) % V, "mirror": lambda x: V - 1 - x}


def batch(task, rng, n):
    x = rng.integers(0, V, (n, L))  # (n, L)
    seq = np.concatenate([x, np.full((n, 1), SEP), TASKS[task](x)], axis=1)  # (n, 2L + 1)
    inputs, targets = seq[:, :-1], seq[:, 1:].copy()
    targets[:, :L] = IGNORE_INDEX
    return inputs, targets


held_out = {task: [batch(task, np.random.default_rng(10_000), 512)] for task in TASKS}
model = GPT(GPTConfig(vocab_size=V + 1, block_size=2 * L, n_layer=2, n_head=4, n_embd=64), seed=0)
train(model, AdamW(model.parameters(), lr=3e-3, weight_decay=0.0),
      lambda step: batch("copy", np.random.default_rng([0, step]), 64), BASE_STEPS)
lora_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
lm = get_lora_model(model, lora_config, adapter_name="plus_one")
lm.add_adapter("mirror", lora_config)
for seed, name in enumerate(("plus_one", "mirror"), start=1):
    lm.set_adapter(name)
    train(lm, AdamW(lm.parameters(), lr=1e-2, weight_decay=0.0),
          lambda step: batch(name, np.random.default_rng([seed, step]), 64), ADAPTER_STEPS)

lm.add_weighted_adapter(["plus_one", "mirror"], [1.0, 1.0], "both", combination_type="cat")
for path, layer in lm.lora_layers():
    total = layer.delta_weight("plus_one") + layer.delta_weight("mirror")  # (d, k)
    assert np.allclose(layer.delta_weight("both"), total, atol=1e-6), path
    rank = np.linalg.matrix_rank(layer.delta_weight("both"))
    print(f"{path}: r = {layer.r['both']}, rank of dW = {rank}")
    assert rank <= layer.r["plus_one"] + layer.r["mirror"]
    factors = [(layer.lora_A[n].weight.numpy(), layer.lora_B[n].weight.numpy(), layer.scaling[n])
               for n in ("plus_one", "mirror")]
    A_cat, B_cat = cat_factors(*factors[0], *factors[1])  # the same stacking, by hand
    assert np.allclose(A_cat, layer.lora_A["both"].weight.numpy(), atol=1e-6)
    assert np.allclose(B_cat, layer.lora_B["both"].weight.numpy(), atol=1e-6)

for name in ("plus_one", "mirror", "both"):
    lm.set_adapter(name)
    row = {task: evaluate(lm, held_out[task])["accuracy"] for task in TASKS}
    print(f"adapter {name:8}: " + "  ".join(f"{t} {a:.3f}" for t, a in row.items()))
    if name == "both":
        both = row
lm.set_adapter("plus_one")
own = evaluate(lm, held_out["plus_one"])["accuracy"]
if not FAST:
    assert both["plus_one"] < own  # the sum is worse at plus_one than plus_one's own adapter
