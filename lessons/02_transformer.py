# %% [markdown]
# # Lesson 02: a tiny transformer
#
# LoRA adapts the weight matrices of a transformer, so we need one to adapt. This lesson
# writes attention as its formula, takes minilora's GPT apart module by module, and trains it
# from scratch on a toy task (reversing a sequence) while the loss falls.
#
# **What you'll learn**
# - attention as one line, $\mathrm{softmax}(QK^\top/\sqrt{d} + M)\,V$, with the shape of
#   every array and why the $\sqrt{d}$ is there;
# - the GPT's modules and their names (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `up_proj`,
#   `down_proj`, `lm_head`): the names LoRA's `target_modules` will select;
# - counting its parameters by hand;
# - next-token training on a generated task, with an ignored prompt, and greedy decoding;
# - reading a trained attention head.
#
# **Prerequisites**: lesson 01 (autograd); matrix products and the softmax.
#
# **Time**: 45–60 minutes to read and do the exercises; how long it runs (full and
# `MINILORA_FAST=1`, wall and CPU time) is measured in `lessons/README.md`.

# %%
import math
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
import minilora.functional as F
from minilora import Tensor, accounting
from minilora.model import GPT, GPTConfig
from minilora.optim import AdamW
from minilora.train import IGNORE_INDEX, evaluate, train

# One BLAS thread: these matrices are small, so extra threads gain little, and on a busy
# machine a thread waiting for a core makes each product slower (lessons/README.md's times
# were measured so). threadpoolctl sets it for this process only.
threadpool_limits(1)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"  # CI runs every lesson with MINILORA_FAST=1
STEPS = 60 if FAST else 500  # optimizer steps in section 4
FIGURES = Path(minilora.__file__).resolve().parents[1] / "figures" / "lessons"
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Attention as the formula
#
# A sequence of $T$ tokens arrives as $T$ vectors. Each position $t$ makes a *query* $q_t$, a
# *key* $k_t$ and a *value* $v_t$ (rows of $Q, K, V$, each $T \times d$). Position $t$ looks at
# every position $s$, scores it by $q_t \cdot k_s / \sqrt{d}$, turns the scores into weights
# with a softmax, and returns the weighted mean of the values:
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\Big(\frac{Q K^\top}{\sqrt{d}} + M\Big) V,
# \qquad M_{ts} = \begin{cases} 0 & s \le t \\ -\infty & s > t. \end{cases}$$
#
# The *causal mask* $M$ stops a position from reading the future: $e^{-\infty} = 0$, so those
# weights vanish. That is what lets one forward pass train every next-token prediction at once.

# %%
def attention(q, k, v):
    """Causal attention for one head: q, k, v are (T, d) Tensors."""
    T, d = q.shape
    M = np.triu(np.full((T, T), -np.inf), k=1)  # (T, T): -inf above the diagonal
    scores = q @ k.mT / math.sqrt(d) + M  # (T, d) @ (d, T) -> (T, T)
    return F.softmax(scores, dim=-1) @ v  # (T, T) @ (T, d) -> (T, d)


T, d = 6, 8
q, k, v = (Tensor(rng.standard_normal((T, d))) for _ in range(3))  # (T, d) each
ours = attention(q, k, v)
fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # minilora's fused op
print("output shape", ours.shape, " max |ours - fused|:",
      np.abs(ours.numpy() - fused.numpy()).max())

# %% [markdown]
# **For the PyTorch reader.** `minilora.functional` keeps PyTorch's names and signatures, so
# these lines read the same in `torch.nn.functional`:
#
# | here | PyTorch |
# |---|---|
# | `F.softmax(q @ k.mT / math.sqrt(d) + M, dim=-1) @ v` | `torch.softmax(q @ k.mT / math.sqrt(d) + M, dim=-1) @ v` |
# | `F.scaled_dot_product_attention(q, k, v, is_causal=True)` | `torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)` |
# | `Linear(C, C)`, `LayerNorm(C)`, `Embedding(V, C)` (`minilora/nn.py`) | `nn.Linear(C, C)`, `nn.LayerNorm(C)`, `nn.Embedding(V, C)` |
# | `model.layers[0].attn.q_proj` | the same path in a LLaMA-style `transformers` model (`model.model.layers[0].self_attn.q_proj`) |

