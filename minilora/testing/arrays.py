"""Numbers, shapes and well-conditioned arrays: what the engine's laws (lessons 01-02, 07) draw.

"Well-conditioned" means inside each formula's good domain: a divisor away from zero, a max
without ties, a matrix with a known, well-separated spectrum, so a law's assertion fails only
when the formula is wrong, never by chance.
"""
from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import strategies as st

# -- numbers, shapes, arrays -------------------------------------------------------------------
seeds = st.integers(0, 2**32 - 1)


def shapes(min_dims: int = 0, max_dims: int = 3, max_side: int = 4):
    """Array shapes with sides 1..max_side (0-d included when min_dims = 0)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side)


def broadcastable_shapes(max_dims: int = 3, max_side: int = 3):
    """Two shapes that broadcast together (read ``.input_shapes``)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=max_dims, max_side=max_side)


def arrays(shape, lo: float = -2.0, hi: float = 2.0):
    """float64 arrays with entries in [lo, hi]."""
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi))


def away_from_zero(shape, lo: float = 0.5, hi: float = 2.0):
    """float64 arrays with lo ≤ |entry| ≤ hi: safe to divide by."""
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi) | st.floats(-hi, -lo))


def separated(shape):
    """Distinct values at least 0.01 apart and from 0: max has no ties and relu no kink
    within a finite-difference step."""
    n = math.prod(shape)
    ints = st.lists(st.integers(-300, 300).filter(bool), min_size=n, max_size=n, unique=True)
    return ints.map(lambda v: np.array(v, dtype=np.float64).reshape(shape) / 100)


def normal(shape, seed: int, scale: float = 1.0) -> np.ndarray:
    """A seeded N(0, scale²) float64 array (draw the seed, not the entries: faster to shrink)."""
    return np.random.default_rng(seed).normal(size=shape) * scale


@st.composite
def axes(draw, ndim: int):
    """(axis, keepdims) for a reduction: None, one axis (negative allowed) or a non-empty
    tuple of distinct axes."""
    if ndim == 0:
        return None, draw(st.booleans())
    one = st.integers(-ndim, ndim - 1)
    many = st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)
    return draw(st.none() | one | many), draw(st.booleans())


@st.composite
def broadcast_targets(draw, target_shapes=shapes()):
    """(shape, target): a shape that broadcasts to target (fewer leading axes, some sizes 1)."""
    target = draw(target_shapes)
    lead = draw(st.integers(0, len(target)))
    shape = tuple(1 if draw(st.booleans()) else n for n in target[lead:])
    return shape, target


@st.composite
def logits_and_targets(draw, ignore_index: int = -100):
    """Logits (..., C) and integer targets (...), some positions set to ``ignore_index``."""
    lead = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=4))
    C = draw(st.integers(1, 5))
    seed = draw(seeds)
    targets = np.random.default_rng(seed).integers(0, C, lead)
    ignored = draw(hnp.arrays(bool, lead))
    targets[ignored] = ignore_index
    return normal(lead + (C,), seed, 2.0), targets


@st.composite
def qkv(draw, causal: bool):
    """(B, H, T, D) queries and (B, H, S, D) keys/values; S = T when causal. Each input's B
    and H may be 1 instead: the leading axes broadcast, as in a matrix product."""
    B, H, T_, D = (draw(st.integers(1, 3)) for _ in range(4))
    S = T_ if causal else draw(st.integers(1, 3))
    gen = np.random.default_rng(draw(seeds))
    lead = lambda: (draw(st.sampled_from([B, 1])), draw(st.sampled_from([H, 1])))
    return gen.normal(size=lead() + (T_, D)), gen.normal(size=lead() + (S, D)), \
        gen.normal(size=lead() + (S, draw(st.integers(1, 3))))


def quantizable_weights(max_rows: int = 12, max_cols: int = 70):
    """float32 matrices with values spread over six orders of magnitude (and exact zeros)."""
    value = st.one_of(st.just(0.0), st.floats(2.0 ** -10, 2.0 ** 10, width=32).flatmap(
        lambda v: st.sampled_from([v, -v])))
    shape = st.tuples(st.integers(1, max_rows), st.integers(1, max_cols))
    return shape.flatmap(lambda s: hnp.arrays(np.float32, s, elements=value))


def orthonormal(n: int, m: int, rng) -> np.ndarray:
    """n × m with orthonormal columns (m <= n), Haar-distributed."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.sign(np.diag(r)))[:, :m]


def known_svd(rows: int, cols: int, rng):
    """(A, V): A = U diag(s) Vᵀ with singular values 1, 1/2, 1/4, ... (well separated)."""
    k = min(rows, cols)
    U, V = orthonormal(rows, k, rng), orthonormal(cols, k, rng)
    s = 2.0 ** -np.arange(k)
    return (U * s) @ V.T, V


def subspace_shapes(min_k: int = 4, max_k: int = 24):
    """(k, r1, r2, seed): two factors A1 (r1, k), A2 (r2, k) of one layer, as in Section 7.2."""
    return st.integers(min_k, max_k).flatmap(lambda k: st.tuples(
        st.just(k), st.integers(1, k), st.integers(1, k), seeds))
