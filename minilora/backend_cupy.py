"""The CuPy array namespace for :func:`minilora.backend.use` ("cupy"): loaded only when asked.

CuPy's own namespace is not the array API standard (no ``permute_dims``, ``concat``, ...), so
the engine computes with array-api-compat's wrapper of it. Both must be installed and a GPU
must answer, or :func:`load` says which of them is missing.
"""
from __future__ import annotations

from types import ModuleType


def load() -> ModuleType:
    """array-api-compat's CuPy namespace, once CuPy has found a usable GPU."""
    try:
        import cupy
        import array_api_compat.cupy as cupy_xp  # the array-API names (permute_dims, concat, ...)
    except ImportError as err:
        raise RuntimeError(
            "the CuPy backend needs CuPy and array-api-compat: "
            "pip install 'minilora[gpu]' (or cupy-cuda11x / cupy-cuda12x for your CUDA)"
        ) from err
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CuPy raises its own CUDARuntimeError without a GPU
        raise RuntimeError(f"CuPy is installed but no usable GPU was found: {err}") from err
    return cupy_xp
