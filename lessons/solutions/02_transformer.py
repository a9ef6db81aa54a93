# %% [markdown]
# # Solutions to lesson 02: a tiny transformer
#
# `python lessons/solutions/02_transformer.py` runs and checks them (`MINILORA_FAST=1`: fewer
# training steps in exercise 3).
#
# The answers the checks grade are in `ex02.py` beside this file (the same names as in
# `lessons/exercises/ex02.py`); this script runs them and explains what they show.
# `MINILORA_ANSWERS=lessons/solutions pytest lessons/checks/test_02.py` grades them.

# %%
import math
import os

import numpy as np
from threadpoolctl import threadpool_limits

import minilora.functional as F
from ex02 import attention_by_hand, attention_entropy, sort_batch  # this folder's ex02.py
from minilora import Tensor
from minilora.model import GPT, GPTConfig
from minilora.optim import AdamW
from minilora.tensor import no_grad
from minilora.train import evaluate, train

threadpool_limits(1)  # one BLAS thread, as in the lessons (see their first code cell)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"
STEPS = 60 if FAST else 250
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Saturation
#
# With $s = 1/\sqrt{d}$ the scores have standard deviation about 1 and the weights spread over
# several keys; with $s = 1$ the standard deviation is $\sqrt{64} = 8$ and the largest score
# wins almost everything. A near one-hot softmax has a near-zero Jacobian
# ($p_i(\delta_{ij} - p_j) \approx 0$ when $p$ is one-hot), so the query and key get almost no
# gradient: training stalls.

# %%
d, T = 64, 16
q = Tensor(rng.standard_normal((1000, 1, d)))  # (n, 1, d): 1000 independent queries
K = Tensor(rng.standard_normal((1000, T, d)))  # (n, T, d)
scores = (q @ K.mT).numpy()[:, 0, :]  # (n, T)
for s in (1 / math.sqrt(d), 1.0):
    p = F.softmax(Tensor(scores * s)).numpy()  # (n, T)
    print(f"scale {s:.3f}: mean entropy {attention_entropy(scores, s):.2f} nats "
          f"(uniform: {math.log(T):.2f}), mean largest weight {p.max(axis=1).mean():.2f}")
p_raw = F.softmax(Tensor(scores)).numpy()
assert attention_entropy(scores, 1.0) < 0.5 * attention_entropy(scores, 1 / math.sqrt(d))
assert p_raw.max(axis=1).mean() > 0.8

# %% [markdown]
# ## 2. The whole block by hand
#
# Weights (B, H, T, T) @ values (B, H, T, d) → (B, H, T, d); swap back to (B, T, H, d), join
# the heads to (B, T, C), then `o_proj`.

# %%
model = GPT(GPTConfig(vocab_size=17, block_size=16, n_layer=2, n_head=4, n_embd=64), seed=1)
block = model.layers[0]
idx = rng.integers(0, 17, (3, 16))  # (B, T)
with no_grad():
    x = model.wte(idx) + model.wpe(np.arange(idx.shape[1]))  # (B, T, C)
    h = block.ln_1(x)  # (B, T, C)
    ours = attention_by_hand(block.attn, h)  # ex02.py: split, causal softmax, join, o_proj
    theirs = block.attn(h)
print("max |by hand - block.attn|:", np.abs(ours.numpy() - theirs.numpy()).max())
assert np.allclose(ours.numpy(), theirs.numpy(), atol=1e-6)

# %% [markdown]
# ## 3. Another task: sorting
#
# Sorting is harder than reversing: reversing reads one fixed source position per answer
# position, while the $j$-th smallest token depends on all of $x$. The middle positions, where
# many tokens compete for the rank, are the last to become right; the first and last answers
# (the minimum and maximum) come first.

# %%
V, L = 16, 8

model = GPT(GPTConfig(vocab_size=V + 1, block_size=2 * L, n_layer=2, n_head=4, n_embd=64), seed=0)
history = train(model, AdamW(model.parameters(), lr=3e-3, weight_decay=0.0),
                lambda step: sort_batch(np.random.default_rng([0, step]), 64), STEPS)
inputs, targets = sort_batch(np.random.default_rng(10_000), 512)
with no_grad():
    predicted = model(inputs).numpy().argmax(axis=-1)  # (n, 2L)
per_position = (predicted == targets)[:, L:].mean(axis=0)  # (L,) accuracy of y1..yL
print("training loss every 50 steps:", np.round(history.loss[::50], 3))
print("accuracy per answer position:", per_position.round(2))
print("held-out:", evaluate(model, [(inputs, targets)]))
assert history.loss[-1] < history.loss[0]
if not FAST:
    assert per_position[0] > per_position[L // 2]  # the minimum is easier than the middle
