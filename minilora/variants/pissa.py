"""PiSSA (Meng et al. 2024): start A and B at W0's principal singular directions.

    W0 = U diag(S) Vh;   A = √(S_r/s) Vh_r,   B = U_r √(S_r/s),   W0_res = W0 − s·B A

s·B A is W0's best rank-r part (Eckart–Young) and the frozen base keeps only the rest, so the
adapted layer starts exactly at W0, yet training moves the directions that matter most. The
LoRA layer knows none of this: ``init_lora_weights="pissa"`` finds :func:`pissa_factors` in
:data:`~minilora.lora_layer.INITS`, where this module registers it.
"""
from __future__ import annotations

from ..backend import xp
from ..lora_layer import INITS


def pissa_factors(W0, r: int, scaling: float):
    """A (r, in), B (out, r) from W0's top-r singular triplets, and the residual base W0 − s·B A.

    Refuses r above min(in, out): W0 has only that many singular vectors.
    """
    if r > min(W0.shape):
        raise ValueError(f"init_lora_weights='pissa' needs r <= min(in, out)={min(W0.shape)}, "
                         f"got r={r}")
    U, S, Vh = xp.linalg.svd(W0, full_matrices=False)
    root = xp.sqrt(S[:r] / scaling)  # split √(S/scaling) between B and A
    A = root[:, None] * Vh[:r, :]  # (r, in)
    B = U[:, :r] * root[None, :]  # (out, r)
    return A, B, W0 - scaling * xp.matmul(B, A)


INITS["pissa"] = pissa_factors
