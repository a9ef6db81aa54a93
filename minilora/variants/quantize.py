"""QLoRA's frozen 4-bit base weights (Dettmers et al. 2023, Section 3), from scratch.

A weight is stored as 4-bit indices into a 16-value code book plus one scale per block::

    w_i ≈ absmax_b · code[q_i]        for element i of block b (64 consecutive elements)

* **NF4** (4-bit NormalFloat): the code values are quantiles of N(0, 1), normalized to [−1, 1].
  Pre-trained weights are roughly Gaussian, so every code is used about equally often, which
  an evenly spaced grid (int4) or a floating-point one (FP4) cannot claim.
* **Block-wise absmax**: each block of 64 is divided by its largest |w|, so an outlier costs
  precision in its own block only. Its fp32 constant costs 32/64 = 0.5 bits per parameter.
* **Double quantization**: quantize those constants too (8 bits, blocks of 256, after
  subtracting their mean): 8/64 + 32/(64·256) ≈ 0.127 bits instead of 0.5.

The frozen layer built on these (``Linear4bit``) is in ``linear4bit.py``. Names follow
bitsandbytes (``quantize_4bit``, ``dequantize_4bit``, ``QuantState``, ``create_normal_map``),
so what is learned here reads the same in its source.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from .. import backend
from ..backend import xp

QUANT_TYPES = ("nf4", "fp4", "int4")
DQ_BLOCKSIZE = 256  # double quantization: absmax constants per second-level block


# -- code books (built on the host from Python floats: tiny constant tables) -------------------
def _linspace(start: float, stop: float, num: int) -> list[float]:
    return [start + (stop - start) * i / (num - 1) for i in range(num)]


def create_normal_map(offset: float = 0.9677083, use_extra_value: bool = True) -> list[float]:
    """NF4's 16 values, built as bitsandbytes' ``create_normal_map`` builds them.

    8 positive values Φ⁻¹(p) at p evenly spaced from ``offset`` down to (not including) 0.5,
    7 negative ones from 7 such p, and an exact 0: 16 codes can hold a zero only if one side
    gets one value more. ``offset`` = ½((1 − 1/32) + (1 − 1/30)) stands in for p = 1, where
    Φ⁻¹ is infinite. The largest value is then scaled to 1. ``use_extra_value=False`` gives
    the symmetric 15-value variant.
    """
    ppf = NormalDist().inv_cdf  # Φ⁻¹, as scipy.stats.norm.ppf (agrees to 1e-15)
    if use_extra_value:
        positive = [ppf(p) for p in _linspace(offset, 0.5, 9)[:-1]]
        negative = [-ppf(p) for p in _linspace(offset, 0.5, 8)[:-1]]
    else:
        positive = [ppf(p) for p in _linspace(offset, 0.5, 8)[:-1]]
        negative = [-v for v in positive]
    values = sorted(positive + [0.0] + negative)
    return [v / values[-1] for v in values]


def create_fp4_map() -> list[float]:
    """FP4 E2M1 (1 sign, 2 exponent bits with bias 1, 1 mantissa bit), scaled to [−1, 1].

    Magnitudes 2^(e−1)·(1 + m/2) for e > 0 and m/2 for e = 0 (subnormal): 0, 0.5, 1, 1.5, 2, 3,
    4, 6; ±0 coincide, so 15 values. (bitsandbytes' "fp4" differs in its smallest subnormal.)
    """
    magnitudes = [(2.0 ** (e - 1) * (1 + m / 2) if e else m / 2) for e in range(4) for m in (0, 1)]
    return sorted({s * v / 6.0 for v in magnitudes for s in (1.0, -1.0)})


def create_int4_map() -> list[float]:
    """Uniform symmetric int4: k/7 for k = −7 … 7 (15 evenly spaced values, zero exact)."""
    return [k / 7 for k in range(-7, 8)]


def create_dynamic_map(signed: bool = True, max_exponent_bits: int = 7,
                       total_bits: int = 8) -> list[float]:
    """bitsandbytes' 8-bit "dynamic" code (Dettmers 2016), used here for double quantization.

    For each exponent 10^(−6) … 10^0 a linear run of mantissas between 0.1 and 1: a log-like
    grid, precise for small magnitudes as well as large ones. 254 signed values, 0 and 1.
    """
    non_sign_bits = total_bits - 1
    data = []
    for i in range(max_exponent_bits):
        items = 2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed \
            else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1
        bounds = _linspace(0.1, 1.0, items)
        means = [(a + b) / 2 for a, b in zip(bounds[:-1], bounds[1:])]
        scale = 10.0 ** (-(max_exponent_bits - 1) + i)
        data += [scale * m for m in means] + ([-scale * m for m in means] if signed else [])
    data += [0.0, 1.0]
    return sorted(data + [0.0] * (2 ** total_bits - len(data)))


CODE_BOOKS = {"nf4": create_normal_map, "fp4": create_fp4_map, "int4": create_int4_map,
              "dynamic": create_dynamic_map}


def code_book(quant_type: str):
    """The code book of ``quant_type`` as a sorted float32 array of the active namespace."""
    if quant_type not in CODE_BOOKS:
        raise ValueError(f"unknown quant_type {quant_type!r}; choose from {QUANT_TYPES}")
    return xp.asarray(CODE_BOOKS[quant_type](), dtype=backend.dtype("float32"))


# -- block-wise absmax quantization to the nearest code ---------------------------------------
def quantize_blockwise(A, code, blocksize: int):
    """Indices (n_blocks, blocksize) of the nearest code to each w / absmax, and absmax (fp32).

    A is flattened row-major (as torch's ``flatten``) and zero-padded to whole blocks. With the
    code book sorted, the nearest code's index is the number of decision boundaries (midpoints
    of neighbouring codes) below the value.
    """
    flat = xp.reshape(A, (-1,))
    pad = (-flat.shape[0]) % blocksize
    if pad:
        flat = xp.concat([flat, xp.zeros((pad,), dtype=flat.dtype)])
    blocks = xp.reshape(flat, (-1, blocksize))  # (n_blocks, blocksize)
    absmax = xp.astype(xp.max(xp.abs(blocks), axis=1), backend.dtype("float32"))  # (n_blocks,)
    scale = xp.where(absmax > 0, absmax, xp.ones_like(absmax))  # an all-zero block stays zero
    normed = blocks / xp.astype(scale, blocks.dtype)[:, None]  # in [−1, 1]
    code = xp.astype(code, blocks.dtype)
    boundaries = (code[:-1] + code[1:]) / 2  # (K−1,)
    idx = xp.searchsorted(boundaries, xp.reshape(normed, (-1,)))  # (n_blocks · blocksize,)
    return xp.reshape(xp.astype(idx, xp.uint8), blocks.shape), absmax


def dequantize_blockwise(indices, absmax, code, shape: tuple, dtype):
    """code[index] · absmax of its block, un-padded and reshaped to ``shape``."""
    blocks = xp.reshape(indices, (absmax.shape[0], -1))  # (n_blocks, blocksize)
    values = xp.take(xp.astype(code, dtype), xp.reshape(blocks, (-1,)))
    values = xp.reshape(values, blocks.shape) * xp.astype(absmax, dtype)[:, None]
    return xp.reshape(xp.reshape(values, (-1,))[:math.prod(shape)], shape)


def pack_4bit(indices):
    """Two 4-bit indices per byte, the first in the high nibble: (n,) → (n/2,) uint8."""
    four = xp.asarray(4, dtype=xp.uint8)
    return xp.bitwise_or(xp.bitwise_left_shift(indices[0::2], four), indices[1::2])


def unpack_4bit(packed):
    """The inverse of :func:`pack_4bit`: (n/2,) uint8 → (n,) uint8 indices."""
    high = xp.bitwise_right_shift(packed, xp.asarray(4, dtype=xp.uint8))
    low = xp.bitwise_and(packed, xp.asarray(15, dtype=xp.uint8))
    return xp.reshape(xp.stack([high, low], axis=1), (-1,))  # (n/2, 2) → interleaved


@dataclass
class QuantState:
    """What dequantization needs besides the packed codes (bitsandbytes' ``QuantState``)."""

    absmax: object  # (n_blocks,) fp32; uint8 indices of (absmax − offset) when nested
    shape: tuple  # the original weight's shape
    code: object  # the code book the indices point into
    blocksize: int  # elements per absmax block
    quant_type: str  # "nf4", "fp4", "int4" (or "dynamic" for the absmax of state2)
    dtype: object  # the dtype W dequantizes to (the compute dtype)
    offset: object = None  # mean of the absmax constants (double quantization)
    state2: "QuantState | None" = None  # how the absmax constants were quantized

    @property
    def nested(self) -> bool:
        return self.state2 is not None


def quantize_4bit(A, blocksize: int = 64, compress_statistics: bool = False,
                  quant_type: str = "nf4"):
    """``(packed, state)``: A in 4 bits; ``compress_statistics`` double-quantizes the absmax."""
    if blocksize <= 0 or blocksize % 2:
        raise ValueError(f"blocksize must be a positive even number, got {blocksize}")
    code = code_book(quant_type)
    idx, absmax = quantize_blockwise(A, code, blocksize)
    state = QuantState(absmax, tuple(A.shape), code, blocksize, quant_type, A.dtype)
    if compress_statistics:
        # Subtracting the mean centres the (all positive) constants on 0, so the signed 8-bit
        # code spends its values on the spread around the mean, not on the mean itself.
        state.offset = xp.mean(absmax)
        dynamic = code_book("dynamic")
        qabsmax, absmax2 = quantize_blockwise(absmax - state.offset, dynamic, DQ_BLOCKSIZE)
        state.absmax = xp.reshape(qabsmax, (-1,))[:absmax.shape[0]]
        state.state2 = QuantState(absmax2, tuple(absmax.shape), dynamic, DQ_BLOCKSIZE,
                                  "dynamic", absmax.dtype)
    return pack_4bit(xp.reshape(idx, (-1,))), state


def dequantize_absmax(state: QuantState):
    """The per-block constants as fp32, undoing double quantization if it was used."""
    if not state.nested:
        return state.absmax
    s2 = state.state2
    pad = (-state.absmax.shape[0]) % s2.blocksize  # second-level blocks are whole: pad indices
    idx = xp.concat([state.absmax, xp.zeros((pad,), dtype=xp.uint8)]) if pad else state.absmax
    return dequantize_blockwise(idx, s2.absmax, s2.code, s2.shape, s2.dtype) + state.offset


def dequantize_4bit(packed, state: QuantState):
    """W ≈ code[q] · absmax, in ``state.dtype`` and ``state.shape``."""
    return dequantize_blockwise(unpack_4bit(packed), dequantize_absmax(state), state.code,
                                state.shape, state.dtype)


def _nbytes(x) -> int:
    info = xp.iinfo(x.dtype) if xp.isdtype(x.dtype, "integral") else xp.finfo(x.dtype)
    return math.prod(x.shape) * info.bits // 8


def storage_bytes(packed, state: QuantState) -> int:
    """Bytes a 4-bit weight really stores: packed codes, constants (and their constants).

    The code books (16 and 256 values) are shared by every layer and left out.
    """
    arrays = [packed, state.absmax]
    if state.nested:
        arrays += [state.offset, state.state2.absmax]
    return sum(_nbytes(a) for a in arrays)


def bits_per_parameter(packed, state: QuantState) -> float:
    """8 · stored bytes / parameters: 4.5 for NF4 with fp32 absmax, ≈ 4.127 with double quant."""
    return 8 * storage_bytes(packed, state) / math.prod(state.shape)
