# %% [markdown]
# # Lesson 03: the LoRA update
#
# Hu et al. (2021), Section 4.1: freeze the pre-trained weight $W_0 \in \mathbb{R}^{d\times k}$
# and learn its change as a product of two thin matrices,
#
# $$h = W_0 x + \Delta W x = W_0 x + \frac{\alpha}{r}\, B A x, \qquad
#   B \in \mathbb{R}^{d\times r},\; A \in \mathbb{R}^{r\times k},\; r \ll \min(d, k).$$
#
# This lesson builds that layer up from one matrix to a whole GPT with two task adapters.
#
# **What you'll learn**
# - the update $\Delta W = s\,BA$ with $s = \alpha/r$, and why $B = 0$ at the start (the model
#   starts unchanged, and $\partial L/\partial A = 0$ at the first step);
# - the gradients $\partial L/\partial B = s\,G A^\top$ and $\partial L/\partial A = s\,B^\top G$;
# - to write the layer yourself (`MyLoraLinear`, graded by `lessons/checks/test_03.py`);
# - the scaling $\alpha/r$ versus rsLoRA's $\alpha/\sqrt{r}$: the first SGD step scales as
#   $s^2 r$;
# - parameter counts, $r(d + k)$ instead of $dk$, and `print_trainable_parameters`;
# - `get_lora_model`, several adapters on one base, merging $W = W_0 + s\,BA$ for zero added
#   latency, and adapter files.
#
# **Prerequisites**: lesson 01 (autograd, $\partial L/\partial W = G^\top X$), lesson 02 (the
# GPT, its module names, training on a toy task).
#
# **Time**: 45–60 minutes to read and do the exercises; how long it runs (full and
# `MINILORA_FAST=1`, wall and CPU time) is measured in `lessons/README.md`.

# %%
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from minilora import Tensor, no_grad
from minilora.backend import Generator
from minilora.adapters import load_adapter
from minilora.lora import LoraConfig, LoraLinear, get_lora_model, lora_scaling
from minilora.model import GPT, GPTConfig
from minilora.nn import Linear
from minilora.optim import SGD, AdamW
from minilora.train import IGNORE_INDEX, evaluate, train

# One BLAS thread: these matrices are small, so extra threads gain little, and on a busy
# machine a thread waiting for a core makes each product slower (lessons/README.md's times
# were measured so). threadpoolctl sets it for this process only.
threadpool_limits(1)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"  # CI runs every lesson with MINILORA_FAST=1
BASE_STEPS = 40 if FAST else 150  # pre-training the base model (section 5)
ADAPTER_STEPS = 20 if FAST else 150  # training each adapter (sections 6 and 7)
N_EVAL = 128 if FAST else 512  # held-out sequences per task
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. One layer: $h = W_0 x + s\,B A x$
#
# `LoraLinear` wraps a frozen `Linear` (the `base_layer`, holding $W_0$) and adds `lora_A`
# (r, k) and `lora_B` (d, r), stored by adapter name, as in PEFT. The weight layout is
# PyTorch's, (out_features, in_features), so $W_0$ is (d, k) and a batch of inputs is (N, k).

# %%
d, k, r, alpha = 6, 10, 2, 4
base = Linear(k, d)  # W0: (d, k), bias (d,)
base.requires_grad_(False)  # frozen
layer = LoraLinear(base, r=r, lora_alpha=alpha)
A = layer.lora_A["default"].weight  # (r, k)
B = layer.lora_B["default"].weight  # (d, r)
s = layer.scaling["default"]  # alpha / r
print(f"W0 {base.weight.shape}  A {A.shape}  B {B.shape}  scaling s = alpha/r = {s}")

x = Tensor(rng.standard_normal((5, k)), dtype="float32")  # (N, k)
print("B is zero at the start:", not np.any(B.numpy()),
      "| layer(x) == base(x):", np.array_equal(layer(x).numpy(), base(x).numpy()))

