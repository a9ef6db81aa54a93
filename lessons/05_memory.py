# %% [markdown]
# # Lesson 05: memory and storage
#
# LoRA's practical appeal (Section 4.2 of the paper): for GPT-3 175B it cut training memory
# from 1.2 TB to 350 GB and a task's checkpoint from 350 GB to 35 MB. This lesson redoes the
# paper's arithmetic, then measures the same quantities on our own model, and finds where the
# savings come from and where they do not.
#
# **What you'll learn**
# - the four parts of training memory: weights, gradients, optimizer state, activations, and
#   which of them LoRA shrinks;
# - the paper's GPT-3 numbers from first principles: $2\,\hat L\, d_{model}\, r$ = 18,874,368
#   trainable parameters, Table 5's ranks under that budget, 350 GB vs 35 MB;
# - measuring one training step's memory with `accounting.measure_training_memory`;
# - when LoRA saves most of the memory (wide model, few tokens) and when it saves almost none
#   (activations dominate);
# - adapter files versus full checkpoints on disk.
#
# **Prerequisites**: lesson 03 (`get_lora_model`, adapters); what Adam stores per parameter.
#
# **Time**: 30 minutes to read and do the exercises; how long it runs (full and
# `MINILORA_FAST=1`, wall and CPU time) is measured in `lessons/README.md`.

# %%
import os
import sys
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
from threadpoolctl import threadpool_limits

if "ipykernel" not in sys.modules:  # run as a script: draw into files, open no window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
from safetensors.numpy import save_file

import minilora
from minilora import accounting, fast
from minilora.accounting import format_bytes
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT, GPTConfig
from minilora.optim import AdamW

# One BLAS thread: these matrices are small, so extra threads gain little, and on a busy
# machine a thread waiting for a core makes each product slower (lessons/README.md's times
# were measured so). threadpoolctl sets it for this process only.
threadpool_limits(1)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"  # CI runs every lesson with MINILORA_FAST=1
FIGURES = Path(minilora.__file__).resolve().parents[1] / "figures" / "lessons"

# %% [markdown]
# ## 1. Where training memory goes
#
# One training step with Adam holds, for a model with $P$ parameters of which $P_t$ train:
#
# | part | bytes (16-bit training, fp32 Adam moments) | LoRA changes it? |
# |---|---|---|
# | weights | $2P$ | no: the base is still there (plus a little for A, B) |
# | gradients | $2P_t$ | yes: only A and B get one |
# | optimizer state (Adam's $m$, $v$) | $8P_t$ | yes |
# | activations saved for backward | grows with tokens × width × layers | no (section 3) |
#
# Full fine-tuning has $P_t = P$: $2 + 2 + 8 = 12$ bytes per parameter. LoRA has
# $P_t \ll P$: about 2 bytes per parameter, the frozen weights. Activations stay: the backward
# pass still has to go through every layer to reach the adapters, and it needs what the
# forward pass saved.

# %% [markdown]
# ## 2. The paper's arithmetic, for GPT-3 175B
#
# GPT-3 175B has $d_{model} = 12{,}288$ and 96 layers. LoRA on $\hat L$ square
# $d_{model}\times d_{model}$ matrices trains $2\,\hat L\, d_{model}\, r$ parameters. With
# $W_q$ alone, in all 96 layers, at $r = 8$:

# %%
gpt3 = accounting.PRESETS["gpt3-175b"]
paper = accounting.gpt3_paper_numbers()
by_hand = 2 * 96 * 12_288 * 8
print(f"2 x 96 x 12,288 x 8 = {by_hand:,}  accounting: {paper['wq_r8']:,}")
print(f"Wq, Wv at r = 1: {paper['wq_wv_r1']:,};  at r = 8: {paper['wq_wv_r8']:,}")
print(f"GPT-3 parameters: {paper['total']:,};  "
      f"fp16 checkpoint {format_bytes(paper['checkpoint_bytes'])}")
print(f"the Wq r=8 adapter in fp16: {format_bytes(2 * paper['wq_r8'])} "
      f"= {2 * paper['wq_r8'] / 2 ** 20:.1f} MiB (the paper: '35MB')")

# %% [markdown]
# Table 5 of the paper compares which weights to adapt *at a fixed budget* of these
# 18,874,368 parameters: the more matrices adapted, the smaller the rank each gets.
# `rank_for_budget` finds the largest $r$ that fits:

# %%
budget = paper["wq_r8"]
combinations = [["q_proj"], ["k_proj"], ["v_proj"], ["o_proj"], ["q_proj", "k_proj"],
                ["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"]]
table5_ranks = [accounting.rank_for_budget(gpt3, targets, budget) for targets in combinations]
for targets, r in zip(combinations, table5_ranks):
    count = accounting.lora_parameters(gpt3, targets, r)
    print(f"{', '.join(targets):35} r = {r}  ({count:,} params)")

