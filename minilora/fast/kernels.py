"""The fast kernels of ``F.linear``, ``F.lora_linear``, ``F.gelu``, ``F.layer_norm`` and AdamW.

Each computes what its reference in :mod:`minilora.functional` (or :mod:`minilora.optim`)
computes, with the work cut into row blocks shared among the threads (:mod:`.threads`), every
block written in place into the output (:class:`.threads.Output`), and in-place steps instead
of one temporary per operator. The reference has already checked the inputs.
tests/test_fast.py holds each kernel to its reference: bit for bit where the op is element- or
row-wise, to float32 rounding where a product is summed in another order.
"""
from __future__ import annotations

import math

from ..backend import xp
from ..tensor import Tensor, unbroadcast
from . import threads


def sum_last(a, scale: float = 1.0):
    """scale · Σ over the last axis, kept as size 1: (..., n) -> (..., 1), as a matrix-vector
    product so that NumPy runs it on the BLAS (much faster than ``xp.sum`` over short rows)."""
    return xp.matmul(a, xp.full((a.shape[-1], 1), scale, dtype=a.dtype))  # (..., n) @ (n, 1)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear`` with its products shared among the threads (:func:`.threads.matmul`)."""
    x2 = xp.reshape(x.data, (-1, x.shape[-1]))  # (N, in)
    y = threads.matmul(x2, weight.data.mT, None if bias is None else bias.data)  # (N, out)

    def backward(g):
        g2 = xp.reshape(g, (-1, g.shape[-1]))  # (N, out)
        want_b = bias is not None and bias.requires_grad
        if x.requires_grad and weight.requires_grad and threads.num_threads() <= 2:
            # two independent products: one per thread, each whole (faster than sharing each),
            # dW first, the slower one, on the caller's thread, which starts first
            gw, gx, gb = threads.run(lambda: xp.matmul(g2.mT, x2),  # (out, N) @ (N, in)
                                     lambda: xp.matmul(g2, weight.data),  # (N, out) @ (out, in)
                                     lambda: xp.sum(g2, axis=0) if want_b else None,
                                     work=2 * g2.shape[0] * weight.shape[0] * weight.shape[1])
        else:  # each product shared among the threads
            gx, gw = (threads.matmul(g2, weight.data) if x.requires_grad else None,
                      threads.matmul(g2.mT, x2) if weight.requires_grad else None)
            gb = xp.sum(g2, axis=0) if want_b else None
        return (None if gx is None else xp.reshape(gx, x.shape)), gw, gb

    out = xp.reshape(y, x.shape[:-1] + (weight.shape[0],))  # (..., out)
    return Tensor._make(out, (x, weight) + (() if bias is None else (bias,)), backward, "linear")


def lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
                scaling: float) -> Tensor:
    """``F.lora_linear`` as one op: it keeps the (N, r) bottleneck u = x Aᵀ instead of the three
    (N, out) arrays (base output, update, sum) that the composed layer keeps.

    Backward, with gu = scaling · g B (N, r): dx = g W0 + gu A, dA = guᵀ x, dB = scaling · gᵀ u.
    """
    x2 = xp.reshape(x.data, (-1, x.shape[-1]))  # (N, in)
    N, n_out, r = x2.shape[0], weight.shape[0], lora_A.shape[0]
    # every product but dA and dB is row by row: blocks of rows go to the threads, each doing
    # the whole layer for its rows (one hand-off instead of one per product)
    rows = threads.blocks(N, max(x2.shape[1], n_out), 64)
    y, u = threads.Output((N, n_out), x.dtype), threads.Output((N, r), x.dtype)

    def forward(rr):
        ur = u.write(rr, xp.matmul, x2[rr], lora_A.data.mT)  # (n, in) @ (in, r) -> (n, r)
        yr = y.write(rr, xp.matmul, x2[rr], weight.data.mT)  # (n, in) @ (in, out) -> (n, out)
        if bias is not None:
            yr += bias.data
        yr += xp.matmul(ur * scaling, lora_B.data.mT)  # (n, r) @ (r, out): scale the thin side

    threads.share(forward, rows)

    def backward(g):
        g2 = xp.reshape(g, (-1, g.shape[-1]))  # (N, out)
        gu = threads.Output((N, r), x.dtype)
        gx = threads.Output(x2.shape, x.dtype) if x.requires_grad else None

        def rows_backward(rr):
            gur = gu.write(rr, xp.matmul, g2[rr], lora_B.data)  # (n, out) @ (out, r) -> (n, r)
            gur *= scaling
            if gx is not None:
                gxr = gx.write(rr, xp.matmul, g2[rr], weight.data)  # (n, out) @ (out, in)
                gxr += xp.matmul(gur, lora_A.data)  # (n, r) @ (r, in)

        threads.share(rows_backward, rows)

        def grad_B():
            gB = xp.matmul(g2.mT, u.array)  # (out, N) @ (N, r) -> (out, r)
            gB *= scaling
            return gB

        # the sums over all N rows: dA, dB (and dW0, db if the base trains), side by side
        jobs = {"A": lambda: xp.matmul(gu.array.mT, x2),  # (r, N) @ (N, in) -> (r, in)
                "B": grad_B,
                "W": lambda: xp.matmul(g2.mT, x2),  # (out, N) @ (N, in) -> (out, in)
                "b": lambda: xp.sum(g2, axis=0)}
        wanted = [name for name, t in (("W", weight), ("A", lora_A), ("B", lora_B), ("b", bias))
                  if t is not None and t.requires_grad]
        work = N * (n_out * x2.shape[1] * ("W" in wanted) + r * (x2.shape[1] + n_out))
        grads = dict(zip(wanted, threads.run(*(jobs[name] for name in wanted), work=work)))
        gx = xp.reshape(gx.array, x.shape) if gx is not None else None
        return (gx, grads.get("W")) + ((grads.get("b"),) if bias is not None else ()) \
            + (grads.get("A"), grads.get("B"))

    parents = (x, weight) + ((bias,) if bias is not None else ()) + (lora_A, lora_B)
    return Tensor._make(xp.reshape(y.array, x.shape[:-1] + (n_out,)), parents, backward,
                        "lora_linear")


