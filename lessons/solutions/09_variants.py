# %% [markdown]
# # Solutions to lesson 09: after LoRA
#
# `python lessons/solutions/09_variants.py` runs and checks them (`MINILORA_FAST=1`: a smaller
# weight matrix and the small base model).
#
# The answers the checks grade are in `ex09.py` beside this file (the same names as in
# `lessons/exercises/ex09.py`); this script runs them and explains what they show.
# `MINILORA_ANSWERS=lessons/solutions pytest lessons/checks/test_09.py` grades them.

# %%
import os
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from ex09 import fp4_values, nf4_tradeoff  # this folder's ex09.py
from minilora import tasks
from minilora.variants import quantize
from minilora.experiments.config import FULL, QUICK
from minilora.experiments.pretrain import load_or_pretrain
from minilora.variants.linear4bit import BitsAndBytesConfig, quantize_model
from minilora.lora import LoraConfig, get_lora_model
from minilora.tensor import no_grad

threadpool_limits(1)  # one BLAS thread, as in the lessons (see their first code cell)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"
SETUP = QUICK if FAST else FULL
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. FP4 by hand
#
# 16 bit patterns (sign, 2 exponent bits, 1 mantissa bit). With $e = 0$ the value is subnormal,
# $m/2$: 0 or 0.5. Otherwise $2^{e-1}(1 + m/2)$: 1, 1.5, 2, 3, 4, 6. Divided by the largest, 6.
# $+0$ and $-0$ are the same number, so there are 15 distinct values, not 16: one code is
# wasted (NF4 avoids that by giving the positive side one value more).

# %%
values = fp4_values()  # ex09.py: the 16 patterns by hand, as a sorted list of distinct values
print(f"16 bit patterns, {len(values)} distinct values: {values}")
assert values == quantize.create_fp4_map()
assert len(values) == 15

# %% [markdown]
# ## 2. Block size
#
# Smaller blocks follow the local scale of the weights more closely (less error) but store more
# constants (more bits). With double quantization each block costs $8 + 32/256$ bits.

# %%
W = rng.standard_normal((128, 128) if FAST else (256, 256)).astype(np.float32)
rows = []
for blocksize in (16, 32, 64, 128, 256, 1024):
    rows.append((blocksize, *nf4_tradeoff(W, blocksize)))  # (block, error, bits)
    print(f"block {blocksize:5d}: relative error {rows[-1][1]:.4f}, "
          f"{rows[-1][2]:.4f} bits per parameter")
errors, bits = [row[1] for row in rows], [row[2] for row in rows]
assert all(a < b for a, b in zip(errors, errors[1:]))  # larger blocks: more error ...
assert all(a > b for a, b in zip(bits, bits[1:]))  # ... and fewer bits

# %% [markdown]
# Halving the block from 64 to 32 costs an eighth of a bit per parameter (3% more memory) and
# buys a few percent less error; going from 64 to 16 costs more than a third of a bit. QLoRA's
# 64 is near the point where the constants start to cost more than they save.
#
# ## 3. Merging into a 4-bit base

# %%
bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                         bnb_4bit_use_double_quant=True)
idx = np.asarray(tasks.eval_set("rev", 64)[0][0])  # (64, 17) token ids
results = {}
for name in ("fp32", "nf4"):
    model = load_or_pretrain(SETUP.base)[0]
    if name == "nf4":
        quantize_model(model, bnb)
    lm = get_lora_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False), seed=1)
    layer = lm.model.layers[0].attn.q_proj
    W_before = layer.base_layer.weight.data.copy()  # W0 as stored (dequantized for nf4)
    exact = W_before + layer.delta_weight()  # what merging should store
    with no_grad():
        unmerged = lm(idx).numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm.merge_adapter()
    with no_grad():
        merged = lm(idx).numpy()
    stored = layer.base_layer.weight.data
    results[name] = {"output": np.abs(merged - unmerged).max(),
                     "weight": np.abs(stored - exact).max(), "warned": len(caught) > 0}
    print(f"{name}: max |merged - unmerged| logits {results[name]['output']:.2e}, "
          f"max |stored W - (W0 + ΔW)| {results[name]['weight']:.2e}, "
          f"warning: {results[name]['warned']}")
W0 = load_or_pretrain(SETUP.base)[0].layers[0].attn.q_proj.weight.numpy()
W0_q = np.asarray(quantize.dequantize_4bit(*quantize.quantize_4bit(W0, 64, True, "nf4")))
print(f"4-bit rounding of W0 itself: max |W0 - dequant(quant(W0))| {np.abs(W0 - W0_q).max():.2e}")

# %% [markdown]
# On the fp32 base the merged model computes what the unmerged one did, to float round-off.
# On the 4-bit base, `merge` must store $W_0 + \Delta W$ in 4 bits, so it quantizes the sum
# again: the stored weight differs from the exact sum by up to half a code gap times the
# block's absmax, the same order as the rounding of $W_0$ itself (the sum's blocks have larger
# absmax, so a little more). That is why QLoRA keeps adapters unmerged at inference, or merges
# into a 16-bit copy of the base.

# %%
assert results["fp32"]["output"] < 1e-4 and not results["fp32"]["warned"]
assert results["nf4"]["warned"] and results["nf4"]["output"] > 10 * results["fp32"]["output"]
assert results["nf4"]["weight"] < 10 * np.abs(W0 - W0_q).max()