# %% [markdown]
# Training memory, for the paper's GPT-3 setting ($W_q$ and $W_v$, $r = 4$), with the
# byte counts of section 1 (activations not included):

# %%
setting = accounting.summary(gpt3, ["q_proj", "v_proj"], r=4)
print(f"trainable: {setting['lora_parameters']:,} of {setting['total_parameters']:,} "
      f"({setting['trainable_percent']:.4f}%)")
print(f"full fine-tuning: {format_bytes(setting['full_training_bytes'])};  "
      f"LoRA: {format_bytes(setting['lora_training_bytes'])}  "
      f"(the paper measured 1.2 TB and 350 GB)")

# %% [markdown]
# Our LoRA figure matches the paper's; its full fine-tuning figure is lower than $12P$, so
# its setup must have stored less per parameter than this simple count (it does not say how).
#
# Storage is where the gap is widest. Serving 100 tasks needs 100 full checkpoints, or one
# base and 100 adapters:

# %%
tasks = 100
print(f"{tasks} full checkpoints: {format_bytes(tasks * setting['checkpoint_bytes'])};  "
      f"one base + {tasks} adapters: "
      f"{format_bytes(setting['checkpoint_bytes'] + tasks * setting['adapter_bytes'])}")

# %% [markdown]
# ## 3. Measured on our model
#
# `accounting.measure_training_memory(model, optimizer, inputs, targets)` runs one training
# step under Python's `tracemalloc`, which sees every NumPy allocation, and reports the bytes
# of the parameters, the gradients, the optimizer state, and the activations the graph holds
# after the forward pass. Our engine trains in float32: 4 bytes per weight and per gradient,
# $2 \times 4$ for Adam's moments. We measure with the fast path on (`fast.enabled()`), as
# the experiments and the bench run: it computes a LoRA layer as one fused op (below).
#
# First a setting like GPT-3's, where the weights dominate: a wide model and few tokens per
# step.

# %%
def measure(config, batch, seq, r=8):
    """One AdamW step's memory, full fine-tuning and LoRA (q_proj, v_proj), on the same data."""
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, config.vocab_size, (batch, seq))  # (batch, seq)
    targets = rng.integers(0, config.vocab_size, (batch, seq))
    full = GPT(config, seed=0)
    lm = get_lora_model(GPT(config, seed=0), LoraConfig(r=r, lora_alpha=2 * r))
    results = {}
    for name, model in (("full", full), ("LoRA", lm)):
        optimizer = AdamW(model.parameters())
        with fast.enabled():
            parts = accounting.measure_training_memory(model, optimizer, inputs, targets)
        parts["trainable"] = accounting.count_parameters(model)[0]
        parts["total"] = sum(parts[k] for k in ("parameters", "gradients", "optimizer_state",
                                                  "activations"))
        results[name] = parts
    return results


def show(results):
    print(f"{'':6}{'weights':>10}{'gradients':>11}{'Adam':>10}{'activations':>13}{'total':>10}")
    for name, m in results.items():
        print(f"{name:6}" + "".join(f"{format_bytes(m[k]):>{w}}" for k, w in (
            ("parameters", 10), ("gradients", 11), ("optimizer_state", 10),
            ("activations", 13), ("total", 10))))
    print(f"LoRA / full: {results['LoRA']['total'] / results['full']['total']:.2f}")


wide = GPTConfig(n_embd=128 if FAST else 256, n_layer=4, block_size=32)
wide_batch = 2
weight_bound = measure(wide, batch=wide_batch, seq=16)
show(weight_bound)

# %% [markdown]
# The gradients and Adam's state are *exactly* $4P_t$ and $8P_t$ bytes: LoRA's are those of
# A and B only. In float32 the best LoRA can do is $4/16$ of full fine-tuning's
# $4 + 4 + 8 = 16$ bytes per parameter; with 16-bit weights it would be $2/12$.
#
# Now the opposite regime: a narrow model and many tokens per step. Activations scale with
# batch × sequence × width × layers and do not care which weights train.

# %%
narrow = GPTConfig(n_embd=64, n_layer=4, block_size=32)
narrow_batch = 16 if FAST else 64
activation_bound = measure(narrow, batch=narrow_batch, seq=32)
show(activation_bound)