# %% [markdown]
# Causality, checked: change the value at position 3, and the outputs at positions 0, 1, 2
# cannot move.

# %%
v_changed = v.numpy().copy()
v_changed[3] += 10.0
moved = attention(q, k, Tensor(v_changed)).numpy() - ours.numpy()  # (T, d)
print("largest change per position:", np.abs(moved).max(axis=1).round(3))

# %% [markdown]
# Why divide by $\sqrt{d}$? If the entries of $q$ and $k$ are independent with variance 1,
# $q \cdot k$ is a sum of $d$ such products and has variance $d$. Without the scaling, wide
# heads produce large scores, the softmax saturates to a one-hot, and its gradient vanishes.

# %%
d_head = 64
qs, ks = rng.standard_normal((2, 10_000, d_head))  # 10,000 random (q, k) pairs
dots = (qs * ks).sum(axis=1)  # (10000,)
print(f"std of q.k: {dots.std():.2f} (sqrt(d) = {math.sqrt(d_head):.0f});  "
      f"std of q.k / sqrt(d): {(dots / math.sqrt(d_head)).std():.2f}")

# %% [markdown]
# ## 2. The GPT and its module names
#
# minilora's `GPT` is GPT-2's layout (pre-LayerNorm), at toy size:
#
#     idx (B, T) ─► wte + wpe ─► [ x + attn(ln_1(x)) ; x + mlp(ln_2(x)) ] × n_layer
#                ─► ln_f ─► lm_head ─► logits (B, T, vocab_size)
#
# Multi-head attention runs $H$ heads of width $d = C/H$ side by side: `q_proj`, `k_proj`,
# `v_proj` make $Q, K, V$ (B, T, C), which are split into heads (B, H, T, d), attended, joined
# back and mixed by `o_proj`. The MLP is `down_proj(gelu(up_proj(x)))`. The names follow
# LLaMA and PEFT, so that LoRA's `target_modules=["q_proj", "v_proj"]` reads as it does there.
#
# The toy task of this lesson: read $L$ tokens $x_1 \dots x_L$ (from a vocabulary of $V$), a
# separator, then write them reversed.

# %%
V, L = 16, 8  # content tokens 0..15, sequences of length 8
SEP = V  # the separator token id
config = GPTConfig(
    vocab_size=V + 1,  # 16 content tokens + SEP
    block_size=2 * L,  # the model reads [x1..xL, SEP, y1..y(L-1)]
    n_layer=2, n_head=4, n_embd=64,
)
model = GPT(config, seed=0)
print(model)

# %% [markdown]
# Every weight has a dotted name; a weight matrix is stored (out_features, in_features), as in
# PyTorch, so a `Linear` computes $y = x W^\top + b$ (the paper writes $h = W_0 x$).

# %%
for name, p in model.named_parameters():
    if name.startswith("layers.0."):
        print(f"{name:32} {p.shape}")

# %% [markdown]
# Counting by hand, with $C$ = `n_embd` and biases everywhere: attention has four $C\times C$
# matrices and four biases, $4C^2 + 4C$; the MLP $4C \cdot C + 4C + C \cdot 4C + C = 8C^2 + 5C$;
# two LayerNorms $4C$. Per block $12C^2 + 13C$; plus the token and position tables
# $(V_{tok} + T)\,C$, the final LayerNorm $2C$, and `lm_head` $V_{tok}\,C$.

