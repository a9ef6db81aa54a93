"""What a law asserts: closeness measured against the size of the terms, exact bits, gradients.

Round-off scales with the numbers that were added up, not with the result: ``x W0ᵀ + x ΔWᵀ``
may cancel to nearly zero while each term carried an error of ε·‖x‖‖W0‖. So closeness here is
‖actual − expected‖_F ≤ rtol · scale, with ``scale`` the size of the terms (``forward_scale``
gives it for a LoRA forward pass) and ``rtol`` a small multiple of the dtype's ε.
Gradient checks are ``minilora.gradcheck``'s (``gradcheck`` entry by entry, ``vjp_check`` in
one random direction), re-exported by ``minilora.testing``.
"""
from __future__ import annotations

import math

import numpy as np

# A few thousand ulps of headroom: laws add up tens of products of drawn factors.
_RTOL = {"float64": 1e-12, "float32": 1e-5, "float16": 1e-2}


def default_rtol(*arrays) -> float:
    """The tolerance for the least precise of ``arrays``' dtypes (float64: 1e-12, float32: 1e-5)."""
    kinds = [np.asarray(a).dtype for a in arrays]
    floats = [str(d) for d in kinds if np.issubdtype(d, np.floating)]
    return max((_RTOL.get(d, 1e-2) for d in floats), default=_RTOL["float64"])


def assert_close(actual, expected, rtol: float | None = None, scale: float | None = None) -> None:
    """‖actual − expected‖_F ≤ rtol · scale; scale defaults to ‖expected‖_F, rtol to the dtype's."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    rtol = default_rtol(actual, expected) if rtol is None else rtol
    ref = np.linalg.norm(expected) if scale is None else scale
    err = np.linalg.norm(actual - expected)
    assert err <= rtol * ref, f"error {err:.3e} > {rtol:g} · {ref:.3e}"


def assert_bits_equal(actual, expected) -> None:
    """The same shape, dtype and bytes: for laws that hold exactly, not to rounding."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if actual.tobytes() != expected.tobytes():
        differ = int(np.sum(actual != expected))
        raise AssertionError(f"{differ} of {actual.size} entries differ; max |difference| "
                             f"{float(np.max(np.abs(actual - expected))):.3e}")


def forward_scale(x, W, b, delta) -> float:
    """A bound on the size of the terms of x W0ᵀ + b + x ΔWᵀ: the yardstick for round-off."""
    return np.linalg.norm(x) * (np.linalg.norm(W) + np.linalg.norm(delta)) + \
        (np.linalg.norm(b) * math.sqrt(np.size(x)) if b is not None else 0.0) + 1e-300


def numerical_rank(M, rtol: float = 1e-9) -> int:
    """The number of singular values above rtol · σ₁ (0 for a zero or empty matrix)."""
    S = np.linalg.svd(M, compute_uv=False)
    return int(np.sum(S > rtol * S[0])) if S.size and S[0] > 0 else 0
