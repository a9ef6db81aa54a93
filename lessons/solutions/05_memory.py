# %% [markdown]
# # Solutions to lesson 05: memory and storage
#
# `python lessons/solutions/05_memory.py` runs and checks them (`MINILORA_FAST=1`: a smaller
# model and fewer batch sizes in exercise 3).
#
# The answers the checks grade are in `ex05.py` beside this file (the same names as in
# `lessons/exercises/ex05.py`); this script runs them and explains what they show.
# `MINILORA_ANSWERS=lessons/solutions pytest lessons/checks/test_05.py` grades them.

# %%
import os

from threadpoolctl import threadpool_limits

from ex05 import all_linear_lora_parameters, lora_to_full_ratio, qlora_training_bytes  # ex05.py
from minilora import accounting
from minilora.accounting import format_bytes
from minilora.model import GPTConfig

threadpool_limits(1)  # one BLAS thread, as in the lessons (see their first code cell)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"

# %% [markdown]
# ## 1. LLaMA-2 7B
#
# "all-linear" adapts every Linear of a block but `lm_head`: four attention matrices
# $4096 \times 4096$, `gate_proj` and `up_proj` ($11008 \times 4096$) and `down_proj`
# ($4096 \times 11008$). Each costs $r(d_{in} + d_{out})$.

# %%
llama = accounting.PRESETS["llama2-7b"]
by_hand = all_linear_lora_parameters(4096, 11_008, 32, 16)  # d_model, d_ff, n_layer, r
computed = accounting.lora_parameters(llama, "all-linear", 16)
total_llama = llama.total_parameters()
print(f"by hand {by_hand:,}, accounting {computed:,}; "
      f"adapter in fp16: {format_bytes(2 * computed)}")
print(f"{100 * computed / total_llama:.3f}% of {total_llama:,} parameters")
assert by_hand == computed == 39_976_960

# %% [markdown]
# ## 2. A 4-bit base
#
# The frozen weights at 0.5 bytes each; the adapter's own weights, gradients and Adam state at
# $2 + 2 + 8 = 12$ bytes per trainable parameter. The base still dominates what is counted,
# but it is now 4× smaller; at real batch sizes the activations (not counted here) become the
# largest part.

# %%
gpt3 = accounting.PRESETS["gpt3-175b"]
total = gpt3.total_parameters()
trainable = accounting.lora_parameters(gpt3, ["q_proj", "v_proj"], 4)
base_4bit = accounting.training_memory(total, 0, weight_bytes=0.5)["total"]  # weights only
adapters = accounting.training_memory(trainable, trainable)["total"]  # 12 bytes each
assert qlora_training_bytes(total, trainable) == base_4bit + adapters  # ex05.py
base_16bit = accounting.training_memory(total + trainable, trainable)["total"]
print(f"4-bit base {format_bytes(base_4bit)} + adapters with Adam {format_bytes(adapters)} "
      f"= {format_bytes(base_4bit + adapters)}  (16-bit base: {format_bytes(base_16bit)})")
assert base_4bit + adapters < 0.26 * base_16bit
assert base_4bit > 100 * adapters

# %% [markdown]
# ## 3. The crossover
#
# The weights' share is fixed, the activations grow with the tokens per step; LoRA's total
# approaches full fine-tuning's as tokens grow. (With `MINILORA_FAST=1` the model is narrower,
# so the crossover comes earlier.)

# %%
config = GPTConfig(n_embd=128 if FAST else 256, n_layer=4, block_size=32)
batches = (2, 8, 32) if FAST else (2, 4, 8, 16, 32, 64)
ratios = {}
for batch in batches:
    ratios[batch] = lora_to_full_ratio(config, batch)  # ex05.py: measured, LoRA over full
    print(f"{batch * 16:5d} tokens per step: LoRA / full = {ratios[batch]:.2f}")
crossover = next((b for b in batches if ratios[b] >= 0.5), None)
print("LoRA stops being under half of full fine-tuning at",
      f"{crossover * 16} tokens per step" if crossover else "none of these sizes")
values = [ratios[b] for b in batches]
assert values[0] < 0.5 and all(a < b for a, b in zip(values, values[1:]))  # grows with tokens