# %% [markdown]
# With $B \neq 0$ the layer computes the formula. Note the order of the products: unmerged,
# LoRA computes $B(Ax)$, two thin products ((N, k) → (N, r) → (N, d)), and never forms the
# $d \times k$ matrix $BA$.

# %%
B.data = rng.standard_normal(B.shape).astype(np.float32)  # pretend B has been trained
W0, bias = base.weight, base.bias
h = x @ W0.T + bias + s * ((x @ A.T) @ B.T)  # (N, k) -> (N, r) -> (N, d)
print("max |formula - layer(x)|:", np.abs(h.numpy() - layer(x).numpy()).max())
assert np.allclose(h.numpy(), layer(x).numpy(), atol=1e-5)
assert np.allclose(layer.delta_weight(), s * B.numpy() @ A.numpy())  # ΔW = s B A, (d, k)

# %% [markdown]
# ## 2. The gradients, and why $\partial L/\partial A = 0$ at the first step
#
# Let $G = \partial L/\partial W$ be the gradient full fine-tuning would give the (d, k)
# weight; for a batch, $G = U^\top X$ with $U = \partial L/\partial h$ (lesson 01). Since
# $h$ depends on $A$ and $B$ only through $s\,BA$, the chain rule gives
#
# $$\frac{\partial L}{\partial B} = s\, G A^\top \;\;(d \times r), \qquad
#   \frac{\partial L}{\partial A} = s\, B^\top G \;\;(r \times k).$$
#
# At initialization $B = 0$, so $\partial L/\partial A = 0$ exactly: the first step moves only
# $B$. From the second step on, both move. (If both started at zero, neither would ever move;
# if both started random, the model would not start at $W_0$.)

# %%
layer = LoraLinear(base, r=r, lora_alpha=alpha)  # a fresh adapter: A random, B = 0
A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
U = rng.standard_normal((5, d)).astype(np.float32)  # (N, d): an upstream gradient dL/dh
G = U.T @ x.numpy()  # (d, N) @ (N, k) -> (d, k): dL/dW

layer(x).backward(U)
print("step 1: |dL/dA| max", np.abs(A.grad).max(), "  |dL/dB| max", np.abs(B.grad).max().round(4))
assert not np.any(A.grad) and np.any(B.grad)
assert np.allclose(B.grad, s * G @ A.numpy().T, atol=1e-5)  # (d, k) @ (k, r) -> (d, r)
step1_grad_A = A.grad.copy()

optimizer = SGD(layer.parameters(), lr=0.1)  # holds A and B only (W0 is frozen)
optimizer.step()
optimizer.zero_grad()
layer(x).backward(U)
print("step 2: |dL/dA| max", np.abs(A.grad).max().round(4))
assert np.allclose(A.grad, s * B.numpy().T @ G, atol=1e-5)  # (r, d) @ (d, k) -> (r, k)

# %% [markdown]
# ## 3. Your turn: write `MyLoraLinear`
#
# Everything so far fits in one small class, and now you write it. Open
# `lessons/exercises/ex03.py`: it holds the skeleton of `MyLoraLinear(base_layer, r, lora_alpha)`
# with a docstring for each part. Write the scaling $s = \alpha/r$, $A$ random (r, k) and
# $B = 0$ (d, r) in `__init__`, `forward` as $h = W_0 x + b + s\,B(Ax)$, `delta_weight`
# ($s\,BA$), and `merge` / `unmerge` (section 8). Then grade it:
#
# ```bash
# pytest lessons/checks/test_03.py
# ```
#
# The cell below compares your layer with `LoraLinear` and with the formula once you have
# written it; until then it says so, and the rest of the lesson runs on `LoraLinear` alone.
# (The worked answer is `lessons/solutions/ex03.py`.)
#
# **For the PyTorch reader.** The same layer in PEFT (`peft/tuners/lora/layer.py`) keeps `A`
# and `B` as `nn.Linear` modules in `nn.ModuleDict`s keyed by adapter name, as `LoraLinear`
# does; the lines you write read there as
#
# | here (`MyLoraLinear`) | PEFT (`lora.Linear`) |
# |---|---|
# | `A` uniform in $\pm 1/\sqrt{k}$ | `nn.init.kaiming_uniform_(self.lora_A[name].weight, a=math.sqrt(5))` |
# | `B = 0` | `nn.init.zeros_(self.lora_B[name].weight)` |
# | `scaling = lora_alpha / r` | `self.scaling[name] = lora_alpha / r` |
# | `base_layer(x) + ((x @ A.T) @ B.T) * scaling` | `result = result + lora_B(lora_A(dropout(x))) * scaling` |
# | `weight.data = weight.data + scaling * B @ A` | `base_layer.weight.data += self.get_delta_weight(name)` |

