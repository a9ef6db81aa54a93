# %% [markdown]
# # Lesson 10: one engine, any array library (and a GPU)
#
# Everything minilora computes goes through one object, `minilora.backend.xp`: NumPy by
# default, CuPy on a GPU, or any library that implements the Python array API standard. This
# lesson looks at that seam, proves on a laptop that the engine really uses nothing else (by
# running it on a namespace that refuses everything outside the standard), and shows how to
# move the same training run onto a GPU.
#
# **What you'll learn**
# - the backend seam: `backend.xp`, `backend.use(...)`, explicit host transfers
#   (`from_numpy`, `to_numpy`) and why the random generator draws on the host;
# - why "works with NumPy" does not mean "works on a GPU", and how a strict namespace
#   (`array_api_strict`) catches a stray NumPy call without a GPU;
# - that the same seeded LoRA training run gives the same losses on both namespaces;
# - NumPy-only idioms (`np.add.at`) and their portable forms (`backend.scatter_add`);
# - selecting CuPy, and timing on a GPU (`backend.synchronize()`).
#
# **Prerequisites**: lessons 01–03 (the `Tensor`, the GPT, `get_lora_model`).
#
# **Time**: 30 minutes to read and do the exercises; how long it runs (full and
# `MINILORA_FAST=1`, wall and CPU time) is measured in `lessons/README.md`.
# `array_api_strict` comes with the test extra (`pip install -e ".[test]"`).

# %%
import os
import time

import array_api_strict as strict
import numpy as np
from threadpoolctl import threadpool_limits

from minilora import backend
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT, GPTConfig
from minilora.optim import AdamW
from minilora.train import train

# One BLAS thread: these matrices are small, so extra threads gain little, and on a busy
# machine a thread waiting for a core makes each product slower (lessons/README.md's times
# were measured so). threadpoolctl sets it for this process only.
threadpool_limits(1)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"  # CI runs every lesson with MINILORA_FAST=1
STEPS = 5 if FAST else 20  # training steps in section 3

# %% [markdown]
# ## 1. The seam
#
# An engine module never writes `np.exp` or `np.matmul`; it writes `xp.exp` and `xp.matmul`,
# and `xp` forwards each name to the namespace chosen with `backend.use`. Arrays cross between
# the host (NumPy, files, plots) and the backend only through two explicit calls.

# %%
from minilora.backend import xp  # noqa: E402  (imported here to show where it comes from)

print("active namespace:", backend.current(), xp)
a = backend.from_numpy(np.arange(6.0).reshape(2, 3), "float32")  # host -> backend
b = xp.exp(a) @ xp.ones((3, 1), dtype=a.dtype)  # (2, 3) @ (3, 1): backend work
print("back on the host:", backend.to_numpy(b).ravel())  # backend -> host

# %% [markdown]
# Random numbers are drawn on the host by NumPy's PCG64 (`backend.Generator`) and then moved
# to the backend. CuPy's own generator would give other numbers for the same seed; drawing on
# the host makes "same seed, same numbers" hold on every backend.

# %%
g_numpy = backend.Generator(0).normal((3,))
backend.use(strict)
g_strict = backend.Generator(0).normal((3,))
print("strict namespace:", backend.current(), type(g_strict).__module__)
backend.use("numpy")
print("same draws on both:", np.asarray(g_numpy), np.asarray(backend.to_numpy(g_strict)))

# %% [markdown]
# ## 2. Why NumPy is not proof enough
#
# NumPy is forgiving: its functions convert anything array-like. CuPy is not: it refuses
# implicit conversion of its arrays to NumPy's, and NumPy-only functions (`np.add.at`,
# in-place fancy indexing) do not exist there.
# Code that only ever ran on NumPy can hide such calls. `array_api_strict` implements the
# standard and nothing more, and it refuses to mix with NumPy arrays, just as CuPy does: a
# stray NumPy call on a strict array yields an ndarray, and the next operation that mixes the
# two raises `TypeError`.

# %%
backend.use(strict)
s = xp.asarray([1.0, 2.0])
stray = np.exp(s)  # NumPy converts silently: this is the bug we want to catch
try:
    s + stray
    caught = None
except TypeError as err:
    caught = err
print("mixing a strict array with NumPy's:", type(caught).__name__, "-", caught)
backend.use("numpy")

# %% [markdown]
# The embedding's backward is a classic NumPy-only idiom: adding many gradient rows into a
# table where indices repeat, `np.add.at(table, ids, rows)`. The portable form is
# `backend.scatter_add`: on NumPy a sort and `add.reduceat` (faster than `add.at`), elsewhere a
# one-hot matrix product, which only needs the standard.

# %%
ids = np.array([2, 0, 2, 1])
rows = np.arange(8.0).reshape(4, 2)
by_add_at = np.zeros((3, 2))
np.add.at(by_add_at, ids, rows)
backend.use(strict)
portable = backend.scatter_add((3, 2), xp.asarray(ids), xp.asarray(rows), xp.float64)
backend.use("numpy")
print("np.add.at:\n", by_add_at, "\nscatter_add on the strict namespace:\n",
      np.asarray(backend.to_numpy(portable)))

# %% [markdown]
# ## 3. The same training run on two namespaces
#
# Build the model *after* `backend.use` (arrays made before a switch stay where they were),
# then train exactly as in lesson 03. The data are made on the host and handed over with
# `from_numpy`. Both runs use float32 and the same seed. `array_api_strict` computes with
# NumPy underneath, so here the losses agree exactly; on CuPy they agree to float32 rounding
# (a GPU adds in another order).

