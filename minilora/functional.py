"""Neural-network functions with fused backwards: ``import minilora.functional as F``.

Each could be composed from the primitive ops, but a hand-derived backward is shorter to read,
needs less memory (one saved array instead of a chain of them) and runs faster. Every one is
gradient-checked against finite differences in the tests.
"""
from __future__ import annotations

import math

from . import backend, parallel
from .backend import xp
from .tensor import Tensor, as_tensor, check_same_dtype, unbroadcast


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y = x Wᵀ + b`` with ``weight`` of shape (out_features, in_features), as in PyTorch.

    Backward: dx = g W, dW = gᵀ x, db = Σ g. A frozen weight skips dW, the largest product
    of the three: this is where LoRA's training speed-up comes from.
    """
    x = as_tensor(x, like=weight)  # raw arrays are accepted as constant inputs
    check_same_dtype("linear", x, weight, *([bias] if bias is not None else []))
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {x.shape} does not fit weight of shape "
                         f"{weight.shape} (expected last input dim {weight.shape[1]})")
    x2 = xp.reshape(x.data, (-1, x.shape[-1]))  # (N, in), N = all leading axes
    y = parallel.matmul(x2, weight.data.mT, None if bias is None else bias.data)  # (N, out)
    out_shape = x.shape[:-1] + (weight.shape[0],)

    def backward(g):
        g2 = xp.reshape(g, (-1, g.shape[-1]))  # (N, out)
        want_b = bias is not None and bias.requires_grad
        if x.requires_grad and weight.requires_grad and parallel.num_threads() <= 2:
            # two independent products: one per thread, each whole (3-5% faster than sharing
            # each), dW first, the slower one, on the caller's thread, which starts first
            gw, gx, gb = parallel.run(lambda: xp.matmul(g2.mT, x2),  # (out, N) @ (N, in)
                                      lambda: xp.matmul(g2, weight.data),  # (N, out) @ (out, in)
                                      lambda: xp.sum(g2, axis=0) if want_b else None,
                                      work=2 * g2.shape[0] * weight.shape[0] * weight.shape[1])
        else:  # each product shared among the threads
            gx = parallel.matmul(g2, weight.data) if x.requires_grad else None
            gw = parallel.matmul(g2.mT, x2) if weight.requires_grad else None
            gb = xp.sum(g2, axis=0) if want_b else None
        return (xp.reshape(gx, x.shape) if gx is not None else None), gw, gb

    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._make(xp.reshape(y, out_shape), parents, backward, "linear")


def lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
                scaling: float) -> Tensor:
    """``h = x W0ᵀ + b + scaling · (x Aᵀ) Bᵀ``: a LoRA layer's forward (Hu et al. 2021, eq. 3).

    ``lora_A`` is (r, in), ``lora_B`` (out, r). B A is never formed: x goes through the rank-r
    bottleneck u = x Aᵀ (N, r). Backward, with gu = scaling · g B (N, r):
    dx = g W0 + gu A, dA = guᵀ x, dB = scaling · gᵀ u (dW0 = gᵀ x and db = Σ g only if the
    base trains). As one op it keeps u instead of three (N, out) arrays (base output, update,
    sum) that the composed layer keeps: a LoRA step at d_model 256 then needs 11% less memory
    and runs 1% faster.
    """
    check_same_dtype("lora_linear", x, weight, lora_A, lora_B,
                     *([bias] if bias is not None else []))
    if x.shape[-1] != weight.shape[1] or lora_A.shape[1] != weight.shape[1] \
            or lora_B.shape != (weight.shape[0], lora_A.shape[0]):
        raise ValueError(f"lora_linear: input {x.shape}, weight {weight.shape}, lora_A "
                         f"{lora_A.shape} and lora_B {lora_B.shape} do not fit")
    x2 = xp.reshape(x.data, (-1, x.shape[-1]))  # (N, in)
    N, n_out, r = x2.shape[0], weight.shape[0], lora_A.shape[0]
    # every product but dA and dB is row by row: blocks of rows go to the threads, each doing
    # the whole layer for its rows (one hand-off instead of one per product)
    rows = parallel.blocks(N, max(x2.shape[1], n_out), 64)
    y, u = parallel.Output((N, n_out), x.dtype), parallel.Output((N, r), x.dtype)

    def forward(rr):
        ur = u.write(rr, xp.matmul, x2[rr], lora_A.data.mT)  # (n, in) @ (in, r) -> (n, r)
        yr = y.write(rr, xp.matmul, x2[rr], weight.data.mT)  # (n, in) @ (in, out) -> (n, out)
        if bias is not None:
            yr += bias.data
        yr += xp.matmul(ur * scaling, lora_B.data.mT)  # (n, r) @ (r, out): scale the thin side

    parallel.map(forward, rows)

    def backward(g):
        g2 = xp.reshape(g, (-1, g.shape[-1]))  # (N, out)
        gu = parallel.Output((N, r), x.dtype)
        gx = parallel.Output(x2.shape, x.dtype) if x.requires_grad else None

        def rows_backward(rr):
            gur = gu.write(rr, xp.matmul, g2[rr], lora_B.data)  # (n, out) @ (out, r) -> (n, r)
            gur *= scaling
            if gx is not None:
                gxr = gx.write(rr, xp.matmul, g2[rr], weight.data)  # (n, out) @ (out, in)
                gxr += xp.matmul(gur, lora_A.data)  # (n, r) @ (r, in)

        parallel.map(rows_backward, rows)

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
        grads = dict(zip(wanted, parallel.run(*(jobs[name] for name in wanted), work=work)))
        gx = xp.reshape(gx.array, x.shape) if gx is not None else None
        return (gx, grads.get("W")) + ((grads.get("b"),) if bias is not None else ()) \
            + (grads.get("A"), grads.get("B"))

    parents = (x, weight) + ((bias,) if bias is not None else ()) + (lora_A, lora_B)
    return Tensor._make(xp.reshape(y.array, x.shape[:-1] + (n_out,)), parents, backward,
                        "lora_linear")


def gelu(x: Tensor) -> Tensor:
    """GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))).

    Element-wise, so its rows are shared among the threads (:mod:`minilora.parallel`).
    """
    c, a = math.sqrt(2.0 / math.pi), 0.044715
    x2 = xp.reshape(x.data, (-1, x.shape[-1]) if x.ndim else (1, 1))  # (N, C)
    rows = parallel.blocks(*x2.shape)
    y = parallel.Output(x2.shape, x.dtype)

    def forward(r):
        # Speed: in-place steps (2x faster than one temporary per operator), the last ones in
        # the output's own rows, and x * x, not x ** 2: NumPy's float32 power is ~100x slower.
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

    t = parallel.map(forward, rows)  # tanh's values, kept block by block for the backward

    def backward(g):
        g2 = xp.reshape(g, x2.shape)
        dx = parallel.Output(x2.shape, x.dtype)

        def rows_backward(r, t):
            # dy/dx = 0.5 (1 + t) + 0.5 x (1 − t²) c (1 + 3a x²), built in place, in dx's
            # rows, as −0.5 (x c (1 + 3a x²) (t² − 1) − t − 1)
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

        parallel.map(rows_backward, rows, t)
        return (xp.reshape(dx.array, x.shape),)

    return Tensor._make(xp.reshape(y.array, x.shape), (x,), backward, "gelu")


def relu(x: Tensor) -> Tensor:
    return x.relu()


def _sum_last(a, scale: float = 1.0):
    """scale · Σ over the last axis, kept as size 1: (..., n) -> (..., 1).

    Written as a matrix-vector product so that NumPy runs it on the BLAS: 3-5x faster than
    xp.sum or xp.mean over rows of tens to hundreds of numbers (layer norm, attention).
    """
    return xp.matmul(a, xp.full((a.shape[-1], 1), scale, dtype=a.dtype))  # (..., n) @ (n, 1)


def _softmax(z, dim: int):
    e = xp.exp(z - xp.max(z, axis=dim, keepdims=True))  # shift by the max: exp never overflows
    e /= xp.sum(e, axis=dim, keepdims=True)  # in place on our own array: one pass, no copy
    return e


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """p = exp(x) / Σ exp(x). Backward: dx = p ⊙ (g − Σ g ⊙ p)."""
    p = _softmax(x.data, dim)
    return Tensor._make(p, (x,), lambda g: (p * (g - xp.sum(g * p, axis=dim, keepdims=True)),),
                        "softmax")


def _log_softmax(z, dim: int):
    shifted = z - xp.max(z, axis=dim, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=dim, keepdims=True))


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """x − logsumexp(x), stable for huge logits. Backward: dx = g − softmax(x) Σ g."""
    out = _log_softmax(x.data, dim)
    return Tensor._make(out, (x,),
                        lambda g: (g - xp.exp(out) * xp.sum(g, axis=dim, keepdims=True),),
                        "log_softmax")


def cross_entropy(logits: Tensor, targets, ignore_index: int = -100,
                  reduction: str = "mean") -> Tensor:
    """Mean of −log softmax(logits)[target] over positions whose target != ``ignore_index``.

    ``logits`` (..., C), ``targets`` (...) integer class indices, as ``torch.nn.functional``.
    Backward: (softmax(logits) − onehot(target)) / n, zero on ignored positions.
    """
    t = targets.data if isinstance(targets, Tensor) else backend.from_numpy(targets) \
        if type(targets).__module__ == "numpy" else xp.asarray(targets)
    C = logits.shape[-1]
    if tuple(t.shape) != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets of shape {tuple(t.shape)} do not match logits "
                         f"of shape {logits.shape} (expected targets of shape {logits.shape[:-1]})")
    if not xp.isdtype(t.dtype, "integral"):
        raise TypeError(f"cross_entropy: targets must be integer class indices, got {t.dtype}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"cross_entropy: reduction must be 'mean' or 'sum', got {reduction!r}")
    z = xp.reshape(logits.data, (-1, C))  # (N, C)
    t = xp.reshape(t, (-1,))  # (N,)
    valid = t != ignore_index
    if bool(xp.any(valid & ((t < 0) | (t >= C)))):
        raise ValueError(f"cross_entropy: target out of range [0, {C}) "
                         f"(and not ignore_index={ignore_index})")
    one_hot = xp.astype((t[:, None] == xp.arange(C)[None, :]) & valid[:, None], z.dtype)  # (N, C)
    logp = _log_softmax(z, -1)
    n = float(xp.sum(xp.astype(valid, z.dtype))) if reduction == "mean" else 1.0
    n = n if n > 0 else 1.0  # all positions ignored: the loss is 0, as is its gradient
    loss = -xp.sum(logp * one_hot) / n

    def backward(g):
        grad = (xp.exp(logp) * xp.astype(valid, z.dtype)[:, None] - one_hot) * (g / n)
        return (xp.reshape(grad, logits.shape),)

    return Tensor._make(xp.astype(loss, z.dtype), (logits,), backward, "cross_entropy")


def layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """y = (x − μ) / √(σ² + eps) · weight + bias over the last axis.

    Backward with x̂ the normalized input and ĝ = g · weight:
    dx = (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)) / √(σ² + eps).
    """
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if len(shape) != 1 or x.shape[-1] != shape[0]:
        raise ValueError(f"layer_norm: normalizes the last axis only; input {x.shape}, "
                         f"normalized_shape {shape}")
    C = x.shape[-1]
    # rows are normalized independently: blocks of the first axis go to the threads (in 2-D,
    # cut at multiples of 64 rows, where the BLAS sums each row as it would in the whole)
    rows = parallel.blocks(x.shape[0], x.numel() // x.shape[0], 64 if x.ndim == 2 else 1) \
        if x.ndim > 1 else [...]

    y = parallel.Output(x.shape, x.dtype)

    def forward(r):
        xhat = x.data[r] - _sum_last(x.data[r], 1.0 / C)  # x − μ
        rstd = 1.0 / xp.sqrt(_sum_last(xhat * xhat, 1.0 / C) + eps)
        xhat *= rstd  # in place (it is our own array): saves a temporary of x's size
        yr = y.write(r, xp.multiply, xhat, weight.data) if weight is not None \
            else y.put(r, xhat)
        if bias is not None:
            yr += bias.data
        return xhat, rstd

    xhat, rstd = zip(*parallel.map(forward, rows))

    def backward(g):
        gx = parallel.Output(x.shape, x.dtype) if x.requires_grad else None
        gxh = parallel.Output(x.shape, x.dtype) \
            if weight is not None and weight.requires_grad else None

        def rows_backward(r, xhat, rstd):
            if gx is not None:  # ĝ built in place in gx's rows: no temporaries
                gh = gx.write(r, xp.multiply, g[r], weight.data) if weight is not None \
                    else gx.put(r, g[r])
                m = _sum_last(gh * xhat, 1.0 / C)
                gh -= _sum_last(gh, 1.0 / C)
                gh -= xhat * m
                gh *= rstd
            if gxh is not None:
                gxh.write(r, xp.multiply, g[r], xhat)  # the terms of dW

        parallel.map(rows_backward, rows, xhat, rstd)
        # the sums over rows run on the whole array, as they would without threads
        gw = unbroadcast(gxh.array, weight.shape) if gxh is not None else None
        gb = unbroadcast(g, bias.shape) if bias is not None and bias.requires_grad else None
        grads = (gx.array if gx is not None else None, gw, gb)
        return tuple(gr for gr, p in zip(grads, (x, weight, bias)) if p is not None)

    parents = tuple(p for p in (x, weight, bias) if p is not None)
    return Tensor._make(y.array, parents, backward, "layer_norm")


def dropout(x: Tensor, p: float = 0.5, training: bool = True,
            generator: backend.Generator | None = None) -> Tensor:
    """Zero each entry with probability p and scale the rest by 1/(1−p); identity in eval."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    gen = generator or backend.default_generator()
    keep = xp.astype(gen.uniform(x.shape) >= p, x.dtype) / (1.0 - p)
    return Tensor._make(x.data * keep, (x,), lambda g: (g * keep,), "dropout")