# %%
from exercises.ex03 import MyLoraLinear  # your answer: lessons/exercises/ex03.py

base = Linear(k, d)
base.requires_grad_(False)
try:
    mine = MyLoraLinear(base, r=r, lora_alpha=alpha)
    x_mine = rng.standard_normal((5, k)).astype(np.float32)  # (N, k)
    starts_at_base = np.allclose(mine(Tensor(x_mine)).numpy(), base(Tensor(x_mine)).numpy())
    mine.B.data = rng.standard_normal((d, r)).astype(np.float32)  # pretend B has been trained
    theirs = LoraLinear(base, r=r, lora_alpha=alpha)
    theirs.lora_A["default"].weight.data = mine.A.numpy().copy()
    theirs.lora_B["default"].weight.data = mine.B.numpy().copy()
    formula = (x_mine @ base.weight.numpy().T + base.bias.numpy()
               + alpha / r * (x_mine @ mine.A.numpy().T) @ mine.B.numpy().T)  # (N, d)
    print("MyLoraLinear: starts at the base layer:", starts_at_base,
          "| max |yours - formula|:", np.abs(mine(Tensor(x_mine)).numpy() - formula).max(),
          "| max |yours - LoraLinear|:",
          np.abs(mine(Tensor(x_mine)).numpy() - theirs(Tensor(x_mine)).numpy()).max())
    assert starts_at_base and np.allclose(mine(Tensor(x_mine)).numpy(), formula, atol=1e-5), \
        "your MyLoraLinear does not compute the formula: pytest lessons/checks/test_03.py says where"
except NotImplementedError as todo:
    print(f"MyLoraLinear is not written yet ({todo}); pytest lessons/checks/test_03.py grades it")

# %% [markdown]
# ## 4. The scaling: $\alpha/r$ or $\alpha/\sqrt{r}$
#
# The paper scales $\Delta W x$ by $\alpha/r$ and sets $\alpha$ to the first $r$ it tries, so
# that changing $r$ needs no new learning rate. rsLoRA (Kalajdzievski 2023) points out a
# catch: with $\alpha/r$, large ranks learn slowly. Section 2 shows why, from LoRA's own start
# $B = 0$. Take one SGD step with learning rate $\eta$. Only $B$ moves,
# $B_1 = -\eta\, s\, G A^\top$, so
#
# $$\Delta W_1 = s\, B_1 A = -\eta\, s^2\, G A^\top A .$$
#
# To first order this lowers the loss by $-\langle G, \Delta W_1\rangle = \eta\, s^2
# \lVert G A^\top\rVert_F^2 = \eta\, s^2 \sum_{i=1}^r \lVert G a_i\rVert^2$, a sum over the
# $r$ rows $a_i$ of $A$. Each row is an independent draw with entries of variance
# $\sigma^2 = 1/(3k)$ (Kaiming-uniform), so each term is $\sigma^2\lVert G\rVert_F^2$ on
# average: **the first SGD change scales as $s^2 \cdot r$**. With $s = \alpha/r$ that is
# $\alpha^2/r$: four times the rank, a quarter of the first step. With $s = \alpha/\sqrt{r}$
# (`use_rslora=True`) it is $\alpha^2$ at every rank, so a larger rank can use its extra
# directions. One real SGD step per rank, on a 512 × 512 layer, measured in units of
# $\eta\,\alpha^2\sigma^2\lVert G\rVert_F^2$ (so $\alpha/\sqrt{r}$ should read 1 and
# $\alpha/r$ should read $1/r$):

