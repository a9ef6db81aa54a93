# %% [markdown]
# # Solutions to lesson 11: making it fast
#
# `python lessons/solutions/11_fast.py` runs and checks them (`MINILORA_FAST=1`: smaller
# sizes, fewer repeats). Exercises 2 and 3 are observations of your machine: the numbers
# printed here are yours, and the text says how to read them, not what they are.
#
# The answer the checks grade is in `ex11.py` beside this file (the same name as in
# `lessons/exercises/ex11.py`); this script runs it and explains it.
# `MINILORA_ANSWERS=lessons/solutions pytest lessons/checks/test_11.py` grades it.

# %%
import os
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import minilora.functional as F
from ex11 import my_lora_linear  # this folder's ex11.py
from minilora import Tensor, backend, fast
from minilora.backend import Generator
from minilora.bench.ops import handoff_seconds, time_side_by_side
from minilora.bench.steps import CONFIGS
from minilora.fast import threads
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT
from minilora.optim import AdamW

threadpool_limits(1)  # one BLAS thread, except where exercise 2 sets the threads itself
FAST = os.environ.get("MINILORA_FAST", "0") != "0"
REPEATS, MIN_SAMPLE_S = (2, 0.0) if FAST else (5, 0.2)
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

# %% [markdown]
# ## 1. A fused kernel
#
# `ex11.my_lora_linear` computes $u = xA^\top$ (the only array it keeps), $h = xW_0^\top$,
# adds $b$ and $(u\,s)B^\top$ into $h$ in place, and its backward forms $g_u = (gB)\,s$ once
# and uses it for both $dx$ and $dA$. Which gradients are the reference's to the bit? The
# reference is the composition `linear(x, W0, b) + linear(linear(x, A) * s, B)`: its autograd
# multiplies $gB$ by $s$ on the way back (the same as $g_u$), so $dx$ and $dA$ take the same
# steps; but it computes $dB = g^\top (u\,s)$, where the fused op computes $(g^\top u)\,s$,
# the same sum with the scaling applied at another point, so $dB$ agrees only to rounding.
# Measured, with the worked answer, on one thread:

# %%
rng = np.random.default_rng(0)
shapes = {"x": (4, 16, 32), "W0": (24, 32), "b": (24,), "A": (4, 32), "B": (24, 4)}
g = rng.normal(size=(4, 16, 24)).astype("float32")
inputs = {k: rng.normal(size=s).astype("float32") for k, s in shapes.items()}


def grads(op):
    t = {k: Tensor(v, requires_grad=k != "W0") for k, v in inputs.items()}
    out = op(t["x"], t["W0"], t["b"], t["A"], t["B"], 0.7)
    out.backward(g)
    return {"h": out.data} | {f"d{k}": t[k].grad for k in ("x", "b", "A", "B")}


with fast.enabled(False):
    reference, mine = grads(F.lora_linear), grads(my_lora_linear)
bits = {}
for name in reference:
    bits[name] = bool(np.array_equal(reference[name], mine[name]))
    gap = np.max(np.abs(reference[name] - mine[name])) / np.max(np.abs(reference[name]))
    print(f"{name:3s}: bit for bit {'yes' if bits[name] else 'no '}  largest relative gap {gap:.1e}")

# %% [markdown]
# ## 2. Where threads pay
#
# One LoRA step at two sizes, with one thread and with all cores, on the fast path; beside
# it the hand-off time (what sharing one region costs) times the regions of a step. The
# fast path has about one region per op that shares its rows (each Linear's forward and
# backward, GELU, layer norm, attention, AdamW): we count them by wrapping `threads.share`.

# %%
def lora_step(config):
    cfg, batch = CONFIGS[config]
    model = get_lora_model(GPT(cfg, seed=0), LoraConfig(r=8, lora_alpha=8,
                                                        target_modules=["q_proj", "v_proj"]),
                           seed=0)
    opt, gen = AdamW(model.parameters(), lr=1e-3), Generator(1)
    x, y = (gen.integers(0, cfg.vocab_size, (batch, cfg.block_size)) for _ in range(2))

    def step():
        with fast.enabled():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return step


def regions_per_step(config):
    """How many times one fast step calls threads.share (each may hand work to a thread)."""
    count, share = [0], threads.share

    def counting(*args):
        count[0] += 1
        return share(*args)

    step = lora_step(config)
    threads.share = counting
    try:
        step()
    finally:
        threads.share = share
    return count[0]


def at(n, fn):
    def run():
        threads.set_num_threads(n)
        with threadpool_limits(n):
            fn()
    return run


CONFIGS_2 = ("tiny", "sweep") if FAST else ("sweep", "small")
threads.set_num_threads(CORES)
handoff = handoff_seconds(REPEATS, MIN_SAMPLE_S)
threads.set_num_threads(1)
paid = {}
for config in CONFIGS_2:
    regions = regions_per_step(config)
    if CORES == 1:
        print(f"{config}: one core, nothing to share ({regions} regions per step)")
        continue
    t = time_side_by_side({n: at(n, lora_step(config)) for n in (1, CORES)}, REPEATS,
                          MIN_SAMPLE_S)
    threads.set_num_threads(1)
    paid[config] = t[1] / t[CORES]
    print(f"{config:>6s}: 1 thread {1e3 * t[1]:7.2f} ms, {CORES} threads {1e3 * t[CORES]:7.2f} ms "
          f"({paid[config]:.2f}x); {regions} regions x hand-off {1e6 * handoff:.0f} µs = "
          f"{1e3 * regions * handoff:.2f} ms")

# %% [markdown]
# How to read it: a second thread can at best halve the work that is shared, and each region
# costs about one hand-off whether or not the work was worth sharing (the fast path keeps
# work under `threads.MIN_WORK` on the caller's thread, so small regions cost little). Where
# the step's time is not well above regions × hand-off, the threads cannot pay; on a machine
# shared with other work, a woken thread may also wait for a core, which no count predicts.

# %% [markdown]
# ## 3. The block size
#
# A block of `threads.BLOCK` float32 elements and the few temporaries of GELU's in-place steps
# (the kernel keeps about three arrays of the block's size live at once: the input rows, the
# tanh values, the output rows) should fit in the core's L2 cache.

# %%
cache = Path("/sys/devices/system/cpu/cpu0/cache")
levels = {}
for index in sorted(cache.glob("index*")) if cache.exists() else []:
    level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
    if kind in ("Data", "Unified"):
        levels[f"L{level}"] = (index / "size").read_text().strip()
block_bytes = 3 * threads.BLOCK * 4
print(f"threads.BLOCK = {threads.BLOCK} elements: about {block_bytes / 2**20:.1f} MiB live "
      f"per block; caches of this core: {levels or 'not readable here'}")

# %% [markdown]
# ## Self-checks

# %%
assert not backend.kernels
assert all(bits[name] for name in ("h", "dx", "db", "dA"))  # the same steps: the same bits
assert np.allclose(reference["dB"], mine["dB"], rtol=2e-5, atol=2e-5)  # dB: to rounding
assert handoff is None or handoff > 0
print("all self-checks passed")