def gelu(x: Tensor) -> Tensor:
    """``F.gelu`` in row blocks, each step in place in the output's own rows."""
    c, a = math.sqrt(2.0 / math.pi), 0.044715
    x2 = xp.reshape(x.data, (-1, x.shape[-1]) if x.ndim else (1, 1))  # (N, C)
    rows = threads.blocks(*x2.shape)
    y = threads.Output(x2.shape, x.dtype)

    def forward(r):
        xr = x2[r]
        u = xr * xr
        u *= a * c
        u += c
        u *= xr  # u = c (x + a x³)
        t = xp.tanh(u)
        yr = y.write(r, xp.add, t, 1)
        yr *= xr
        yr *= 0.5  # y = 0.5 x (1 + t)
        return t

    t = threads.share(forward, rows)  # tanh's values, kept block by block for the backward

    def backward(g):
        g2 = xp.reshape(g, x2.shape)
        dx = threads.Output(x2.shape, x.dtype)

        def rows_backward(r, t):  # −0.5 (x c (1 + 3a x²) (t² − 1) − t − 1) g, in dx's rows
            xr = x2[r]
            d = dx.write(r, xp.multiply, xr, xr)
            d *= 3 * a * c
            d += c
            d *= xr  # x c (1 + 3a x²)
            w = t * t
            w -= 1
            d *= w
            d -= t
            d -= 1
            d *= g2[r]
            d *= -0.5

        threads.share(rows_backward, rows, t)
        return (xp.reshape(dx.array, x.shape),)

    return Tensor._make(xp.reshape(y.array, x.shape), (x,), backward, "gelu")


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """``F.layer_norm`` in row blocks, the row means as matrix-vector products (:func:`sum_last`)."""
    C = x.shape[-1]
    # rows are normalized independently: blocks of the first axis go to the threads (in 2-D,
    # cut at multiples of 64 rows, where the BLAS sums each row as it would in the whole)
    rows = threads.blocks(x.shape[0], x.numel() // x.shape[0], 64 if x.ndim == 2 else 1) \
        if x.ndim > 1 else [...]
    y = threads.Output(x.shape, x.dtype)

    def forward(r):
        xhat = x.data[r] - sum_last(x.data[r], 1.0 / C)  # x − μ
        rstd = 1.0 / xp.sqrt(sum_last(xhat * xhat, 1.0 / C) + eps)
        xhat *= rstd  # in place (it is our own array): saves a temporary of x's size
        yr = y.write(r, xp.multiply, xhat, weight.data) if weight is not None \
            else y.put(r, xhat)
        if bias is not None:
            yr += bias.data
        return xhat, rstd

    xhat, rstd = zip(*threads.share(forward, rows))

    def backward(g):
        gx = threads.Output(x.shape, x.dtype) if x.requires_grad else None
        gxh = threads.Output(x.shape, x.dtype) \
            if weight is not None and weight.requires_grad else None

        def rows_backward(r, xhat, rstd):
            if gx is not None:  # ĝ built in place in gx's rows: no temporaries
                gh = gx.write(r, xp.multiply, g[r], weight.data) if weight is not None \
                    else gx.put(r, g[r])
                m = sum_last(gh * xhat, 1.0 / C)
                gh -= sum_last(gh, 1.0 / C)
                gh -= xhat * m
                gh *= rstd
            if gxh is not None:
                gxh.write(r, xp.multiply, g[r], xhat)  # the terms of dW

        threads.share(rows_backward, rows, xhat, rstd)
        # the sums over rows run on the whole array, as they would without threads
        gw = unbroadcast(gxh.array, weight.shape) if gxh is not None else None
        gb = unbroadcast(g, bias.shape) if bias is not None and bias.requires_grad else None
        grads = (gx.array if gx is not None else None, gw, gb)
        return tuple(gr for gr, p in zip(grads, (x, weight, bias)) if p is not None)

    parents = tuple(p for p in (x, weight, bias) if p is not None)
    return Tensor._make(y.array, parents, backward, "layer_norm")


def adamw_step(update, items: list) -> None:
    """``AdamW.step``: the parameters update independently, so they are shared among the
    threads (``update`` is ``AdamW._update``, which it applies to each item)."""
    threads.run(*(lambda item=item: update(item) for item in items),
                work=20 * sum(p.numel() for _, p, _ in items))  # ~20 element operations each