# %%
d_big = k_big = 512
x_big = Tensor(rng.standard_normal((512, k_big)), dtype="float64")  # (N, k)
U_big = rng.standard_normal((512, d_big))  # (N, d): dL/dh, the same for every r
G_big = U_big.T @ x_big.numpy()  # (d, N) @ (N, k) -> (d, k): dL/dW
eta, lora_alpha = 1e-3, 8
unit = eta * lora_alpha ** 2 * np.sum(G_big ** 2) / (3 * k_big)  # eta alpha^2 sigma^2 |G|^2
print(f"{'r':>4} {'alpha/r':>9} {'alpha/sqrt(r)':>14}")
first_step = {}
for r_i in (1, 4, 16, 64, 256):
    for use_rslora in (False, True):
        big = Linear(k_big, d_big, bias=False, dtype="float64")
        big.requires_grad_(False)
        layer_i = LoraLinear(big, r=r_i, lora_alpha=lora_alpha, use_rslora=use_rslora,
                             generator=Generator(r_i))  # the same A for both scalings
        A_i = layer_i.lora_A["default"].weight.numpy().copy()  # (r, k)
        layer_i(x_big).backward(U_big)
        SGD(layer_i.parameters(), lr=eta).step()
        dW1 = layer_i.delta_weight()  # (d, k): Delta W after the first step
        s_i = layer_i.scaling["default"]
        assert np.allclose(dW1, -eta * s_i ** 2 * G_big @ A_i.T @ A_i)  # -eta s^2 G A^T A
        first_step[r_i, use_rslora] = -np.sum(G_big * dW1) / unit  # -<G, dW1>, in units
    print(f"{r_i:4d} {first_step[r_i, False]:9.4f} {first_step[r_i, True]:14.3f}")

# %% [markdown]
# ## 5. A base model, and `get_lora_model`
#
# To adapt something we first need a pre-trained model. Ours is lesson 02's GPT, pre-trained
# on the simplest task there is: *copy* $x$ after the separator.

# %%
V, L = 16, 8
SEP = V
TASKS = {
    "copy": lambda x: x,
    "plus_one": lambda x: (x + 1) % V,  # each token replaced by the next one
    "mirror": lambda x: V - 1 - x,  # 0 <-> 15, 1 <-> 14, ...
}


def batch(task, rng, n):
    """n sequences [x, SEP, task(x)] as (inputs, targets), each (n, 2L); only task(x) scored."""
    x = rng.integers(0, V, (n, L))  # (n, L)
    seq = np.concatenate([x, np.full((n, 1), SEP), TASKS[task](x)], axis=1)  # (n, 2L + 1)
    inputs, targets = seq[:, :-1], seq[:, 1:].copy()
    targets[:, :L] = IGNORE_INDEX
    return inputs, targets


held_out = {task: [batch(task, np.random.default_rng(10_000), N_EVAL)] for task in TASKS}
config = GPTConfig(vocab_size=V + 1, block_size=2 * L, n_layer=2, n_head=4, n_embd=64)
model = GPT(config, seed=0)
train(model, AdamW(model.parameters(), lr=3e-3, weight_decay=0.0),
      lambda step: batch("copy", np.random.default_rng([0, step]), 64), BASE_STEPS)
print("base model on copy:", evaluate(model, held_out["copy"]))
base_state = {name: w.copy() for name, w in model.state_dict().items()}  # W0, kept for section 9

# %% [markdown]
# A LoRA update on one matrix costs $r(d + k)$ parameters instead of $dk$. For one of
# GPT-3's $12288 \times 12288$ attention matrices at $r = 8$:

# %%
d_model, r_paper = 12_288, 8
print(f"full: {d_model * d_model:,}  LoRA r=8: {r_paper * 2 * d_model:,}  "
      f"({100 * r_paper * 2 * d_model / d_model ** 2:.2f}%)")

