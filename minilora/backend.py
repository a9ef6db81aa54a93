"""The one array seam: which namespace the engine computes with, random numbers, host transfer.

Every array the engine creates or computes goes through ``xp``, an object that forwards each
attribute to the active array namespace::

    from minilora.backend import xp
    y = xp.exp(x)            # numpy.exp today, cupy.exp after use("cupy")

The engine writes its code against the Python array API standard (``xp.permute_dims``,
``xp.concat``, ``xp.astype``, ``x.mT``), which NumPy >= 2 implements natively. That is what lets
the same code run on CuPy, and what the strict namespace in the tests enforces.

The second seam is :data:`kernels`, the one switch of the fast path (:mod:`minilora.fast`).

Random numbers come from one place, :class:`Generator`, seeded explicitly. They are drawn on
the host with NumPy's PCG64 and moved to the active namespace, so the same seed gives the same
numbers on every backend.
"""
from __future__ import annotations

import os
from types import ModuleType

import numpy as np

DEFAULT_FLOAT = "float32"  # the engine's dtype unless a caller asks for float64


class _ActiveNamespace:
    """Forwards ``xp.<name>`` to the namespace selected by :func:`use` (NumPy by default)."""

    def __init__(self) -> None:
        self.module: ModuleType = np
        self.name = "numpy"

    def __getattr__(self, attr: str):
        return getattr(self.module, attr)

    def __repr__(self) -> str:
        return f"<minilora array namespace: {self.name}>"


xp = _ActiveNamespace()


def use(backend: str | ModuleType) -> None:
    """Select the array namespace: ``"numpy"``, ``"cupy"``, or any array-API module.

    Arrays made before the switch stay where they were; build models after calling this.
    """
    if isinstance(backend, str):
        name = backend.lower()
        if name == "numpy":
            module = np
        elif name == "cupy":
            from .backend_cupy import load  # CuPy is optional: imported only when asked for
            module = load()
        else:
            raise ValueError(f"unknown backend {backend!r}: expected 'numpy' or 'cupy'")
    else:
        module, name = backend, getattr(backend, "__name__", type(backend).__name__)
    xp.module, xp.name = module, name


def current() -> str:
    """The active namespace's name, e.g. ``"numpy"``."""
    return xp.name


def is_numpy() -> bool:
    return xp.module is np


def synchronize() -> None:
    """Wait until the device has finished all queued work (a GPU runs kernels asynchronously,
    so a timer must wait for them); nothing to wait for on the CPU."""
    if xp.name == "cupy":  # xp.module is array_api_compat's wrapper; the device is CuPy's
        import cupy
        cupy.cuda.Device().synchronize()


def dtype(name: str | None = None):
    """The active namespace's dtype object for ``name`` (default: the engine's float32)."""
    return getattr(xp.module, name or DEFAULT_FLOAT)


def dtype_name(dtype_obj) -> str:
    """``"float32"`` for any namespace's float32 dtype object."""
    return str(dtype_obj).split(".")[-1]


def to_numpy(x) -> np.ndarray:
    """Explicit host transfer: any backend array (or scalar) to a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get"):  # CuPy arrays copy device -> host with .get()
        return x.get()
    return np.asarray(x)


def from_numpy(x: np.ndarray, dtype_name: str | None = None):
    """Explicit host -> backend transfer, optionally casting (``"float32"``, ``"int64"``, ...)."""
    x = np.asarray(x)
    if dtype_name is not None:
        x = x.astype(dtype_name, copy=False)
    return x if is_numpy() else xp.asarray(x)


def scatter_add(shape: tuple[int, ...], index, values, dtype_obj):
    """``out[index[i]] += values[i]`` over the first axis: the backward of a row gather.

    NumPy sorts the rows by index and sums each run (``add.reduceat``: faster than the
    unbuffered ``add.at``, and as deterministic); other namespaces get a one-hot matrix
    product, which is exact and needs nothing beyond the standard (fine for small vocabularies).
    """
    if is_numpy():
        out = np.zeros(shape, dtype=dtype_obj)
        if index.shape[0]:
            order = np.argsort(index, kind="stable")  # stable: each run keeps the original order
            rows = index[order]
            starts = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
            out[rows[starts]] = np.add.reduceat(values[order], starts, axis=0)
        return out
    one_hot = xp.astype(index[:, None] == xp.arange(shape[0])[None, :], dtype_obj)  # (N, V)
    return xp.matmul(xp.matrix_transpose(one_hot), values)  # (V, N) @ (N, C) -> (V, C)


def index_add(target, key, values) -> None:
    """``target[key] += values`` where ``key`` may repeat entries (integer-array indexing)."""
    if not is_numpy():
        raise TypeError(f"integer-array indexing of a Tensor needs the NumPy backend, not "
                        f"{xp.name}; use basic slices or F.embedding")
    np.add.at(target, key, values)


class Generator:
    """The seeded random generator every part of minilora draws from.

    Draws happen on the host (NumPy PCG64) and are moved to the active namespace, so a seed
    means the same numbers whatever the backend. ``.numpy`` is the host generator itself, for
    data generation that stays on the host.
    """

    def __init__(self, seed: int | None = 0):
        self.seed = seed
        self.numpy = np.random.default_rng(seed)

    def normal(self, shape, std: float = 1.0, mean: float = 0.0, dtype: str | None = None):
        x = self.numpy.standard_normal(shape) * std + mean
        return from_numpy(x, dtype or DEFAULT_FLOAT)

    def uniform(self, shape, low: float = 0.0, high: float = 1.0, dtype: str | None = None):
        return from_numpy(self.numpy.uniform(low, high, shape), dtype or DEFAULT_FLOAT)

    def integers(self, low: int, high: int, shape):
        return from_numpy(self.numpy.integers(low, high, shape), "int64")

    def spawn(self) -> "Generator":
        """An independent child generator (for workers and sub-experiments)."""
        child = Generator(None)
        child.numpy = self.numpy.spawn(1)[0]
        return child


_default_generator = Generator(0)


def manual_seed(seed: int) -> Generator:
    """Reset the default generator (used when a layer is built without ``generator=``)."""
    global _default_generator
    _default_generator = Generator(seed)
    return _default_generator


def default_generator() -> Generator:
    return _default_generator


# The fast path's kernels while it is on (``minilora.fast.enable()``), by the name of the function
# each replaces; empty by default. A function that looks itself up here is the reference its
# kernel is tested against (tests/test_fast.py).
kernels: dict = {}

if os.environ.get("MINILORA_BACKEND"):
    use(os.environ["MINILORA_BACKEND"])
