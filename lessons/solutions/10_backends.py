# %% [markdown]
# # Solutions to lesson 10: one engine, any array library
#
# `python lessons/solutions/10_backends.py` runs and checks them. Exercise 3 needs a GPU; its
# solution runs only where CuPy works.
#
# The answers the checks grade are in `ex10.py` beside this file (the same names as in
# `lessons/exercises/ex10.py`); this script runs them and explains what they show.
# `MINILORA_ANSWERS=lessons/solutions pytest lessons/checks/test_10.py` grades them.

# %%
import time

import array_api_strict as strict
import numpy as np
from threadpoolctl import threadpool_limits

import minilora
from ex10 import bincount_rows  # this folder's ex10.py
from minilora import backend
from minilora.model import GPT, GPTConfig

threadpool_limits(1)  # one BLAS thread, as in the lessons (see their first code cell)

# %% [markdown]
# ## 1. Catch a NumPy-only call
#
# `np.add.at` is a NumPy function: given a strict array it converts it to an ndarray and adds
# into the NumPy table, so the result is no longer a backend array, and the first operation
# that mixes it with one raises. `backend.scatter_add` does the same sum with standard
# operations only.

# %%
def bincount_rows_numpy_only(ids, rows, n):
    table = np.zeros((n, rows.shape[1]))
    np.add.at(table, ids, rows)
    return table


ids_host, rows_host = np.array([0, 3, 0, 1, 3]), np.arange(10.0).reshape(5, 2)
backend.use(strict)
try:
    xp = backend.xp
    ids, rows = xp.asarray(ids_host), xp.asarray(rows_host)
    failed = None
    try:
        rows[:4, :] + bincount_rows_numpy_only(ids, rows, 4)  # mixing: the stray call shows
    except (TypeError, ValueError) as err:
        failed = err
    portable = np.asarray(backend.to_numpy(bincount_rows(ids, rows, 4)))
finally:
    backend.use("numpy")
print("numpy-only version on the strict namespace:", type(failed).__name__, failed)
print("portable version:", portable.tolist())
assert failed is not None
assert np.array_equal(portable, bincount_rows_numpy_only(ids_host, rows_host, 4))
assert np.array_equal(bincount_rows(ids_host, rows_host, 4), portable)  # and on NumPy

# %% [markdown]
# ## 2. Switching too late
#
# The model's weights were made while NumPy was active, so they are NumPy arrays; the batch is
# a strict array. The first product mixes the two and fails: a model lives where its arrays
# were made. Switch first, then build (or rebuild) the model; to move a trained model, save
# its `state_dict`, switch, build a new model and load the state dict into it.

# %%
cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
model = GPT(cfg, seed=0)  # made on NumPy
backend.use(strict)
try:
    x = backend.from_numpy(np.zeros((1, 4), dtype=np.int64), "int64")
    error = None
    try:
        model(x)
    except (TypeError, ValueError) as err:
        error = err
    moved = GPT(cfg, seed=0)  # built after the switch: lives on the strict namespace
    moved.load_state_dict(model.state_dict())
    out = np.asarray(backend.to_numpy(moved(x).data))
finally:
    backend.use("numpy")
print("forward with a model built before the switch:", type(error).__name__, error)
assert error is not None
assert np.allclose(out, model(np.zeros((1, 4), dtype=np.int64)).numpy())

# %% [markdown]
# ## 3. Where a GPU starts to pay
#
# Each operation on a GPU costs a kernel launch (microseconds) whatever its size, and a tiny
# model is nothing but tiny operations: the CPU wins. As the width grows, the arithmetic grows
# as d² per token while the number of launches stays the same, and the GPU overtakes. The
# loop below finds the crossover where a GPU is present.

# %%
try:
    backend.use("cupy")
    on_gpu = True
except RuntimeError:
    on_gpu = False
finally:
    backend.use("numpy")
if on_gpu:
    import importlib.util
    import pathlib

    path = pathlib.Path(minilora.__file__).resolve().parents[1] / "lessons" / "10_backends.py"
    spec = importlib.util.spec_from_file_location("lesson10", path)
    lesson = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lesson)
    for n_embd in (32, 64, 128, 256, 512):
        start = time.perf_counter()
        cpu, gpu = lesson.step_time("numpy", n_embd), lesson.step_time("cupy", n_embd)
        print(f"n_embd {n_embd}: numpy {1e3 * cpu:.1f} ms, cupy {1e3 * gpu:.1f} ms")
        if gpu < cpu:
            print(f"CuPy is faster from n_embd = {n_embd}")
            break
else:
    print("exercise 3 needs a GPU (pip install -e '.[gpu]' on a CUDA machine)")
print("all solutions checked")