# %% [markdown]
# `get_lora_model` replaces each targeted `Linear` by a `LoraLinear` *in place*, freezes every
# base weight, and returns a `LoraModel` (PEFT's `get_peft_model`). `target_modules` selects
# layers by the names of lesson 02. `print_trainable_parameters` prints PEFT's line; the count
# is $n_{layer} \cdot 2 \cdot r\,(C + C)$ for `q_proj` and `v_proj`, each $C \times C$.

# %%
lora_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
probe = held_out["copy"][0][0][:64]  # (64, 2L) token ids
with no_grad():
    before_injection = model(probe).numpy()
lm = get_lora_model(model, lora_config, adapter_name="plus_one")
lm.print_trainable_parameters()
trainable, _ = lm.get_nb_trainable_parameters()
C = config.n_embd
print(f"by hand: {config.n_layer} layers x 2 matrices x r(C + C) = "
      f"{config.n_layer * 2 * lora_config.r * (C + C):,}")
print(lm.model.layers[0].attn)
with no_grad():
    unchanged_at_start = np.array_equal(lm(probe).numpy(), before_injection)
print("unchanged at the start (B = 0):", unchanged_at_start)

# %% [markdown]
# **For the PyTorch reader.** The model-level calls of sections 5 to 9 are PEFT's, name for
# name (`peft/peft_model.py`, `peft/tuners/lora/model.py`):
#
# | here | PEFT |
# |---|---|
# | `get_lora_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))` | `get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))` |
# | `lm.print_trainable_parameters()` | `model.print_trainable_parameters()` |
# | `lm.add_adapter("mirror", config)`, `lm.set_adapter("mirror")` | `model.add_adapter("mirror", config)`, `model.set_adapter("mirror")` |
# | `with lm.disable_adapter():` | `with model.disable_adapter():` |
# | `lm.merge_adapter()`, `lm.unmerge_adapter()`, `lm.merge_and_unload()` | the same three methods |
# | `lm.save_pretrained(folder)`, `load_adapter(base, folder)` | `model.save_pretrained(folder)`, `PeftModel.from_pretrained(base, folder)` |

# %% [markdown]
# ## 6. Training an adapter
#
# The optimizer receives `lm.parameters()` but keeps only what requires grad: the adapter's
# A and B. The task: *plus one*, write $x + 1 \bmod 16$ instead of $x$. The base model gets it
# all wrong at first (it copies).

# %%
before_training = evaluate(lm, held_out["plus_one"])
optimizer = AdamW(lm.parameters(), lr=1e-2, weight_decay=0.0)
print("matrices the optimizer updates:", sum(len(g["params"]) for g in optimizer.param_groups))
history = train(lm, optimizer, lambda step: batch("plus_one", np.random.default_rng([1, step]), 64),
                ADAPTER_STEPS)
after_training = evaluate(lm, held_out["plus_one"])
print(f"plus_one: accuracy {before_training['accuracy']:.3f} -> {after_training['accuracy']:.3f}")
now = {name.replace(".base_layer", ""): p.numpy()  # the wrapped Linear's own names again
       for name, p in lm.model.named_parameters() if "lora_" not in name}
W0_untouched = all(np.array_equal(now[name], w) for name, w in base_state.items())
print("every base weight unchanged after training:", W0_untouched)

# %% [markdown]
# ## 7. Several adapters on one base
#
# One frozen base can carry many adapters: a task, a domain, a user. `add_adapter` adds one
# (inactive), `set_adapter` chooses which one runs and trains. A second task, *mirror*
# ($x \mapsto 15 - x$):

# %%
lm.add_adapter("mirror", lora_config)
lm.set_adapter("mirror")
train(lm, AdamW(lm.parameters(), lr=1e-2, weight_decay=0.0),
      lambda step: batch("mirror", np.random.default_rng([2, step]), 64), ADAPTER_STEPS)

accuracy = {}
with lm.disable_adapter():  # the base model alone
    accuracy["base"] = {task: evaluate(lm, held_out[task])["accuracy"] for task in TASKS}
