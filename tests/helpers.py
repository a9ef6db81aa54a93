"""Assertions shared by the test files (pytest puts this folder on the import path)."""
import numpy as np


def assert_close(actual, expected, rtol=1e-12, scale=None):
    """‖actual − expected‖_F ≤ rtol · scale (scale defaults to ‖expected‖_F)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    ref = np.linalg.norm(expected) if scale is None else scale
    err = np.linalg.norm(actual - expected)
    assert err <= rtol * ref, f"error {err:.3e} > {rtol:g} · {ref:.3e}"