def embedding(indices, weight: Tensor) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) picked by integer ``indices`` (...)."""
    idx = indices.data if isinstance(indices, Tensor) else backend.from_numpy(indices) \
        if type(indices).__module__ == "numpy" else xp.asarray(indices)
    if not xp.isdtype(idx.dtype, "integral"):
        raise TypeError(f"embedding: indices must be integers, got {idx.dtype}")
    flat = xp.reshape(idx, (-1,))
    V = weight.shape[0]
    if flat.shape[0] and (bool(xp.min(flat) < 0) or bool(xp.max(flat) >= V)):
        raise ValueError(f"embedding: index out of range [0, {V}) "
                         f"(min {int(xp.min(flat))}, max {int(xp.max(flat))})")
    out = xp.take(weight.data, flat, axis=0)  # (N, dim)

    def backward(g):
        g2 = xp.reshape(g, (-1, weight.shape[1]))
        return (backend.scatter_add(weight.shape, flat, g2, g2.dtype),)

    return Tensor._make(xp.reshape(out, tuple(idx.shape) + (weight.shape[1],)), (weight,),
                        backward, "embedding")


def _causal_bias(T: int, S: int, dtype):
    """(T, S) scores offset: 0 where query t may see key s (s <= t), -inf ahead."""
    allowed = xp.arange(T)[:, None] >= xp.arange(S)[None, :]  # (T, S): no peeking ahead
    return xp.where(allowed, xp.zeros((T, S), dtype=dtype),
                    xp.full((T, S), -math.inf, dtype=dtype))


def _broadcast_shapes(*shapes):
    """The shape ``shapes`` broadcast to (NumPy's rule), or None if they do not."""
    n = max(map(len, shapes))
    out = []
    for sizes in zip(*((1,) * (n - len(s)) + tuple(s) for s in shapes)):
        big = {d for d in sizes if d != 1}
        if len(big) > 1:
            return None
        out.append(big.pop() if big else 1)
    return tuple(out)


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 is_causal: bool = False, scale: float | None = None) -> Tensor:
    """softmax(Q Kᵀ · scale + mask) V, with Q, K, V of shape (..., T, D).

    One fused op: the backward reuses the saved probabilities P and output O,
    dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − Σ dP ⊙ P), dQ = dS K · scale, dK = dSᵀ Q · scale,
    where the row sums Σ_j dP_ij P_ij equal Σ_d dO_id O_id (FlashAttention's D_i, Dao 2022).
    """
    check_same_dtype("scaled_dot_product_attention", query, key, value)
    q, k, v = query.data, key.data, value.data
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"attention: query {query.shape}, key {key.shape}, value {value.shape} "
                         f"do not fit")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    batch = _broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])  # as in a matmul
    if batch is None:
        raise ValueError(f"attention: the leading axes of query {query.shape}, key {key.shape} "
                         f"and value {value.shape} do not broadcast")
    q, k, v = (xp.broadcast_to(t, batch + t.shape[-2:]) for t in (q, k, v))  # views
    T, S = q.shape[-2], k.shape[-2]
    # every (batch, head) is independent: slices of the first axis go to the threads
    rows = parallel.blocks(batch[0], q.size // batch[0] // q.shape[-1] * S) if batch else [...]

    mask = _causal_bias(T, S, q.dtype) if is_causal else None
    info = xp.finfo(q.dtype)
    safe = (math.log(info.smallest_normal), math.log(info.max / S))  # exp needs no shift here

    def forward(r, shift: bool):
        qs = q[r] * scale  # scale Q (T·D numbers) rather than S (T·S numbers): the same S
        s = xp.matmul(qs, k[r].mT)  # (..., T, D) @ (..., D, S) -> (..., T, S)
        # softmax(s) = softmax(s − c) for any c per row; the usual c = row max only keeps exp
        # from overflowing (or every term of a row from underflowing). Two reductions over the
        # scores show when no shift is needed at all, 5x cheaper than a max per row in NumPy.
        # Only if some score is extreme is each row shifted by its max.
        extreme = not safe[0] < float(xp.min(s)) <= float(xp.max(s)) < safe[1]  # before the mask
        if mask is not None:
            s += mask  # in place: 5x cheaper than where()
        if shift or extreme:
            s -= xp.max(s, axis=-1, keepdims=True)
        p = xp.exp(s)
        p /= _sum_last(p)  # (..., T, S) / (..., T, 1)
        o = out.write(r, xp.matmul, p, v[r])  # (..., T, S) @ (..., S, Dv) -> (..., T, Dv)
        return qs, p, o, extreme

    # laid out like q (a transposed view of the heads, usually), so that transposing it back
    # is free
    out = parallel.Output(q.shape[:-1] + v.shape[-1:], q.dtype,
                          like=q if q.shape[-1] == v.shape[-1] else None)
    qs, p, o, extreme = zip(*parallel.map(lambda r: forward(r, False), rows))
    if any(extreme) and not all(extreme):  # rare: then every block shifts, as one block would
        qs, p, o, _ = zip(*parallel.map(lambda r: forward(r, True), rows))

    def backward(g):
        # each laid out like its input, written block by block in place
        gq, gk, gv = (parallel.Output(a.shape, a.dtype, like=a) if t.requires_grad else None
                      for a, t in zip((q, k, v), (query, key, value)))

        def rows_backward(r, p, qs, o):
            gr = g[r]
            if gv is not None:
                gv.write(r, xp.matmul, p.mT, gr)  # (..., S, T) @ (..., T, Dv) -> (..., S, Dv)
            if gq is not None or gk is not None:
                ds = xp.matmul(gr, v[r].mT)  # dP: (..., T, Dv) @ (..., Dv, S) -> (..., T, S)
                # Σ_j dP_ij P_ij = Σ_d dO_id O_id (as O = P V): a (T, Dv) product, not (T, S)
                ds -= _sum_last(gr * o)
                ds *= p  # dS, in place: no more (T, S) arrays than dP itself
                if gq is not None:
                    gqr = gq.write(r, xp.matmul, ds, k[r])  # (..., T, S) @ (..., S, D)
                    gqr *= scale
                if gk is not None:
                    gk.write(r, xp.matmul, ds.mT, qs)  # (..., S, T) @ (..., T, D) -> (..., S, D)

        parallel.map(rows_backward, rows, p, qs, o)
        return tuple(unbroadcast(grad.array, t.shape) if grad is not None else None
                     for grad, t in zip((gq, gk, gv), (query, key, value)))

    return Tensor._make(out.array, (query, key, value), backward, "attention")


__all__ = ["linear", "lora_linear", "gelu", "relu", "softmax", "log_softmax", "cross_entropy",
           "layer_norm", "dropout", "embedding", "scaled_dot_product_attention"]