for name in ("plus_one", "mirror"):
    lm.set_adapter(name)
    accuracy[name] = {task: evaluate(lm, held_out[task])["accuracy"] for task in TASKS}
print(f"{'accuracy':>10}" + "".join(f"{task:>10}" for task in TASKS))
for name, row in accuracy.items():
    print(f"{name:>10}" + "".join(f"{row[task]:10.3f}" for task in TASKS))

# %% [markdown]
# ## 8. Merging: zero added latency
#
# For deployment, store $W = W_0 + s\,BA$ in the base layer: the merged model computes one
# matrix product per layer, exactly what the base model computes. `merge_adapter` does it
# explicitly (nothing merges as a side effect); `unmerge_adapter` subtracts $s\,BA$ again. To
# switch a merged model to another task: unmerge, `set_adapter`, merge.
#
# Unmerged, every adapted layer does two extra thin products, $r(k + d)$ multiply-adds per
# token. Counted over the model's `Linear` layers:

# %%
macs = {name: m.in_features * m.out_features  # multiply-adds per token of each Linear
        for name, m in lm.model.named_modules() if isinstance(m, Linear)}
base_macs = sum(v for name, v in macs.items() if "lora_" not in name)
extra_macs = sum(v for name, v in macs.items() if ".plus_one" in name)  # A and B of one adapter
print(f"per token: base {base_macs:,} multiply-adds, unmerged LoRA adds {extra_macs:,} "
      f"({100 * extra_macs / base_macs:.1f}%), merged adds 0")

# %% [markdown]
# Timed, as an illustration only (timings vary from run to run, and at this size the extra
# products are a small share of the work; on a GPU each extra product is also an extra
# kernel launch, which is what makes unmerged adapters slow at batch size 1):

# %%
def forward_ms(model, idx):
    """Wall time of one forward pass, in milliseconds."""
    with no_grad():
        start = time.perf_counter()
        model(idx)
        return 1000 * (time.perf_counter() - start)


lm.set_adapter("plus_one")
idx = held_out["plus_one"][0][0]  # (N_EVAL, 2L)
with no_grad():
    unmerged_out = lm(idx).numpy()
W0_q = lm.model.layers[0].attn.q_proj.base_layer.weight.numpy().copy()
timings = {"base": [], "unmerged": [], "merged": []}
for _ in range(5):  # interleaved, best of 5: the machine's load affects all three alike
    with lm.disable_adapter():
        timings["base"].append(forward_ms(lm, idx))
    timings["unmerged"].append(forward_ms(lm, idx))
    lm.merge_adapter()  # W <- W0 + s B A in every adapted layer
    timings["merged"].append(forward_ms(lm, idx))
    lm.unmerge_adapter()  # W <- W - s B A
print(f"forward of {N_EVAL} sequences, best of 5:",
      ", ".join(f"{name} {min(t):.1f} ms" for name, t in timings.items()))

lm.merge_adapter()
with no_grad():
    merged_out = lm(idx).numpy()
print("max |merged - unmerged| logits:", np.abs(merged_out - unmerged_out).max())
lm.unmerge_adapter()
W_q_restored = lm.model.layers[0].attn.q_proj.base_layer.weight.numpy()
print("after 6 merge/unmerge cycles, max |W - W0|:", np.abs(W_q_restored - W0_q).max())

# %% [markdown]
# ## 9. Adapter files
#
# An adapter is saved on its own, in PEFT's layout: a folder with `adapter_config.json` and
# `adapter_model.safetensors` holding each layer's A and B. To use it, load the *same* base
# model and the adapter on top (the file records a signature of the base weights and refuses
# a different base).

# %%
with tempfile.TemporaryDirectory() as tmp:
    folder = lm.save_pretrained(Path(tmp) / "plus_one", adapter_name="plus_one")
    for file in sorted(folder.iterdir()):
        print(f"{file.name:28} {file.stat().st_size:8,d} bytes")
    fresh = GPT(config, seed=0)
    fresh.load_state_dict(base_state)  # the same pre-trained W0 ...
    loaded = load_adapter(fresh, folder, adapter_name="plus_one")  # ... plus the file's A, B