# %% [markdown]
# Here LoRA saves next to nothing: its activations are about the same as full fine-tuning's.
# The backward pass must still reach every adapted layer through all the layers above it, so
# it needs what their forward passes saved; an adapted layer adds only the thin (N, r)
# intermediate $Ax$ (the fast path computes $W_0 x + s\,B(Ax)$ as one operation,
# `F.lora_linear`, so it keeps no extra (N, out) arrays; the reference layer, a composition of
# three ops, keeps each op's (N, out) output). Large models fine-tuned with LoRA therefore combine
# it with ways of cutting activations (smaller batches with gradient accumulation,
# activation checkpointing).

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
parts = ("parameters", "gradients", "optimizer_state", "activations")
for ax, (title, results) in zip(axes, (
        (f"n_embd {wide.n_embd}, {wide_batch * 16} tokens per step", weight_bound),
        (f"n_embd {narrow.n_embd}, {narrow_batch * 32} tokens per step", activation_bound))):
    bottom = np.zeros(2)
    for part in parts:
        heights = np.array([results[name][part] for name in ("full", "LoRA")]) / 1e6  # MB
        ax.bar(["full", "LoRA"], heights, bottom=bottom, label=part.replace("_", " "))
        bottom += heights
    ax.set(title=title, ylabel="MB")
axes[0].legend()
fig.tight_layout()
if not FAST:
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "05_memory.png", dpi=120)
plt.show()

# %% [markdown]
# ## 4. On disk: an adapter file versus a checkpoint
#
# A full fine-tuned checkpoint stores every parameter; an adapter stores A and B (and a small
# JSON config). Both below are safetensors files of float32 arrays: 4 bytes per number plus a
# header naming the arrays.

# %%
model = GPT(wide, seed=0)
lm = get_lora_model(GPT(wide, seed=0), LoraConfig(r=8, lora_alpha=16))
lora_params = accounting.count_parameters(lm)[0]
with tempfile.TemporaryDirectory() as tmp:
    checkpoint = Path(tmp) / "model.safetensors"
    save_file({name: np.ascontiguousarray(w) for name, w in model.state_dict().items()}, checkpoint)
    adapter = lm.save_pretrained(Path(tmp) / "adapter") / "adapter_model.safetensors"
    checkpoint_bytes, adapter_bytes = checkpoint.stat().st_size, adapter.stat().st_size
print(f"checkpoint: {checkpoint_bytes:,} bytes for {model.num_parameters():,} parameters")
print(f"adapter:    {adapter_bytes:,} bytes for {lora_params:,} parameters "
      f"({100 * adapter_bytes / checkpoint_bytes:.2f}% of the checkpoint)")
print(f"GPT-3, Wq and Wv at r = 4: "
      f"{100 * setting['adapter_bytes'] / setting['checkpoint_bytes']:.4f}% of the checkpoint")

# %% [markdown]
# ## Self-checks

# %%
assert by_hand == paper["wq_r8"] == 18_874_368
assert paper["wq_wv_r1"] == 4_718_592 and paper["wq_wv_r8"] == 37_748_736
assert table5_ranks == [8, 8, 8, 8, 4, 4, 2]  # the r row of the paper's Table 5
assert setting["lora_parameters"] == 2 * 2 * 96 * 12_288 * 4
assert abs(setting["lora_training_bytes"] / 1e9 - 350) < 1  # the paper's 350 GB
for results in (weight_bound, activation_bound):
    for m in results.values():  # float32 gradients and Adam's two moments, trainable only
        assert m["gradients"] == 4 * m["trainable"] and m["optimizer_state"] == 8 * m["trainable"]
assert weight_bound["LoRA"]["total"] < 0.5 * weight_bound["full"]["total"]  # weights dominate
assert activation_bound["LoRA"]["total"] > 0.8 * activation_bound["full"]["total"]  # they don't
assert abs(activation_bound["LoRA"]["activations"] / activation_bound["full"]["activations"]
           - 1) < 0.05  # about the same activations
assert checkpoint_bytes >= 4 * model.num_parameters() and adapter_bytes >= 4 * lora_params
assert adapter_bytes < 4 * lora_params + 10_000  # the rest is a small header
print("all self-checks passed")

# %% [markdown]
# ## Exercises
#
# Solutions are in `lessons/solutions/05_memory.py`.
# Graded: exercises 1-3. Write your answers in `lessons/exercises/ex05.py` (each function's
# docstring says what to compute) and run `pytest lessons/checks/test_05.py`: a wrong answer
# fails with what was expected and a hint.
#
# 1. **LLaMA-2 7B.** With the `llama2-7b` preset ($d_{model} = 4096$, 32 layers, a gated MLP
#    of width 11,008), how many parameters does LoRA train with `target_modules="all-linear"`
#    at $r = 16$? Check `accounting.lora_parameters` by hand with $r(d_{in} + d_{out})$ per
#    matrix, and give the adapter's size in fp16.
# 2. **A 4-bit base (QLoRA's idea).** Using `accounting.training_memory(total, trainable,
#    weight_bytes=..., ...)`, estimate LoRA's training memory for GPT-3 ($W_q$, $W_v$,
#    $r = 4$) if the frozen weights took 0.5 bytes per parameter instead of 2 (the adapter's
#    own weights can stay 16-bit: count them separately). What now dominates?
# 3. **The crossover.** For the wide model of section 3, increase the number of tokens per
#    step (batch × 16) and find where LoRA's measured total stops being under half of full
#    fine-tuning's.