# %%
C, V_tok, n_layer = config.n_embd, config.vocab_size, config.n_layer
by_hand = n_layer * (12 * C ** 2 + 13 * C) + (V_tok + config.block_size) * C + 2 * C + V_tok * C
print(f"by hand {by_hand:,}  model.num_parameters() {model.num_parameters():,}  "
      f"accounting {accounting.from_gpt_config(config).total_parameters():,}")

# %% [markdown]
# ## 3. The data: next-token prediction with an ignored prompt
#
# A sequence is $[x_1 \dots x_L, \mathrm{SEP}, y_1 \dots y_L]$ with $y = \mathrm{reversed}(x)$.
# The model reads it shifted by one and predicts each next token. The first $L$ targets
# ($x_2 \dots x_L$, SEP) are random or trivial, so we mark them `IGNORE_INDEX` (−100) and the
# loss averages over the $L$ answer positions only. Batches are generated from
# `default_rng([0, step])`: the same step always sees the same batch.

# %%
def reverse_batch(rng, n):
    """n sequences [x, SEP, reversed(x)] as (inputs, targets), each (n, 2L)."""
    x = rng.integers(0, V, (n, L))  # (n, L) content tokens
    seq = np.concatenate([x, np.full((n, 1), SEP), x[:, ::-1]], axis=1)  # (n, 2L + 1)
    inputs, targets = seq[:, :-1], seq[:, 1:].copy()  # next-token pairs, (n, 2L) each
    targets[:, :L] = IGNORE_INDEX  # only y1..yL are scored
    return inputs, targets


inputs, targets = reverse_batch(np.random.default_rng(0), 2)
print("inputs ", inputs[0])
print("targets", targets[0])

# %% [markdown]
# Before training the weights are small (GPT-2's init, $\mathcal{N}(0, 0.02^2)$), so the
# logits are near zero, the prediction is near uniform over the 17 tokens, and the loss should
# be near $\ln 17$.

# %%
held_out = [reverse_batch(np.random.default_rng(10_000), 512)]
before = evaluate(model, held_out)
print(f"loss before training {before['loss']:.3f}, ln(17) = {math.log(V_tok):.3f}, "
      f"accuracy {before['accuracy']:.3f}")

# %% [markdown]
# ## 4. Training: watch the loss fall
#
# `train` is an explicit loop: for each step, get the batch, compute
# `cross_entropy(model(inputs), targets)`, `zero_grad`, `backward`, `step`.

# %%
optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
history = train(model, optimizer, lambda step: reverse_batch(np.random.default_rng([0, step]), 64),
                STEPS)