with no_grad():
    loaded_out = loaded(idx).numpy()
print("loaded adapter reproduces the trained one:", np.array_equal(loaded_out, unmerged_out))

# %% [markdown]
# Finally, `merge_and_unload` merges and hands back a plain GPT with plain `Linear` layers:
# nothing of LoRA remains at inference time.

# %%
plain = loaded.merge_and_unload()
print(type(plain.layers[0].attn.q_proj).__name__)
with no_grad():
    plain_out = plain(idx).numpy()

# %% [markdown]
# ## Self-checks

# %%
assert not np.any(step1_grad_A)  # B = 0 at init, so dL/dA = 0 at the first step
rs = [first_step[r_i, True] for r_i in (1, 4, 16, 64, 256)]
assert max(rs) / min(rs) < 1.3  # alpha/sqrt(r): the first step's size is the same at every r
for r_i in (1, 4, 16, 64, 256):  # alpha/r: it is alpha^2 / r, 256 times smaller at r = 256
    assert abs(first_step[r_i, False] * r_i / first_step[r_i, True] - 1) < 1e-9
assert trainable == config.n_layer * 2 * lora_config.r * (C + C)
assert unchanged_at_start  # get_lora_model starts exactly at the base model
assert W0_untouched  # training LoRA never changes W0
assert before_training["accuracy"] < 0.2 and history.loss[-1] < history.loss[0]
for name in ("plus_one", "mirror"):  # each adapter is better at its own task than the base
    assert accuracy[name][name] > accuracy["base"][name]
assert extra_macs == trainable  # unmerged: one multiply-add per token per LoRA parameter
assert np.allclose(merged_out, unmerged_out, atol=1e-4)  # merging changes no output
assert np.allclose(W_q_restored, W0_q, atol=1e-6)  # unmerge restores W0
assert np.array_equal(loaded_out, unmerged_out)  # a saved adapter is the trained adapter
assert np.allclose(plain_out, unmerged_out, atol=1e-4)
if not FAST:
    assert accuracy["plus_one"]["plus_one"] > 0.9 and accuracy["mirror"]["mirror"] > 0.9
print("all self-checks passed")

# %% [markdown]
# ## Exercises
#
# Solutions are in `lessons/solutions/03_lora_update.py`.
# Graded: exercises 1-3 (and section 3's `MyLoraLinear`). Write your answers in
# `lessons/exercises/ex03.py` (each function's docstring says what to compute) and run `pytest
# lessons/checks/test_03.py`: a wrong answer fails with what was expected and a hint.
#
# 1. **Other initializations.** Build `LoraLinear` layers with `init_lora_weights="gaussian"`
#    (the paper's Gaussian A) and `init_lora_weights="pissa"` (A and B from the top-r singular
#    vectors of $W_0$, which keeps only the residual). Check that each starts with
#    `layer(x) == base(x)` (to round-off), and find out which of them has
#    $\partial L/\partial A \neq 0$ at the first step, and why.
# 2. **rsLoRA in training.** Train a single `LoraLinear` (base weight zero, $k = d = 64$) with
#    `SGD(lr=0.5)` to fit $Y = X T^\top$ for a fixed random $T$, and compare
#    $\lVert\Delta W\rVert_F$ and the loss after 50 steps for $r \in \{2, 8, 32, 64\}$, with
#    and without `use_rslora` (`lora_alpha=8`). Explain what you see from
#    $\partial L/\partial B = s\,G A^\top$. Does AdamW show the same effect?
# 3. **Adding adapters.** Combine the two adapters with
#    `lm.add_weighted_adapter(["plus_one", "mirror"], [1.0, 1.0], "both", combination_type="cat")`
#    and check, layer by layer, that its $\Delta W$ is the sum of the two adapters' $\Delta W$.
#    What is its rank? Is it a model for a sensible task?
