"""The fast kernel of ``F.scaled_dot_product_attention``: (batch, head) slices shared among the
threads, and the softmax's max shift skipped when no score can overflow or underflow."""
from __future__ import annotations

import math

from .. import functional as F
from ..backend import xp
from ..tensor import Tensor, unbroadcast
from . import threads
from .kernels import sum_last


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, is_causal: bool,
                                 scale: float) -> Tensor:
    """softmax(Q Kᵀ · scale + mask) V, as the reference, with the same fused backward."""
    q, k, v, batch = F.broadcast_heads(query, key, value)
    T, S = q.shape[-2], k.shape[-2]
    # every (batch, head) is independent: slices of the first axis go to the threads
    rows = threads.blocks(batch[0], q.size // batch[0] // q.shape[-1] * S) if batch else [...]
    mask = F.causal_bias(T, S, q.dtype) if is_causal else None
    info = xp.finfo(q.dtype)
    safe = (math.log(info.smallest_normal), math.log(info.max / S))  # exp needs no shift here

    def forward(r, shift: bool):
        qs = q[r] * scale  # scale Q (T·D numbers) rather than S (T·S numbers): the same S
        s = xp.matmul(qs, k[r].mT)  # (..., T, D) @ (..., D, S) -> (..., T, S)
        # softmax(s) = softmax(s − c) for any c per row; the usual c = row max only keeps exp
        # from overflowing (or every term of a row from underflowing). Two reductions over the
        # scores show when no shift is needed at all, cheaper than a max per row in NumPy.
        # Only if some score is extreme is each row shifted by its max.
        extreme = not safe[0] < float(xp.min(s)) <= float(xp.max(s)) < safe[1]  # before the mask
        if mask is not None:
            s += mask  # in place: cheaper than where()
        if shift or extreme:
            s -= xp.max(s, axis=-1, keepdims=True)
        p = xp.exp(s)
        p /= sum_last(p)  # (..., T, S) / (..., T, 1)
        o = out.write(r, xp.matmul, p, v[r])  # (..., T, S) @ (..., S, Dv) -> (..., T, Dv)
        return qs, p, o, extreme

    # laid out like q (a transposed view of the heads, usually), so that transposing it back
    # is free
    out = threads.Output(q.shape[:-1] + v.shape[-1:], q.dtype,
                         like=q if q.shape[-1] == v.shape[-1] else None)
    qs, p, o, extreme = zip(*threads.share(lambda r: forward(r, False), rows))
    if any(extreme) and not all(extreme):  # rare: then every block shifts, as one block would
        qs, p, o, _ = zip(*threads.share(lambda r: forward(r, True), rows))

    def backward(g):
        # each laid out like its input, written block by block in place
        gq, gk, gv = (threads.Output(a.shape, a.dtype, like=a) if t.requires_grad else None
                      for a, t in zip((q, k, v), (query, key, value)))

        def rows_backward(r, p, qs, o):
            gr = g[r]
            if gv is not None:
                gv.write(r, xp.matmul, p.mT, gr)  # (..., S, T) @ (..., T, Dv) -> (..., S, Dv)
            if gq is not None or gk is not None:
                ds = xp.matmul(gr, v[r].mT)  # dP: (..., T, Dv) @ (..., Dv, S) -> (..., T, S)
                # Σ_j dP_ij P_ij = Σ_d dO_id O_id (as O = P V): a (T, Dv) product, not (T, S)
                ds -= sum_last(gr * o)
                ds *= p  # dS, in place: no more (T, S) arrays than dP itself
                if gq is not None:
                    gqr = gq.write(r, xp.matmul, ds, k[r])  # (..., T, S) @ (..., S, D)
                    gqr *= scale
                if gk is not None:
                    gk.write(r, xp.matmul, ds.mT, qs)  # (..., S, T) @ (..., T, D) -> (..., S, D)

        threads.share(rows_backward, rows, p, qs, o)
        return tuple(unbroadcast(grad.array, t.shape) if grad is not None else None
                     for grad, t in zip((gq, gk, gv), (query, key, value)))

    return Tensor._make(out.array, (query, key, value), backward, "attention")