for step in range(0, STEPS, STEPS // 10):
    print(f"step {step:4d}  loss {history.loss[step]:.4f}")
after = evaluate(model, held_out)
print(f"held-out: loss {after['loss']:.4f}, accuracy {after['accuracy']:.4f}")

# %% [markdown]
# Greedy decoding (`temperature=0`): give the model $[x, \mathrm{SEP}]$ and let it write.

# %%
prompt = held_out[0][0][:3, : L + 1]  # (3, L + 1): x and SEP
written = model.generate(prompt, max_new_tokens=L, temperature=0)[:, L + 1:]  # (3, L)
for x_row, y_row in zip(prompt[:, :L], written):
    print("x", x_row, "-> model", y_row, "| reversed(x)", x_row[::-1])

# %% [markdown]
# ## 5. Reading a trained attention head
#
# The weights of the attention in block `l` can be recomputed from its public modules:
# normalize, project with `q_proj` and `k_proj`, split into heads and apply the formula's
# softmax. To reverse, the position writing $y_j$ must read $x_{L+1-j}$: an anti-diagonal in
# the lower-left block of the pattern (rows: answer positions; columns: source positions).
# After training, block 0's heads put nearly all their weight there.

# %%
def attention_weights(model, idx, layer):
    """softmax(Q Kᵀ/√d + M) of block `layer`, (B, H, T, T), from its public modules."""
    block = model.layers[layer]
    B, T = idx.shape
    H = block.attn.n_head
    x = model.wte(idx) + model.wpe(np.arange(T))  # (B, T, C)
    for earlier in model.layers[:layer]:
        x = earlier(x)
    h = block.ln_1(x)  # (B, T, C)
    split = lambda t: t.reshape(B, T, H, -1).transpose(1, 2)  # (B, T, C) -> (B, H, T, d)
    q, k = split(block.attn.q_proj(h)), split(block.attn.k_proj(h))
    M = np.triu(np.full((T, T), -np.inf), k=1)  # (T, T)
    return F.softmax(q @ k.mT / math.sqrt(q.shape[-1]) + M, dim=-1).numpy()  # (B, H, T, T)


weights = attention_weights(model, held_out[0][0][:256], layer=0).mean(axis=0)  # (H, T, T)
answer_to_source = weights[:, L:, :L]  # (H, L, L): answer positions reading x
anti_diagonal = np.array([np.trace(np.fliplr(w)) / L for w in answer_to_source])  # (H,)
print("mean weight on the reversing anti-diagonal, per head of block 0:", anti_diagonal.round(3))

fig, axes = plt.subplots(1, 1 + config.n_head, figsize=(3 * (1 + config.n_head), 3))
axes[0].semilogy(history.loss)
axes[0].set(xlabel="step", ylabel="training loss", title="reverse task")
for h, ax in enumerate(axes[1:]):
    ax.imshow(weights[h], cmap="viridis")
    ax.set(title=f"block 0, head {h}", xlabel="key position", ylabel="query position",
           xticks=range(0, 2 * L, 4), yticks=range(0, 2 * L, 4))
fig.tight_layout()
if not FAST:
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "02_transformer.png", dpi=120)
plt.show()

# %% [markdown]
# ## Self-checks

# %%
assert np.allclose(ours.numpy(), fused.numpy(), atol=1e-6)  # the formula is the fused op
assert np.all(moved[:3] == 0) and np.abs(moved[3:]).max() > 0  # causal: the past is untouched
assert np.allclose(weights.sum(axis=-1), 1, atol=1e-5)  # attention rows are distributions
assert np.all(np.triu(weights, k=1) == 0)  # and never look ahead
assert by_hand == model.num_parameters() == accounting.from_gpt_config(config).total_parameters()
assert abs(before["loss"] - math.log(V_tok)) < 0.1  # untrained: near-uniform prediction
assert after["loss"] < before["loss"] / 2  # training works
assert anti_diagonal.max() > 0.9  # a head attends along the reversing anti-diagonal
if not FAST:
    assert after["accuracy"] > 0.99  # and, given 500 steps, solves the task
    assert np.array_equal(written, prompt[:, :L][:, ::-1])
print("all self-checks passed")

# %% [markdown]
# ## Exercises
#
# Solutions are in `lessons/solutions/02_transformer.py`.
# Graded: exercises 1-3. Write your answers in `lessons/exercises/ex02.py` (each function's
# docstring says what to compute) and run `pytest lessons/checks/test_02.py`: a wrong answer
# fails with what was expected and a hint.
#
# 1. **Saturation.** For random $q, k \in \mathbb{R}^{64}$ and $T = 16$ keys, compare the
#    entropy of the attention weights $\mathrm{softmax}(q K^\top \cdot s)$ with
#    $s = 1/\sqrt{d}$ and with $s = 1$ (use `F.scaled_dot_product_attention(..., scale=s)` or
#    your own softmax). Which one is close to one-hot? What does that do to the gradient?
# 2. **The whole block by hand.** Finish section 5's `attention_weights`: multiply by $V$,
#    join the heads back to (B, T, C), apply `o_proj`, and check that you reproduce
#    `block.attn(block.ln_1(x))`.
# 3. **Another task.** Train the same model to *sort* $x$ instead of reversing it. Does it
#    learn it as fast? Which positions does it get wrong first (look at the accuracy per
#    answer position)?