# %%
def lora_run(namespace) -> list[float]:
    backend.use(namespace)
    try:
        cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=32)
        tokens = np.random.default_rng(0).integers(0, 11, (8, 8))
        x = backend.from_numpy(tokens, "int64")
        lm = get_lora_model(GPT(cfg, seed=0), LoraConfig(r=4, target_modules="all-linear"),
                            seed=1)
        history = train(lm, AdamW(lm.parameters(), lr=1e-2), lambda step: (x, x), STEPS)
        return history.loss
    finally:
        backend.use("numpy")


start = time.perf_counter()
loss_numpy = lora_run("numpy")
loss_strict = lora_run(strict)
print(f"{STEPS} LoRA steps on each namespace in {time.perf_counter() - start:.2f} s")
for step in (0, STEPS - 1):
    print(f"step {step}: numpy {loss_numpy[step]:.6f}   strict {loss_strict[step]:.6f}")
largest = max(abs(a - b) / abs(a) for a, b in zip(loss_numpy, loss_strict))
print(f"largest relative difference: {largest:.1e}")

# %% [markdown]
# ## 4. On a GPU
#
# With a CUDA GPU and `pip install -e ".[gpu]"` (CuPy and `array-api-compat`), the same code
# runs there after `backend.use("cupy")`, or with `MINILORA_BACKEND=cupy` set before Python
# starts. Without CuPy or a GPU, the call fails with an error that says what to install.
#
# A GPU runs its kernels asynchronously: `step()` returns when the work is *queued*. A timer
# must wait for the queue first, which is what `backend.synchronize()` does (and nothing on
# the CPU). `minilora bench` uses it; so does the timing below, which runs only where CuPy
# works.

# %%
try:
    backend.use("cupy")
    on_gpu = True
except RuntimeError as err:
    on_gpu = False
    print("no GPU here:", err)
finally:
    backend.use("numpy")


def step_time(namespace, n_embd: int = 256, n_layer: int = 4, repeats: int = 3) -> float:
    """Seconds per LoRA training step, after one warm-up step (allocations, GPU kernels)."""
    backend.use(namespace)
    try:
        cfg = GPTConfig(vocab_size=64, block_size=64, n_layer=n_layer, n_head=4, n_embd=n_embd)
        x = backend.from_numpy(np.random.default_rng(0).integers(0, 64, (16, 64)), "int64")
        lm = get_lora_model(GPT(cfg, seed=0), LoraConfig(r=8), seed=1)
        opt = AdamW(lm.parameters(), lr=1e-3)
        train(lm, opt, lambda step: (x, x), 1)  # warm-up
        backend.synchronize()
        start = time.perf_counter()
        train(lm, opt, lambda step: (x, x), repeats)
        backend.synchronize()  # wait for the GPU's queue before reading the clock
        return (time.perf_counter() - start) / repeats
    finally:
        backend.use("numpy")


if on_gpu:
    cpu, gpu = step_time("numpy"), step_time("cupy")
    print(f"LoRA step, d_model 256, 4 layers: numpy {1e3 * cpu:.1f} ms, cupy {1e3 * gpu:.1f} ms "
          f"({cpu / gpu:.1f}x)")

# %% [markdown]
# **For the PyTorch reader.** PyTorch moves *tensors* between devices (`model.to("cuda")`,
# `x.to("cuda")`, `x.cpu().numpy()`); minilora switches the *namespace* the engine calls
# (`backend.use("cupy")`, then build the model; `backend.to_numpy(x)` to come back). The
# effect is the same rule as section 2's exercise: every array of a computation must live on
# one device, and a model lives where its arrays were made.

# %% [markdown]
# ## Self-checks

# %%
assert backend.current() == "numpy"  # every section switched back
assert np.array_equal(np.asarray(g_numpy), np.asarray(backend.to_numpy(g_strict)))
assert isinstance(caught, TypeError)  # the strict namespace caught the stray NumPy call
assert np.allclose(np.asarray(backend.to_numpy(portable)), by_add_at)
assert loss_numpy[-1] < loss_numpy[0]  # the run learns
assert largest < 1e-5  # and both namespaces agree (here exactly: strict runs on NumPy)
print("all self-checks passed")

# %% [markdown]
# ## Exercises
#
# Solutions are in `lessons/solutions/10_backends.py`.
# Graded: exercise 1 (2 is an observation, 3 needs a GPU). Write your answers in
# `lessons/exercises/ex10.py` (each function's docstring says what to compute) and run `pytest
# lessons/checks/test_10.py`: a wrong answer fails with what was expected and a hint.
#
# 1. **Catch a NumPy-only call.** Write `bincount_rows(ids, rows, n)` that sums `rows` into
#    `n` buckets with `np.add.at`, run it on the strict namespace and see it fail; then rewrite
#    it with `backend.scatter_add` so that it gives the same numbers on both namespaces.
# 2. **Switching too late.** Build a GPT on NumPy, *then* call `backend.use(strict)` and run
#    a forward pass on a batch made with `from_numpy`. What happens, and what does it tell you
#    about where a model's arrays live?
# 3. **Where a GPU starts to pay** (needs a GPU). With `step_time`, find the smallest
#    `n_embd` at which CuPy beats NumPy for 4 layers; explain why tiny models are faster on
#    the CPU (kernel launch overhead against arithmetic).
