"""Neural-network functions with fused backwards: ``import minilora.functional as F``.

Each could be composed from the primitive ops, but a hand-derived backward is shorter to read,
needs less memory (one saved array instead of a chain of them) and runs faster. Every one is
gradient-checked against finite differences in the tests.
"""
from __future__ import annotations

import math

from . import backend
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
    y = xp.matmul(x2, weight.data.mT)  # (N, in) @ (in, out) -> (N, out)
    if bias is not None:
        y = y + bias.data
    out_shape = x.shape[:-1] + (weight.shape[0],)

    def backward(g):
        g2 = xp.reshape(g, (-1, g.shape[-1]))  # (N, out)
        gx = xp.reshape(xp.matmul(g2, weight.data), x.shape) if x.requires_grad else None
        gw = xp.matmul(g2.mT, x2) if weight.requires_grad else None  # (out, N) @ (N, in)
        gb = xp.sum(g2, axis=0) if bias is not None and bias.requires_grad else None
        return gx, gw, gb

    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._make(xp.reshape(y, out_shape), parents, backward, "linear")


def gelu(x: Tensor) -> Tensor:
    """GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))."""
    c = math.sqrt(2.0 / math.pi)
    x2 = x.data * x.data  # x * x, not x ** 2: NumPy's float32 power is ~100x slower
    t = xp.tanh(c * x.data * (1 + 0.044715 * x2))

    def backward(g):
        dt = (1 - t * t) * c * (1 + 3 * 0.044715 * x2)
        return (g * (0.5 * (1 + t) + 0.5 * x.data * dt),)

    return Tensor._make(0.5 * x.data * (1 + t), (x,), backward, "gelu")


def relu(x: Tensor) -> Tensor:
    return x.relu()


def _softmax(z, dim: int):
    e = xp.exp(z - xp.max(z, axis=dim, keepdims=True))  # shift by the max: exp never overflows
    return e / xp.sum(e, axis=dim, keepdims=True)


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
    mu = xp.mean(x.data, axis=-1, keepdims=True)
    xc = x.data - mu
    rstd = 1.0 / xp.sqrt(xp.mean(xc * xc, axis=-1, keepdims=True) + eps)
    xhat = xc * rstd
    y = xhat
    if weight is not None:
        y = y * weight.data
    if bias is not None:
        y = y + bias.data

    def backward(g):
        gx = gw = gb = None
        if x.requires_grad:
            gh = g * weight.data if weight is not None else g
            gx = rstd * (gh - xp.mean(gh, axis=-1, keepdims=True)
                         - xhat * xp.mean(gh * xhat, axis=-1, keepdims=True))
        if weight is not None and weight.requires_grad:
            gw = unbroadcast(g * xhat, weight.shape)
        if bias is not None and bias.requires_grad:
            gb = unbroadcast(g, bias.shape)
        grads = (gx, gw, gb)
        return tuple(gr for gr, p in zip(grads, (x, weight, bias)) if p is not None)

    parents = tuple(p for p in (x, weight, bias) if p is not None)
    return Tensor._make(y, parents, backward, "layer_norm")


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


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 is_causal: bool = False, scale: float | None = None) -> Tensor:
    """softmax(Q Kᵀ · scale + mask) V, with Q, K, V of shape (..., T, D).

    One fused op: the backward reuses the saved probabilities P,
    dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − Σ dP ⊙ P), dQ = dS K · scale, dK = dSᵀ Q · scale.
    """
    check_same_dtype("scaled_dot_product_attention", query, key, value)
    q, k, v = query.data, key.data, value.data
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"attention: query {query.shape}, key {key.shape}, value {value.shape} "
                         f"do not fit")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = xp.matmul(q, k.mT) * scale  # (..., T, D) @ (..., D, S) -> (..., T, S)
    if is_causal:
        T, S = s.shape[-2], s.shape[-1]
        allowed = xp.arange(T)[:, None] >= xp.arange(S)[None, :]  # (T, S): no peeking ahead
        s = xp.where(allowed, s, -math.inf)
    p = _softmax(s, -1)  # (..., T, S)
    out = xp.matmul(p, v)  # (..., T, S) @ (..., S, Dv) -> (..., T, Dv)

    def backward(g):
        gv = xp.matmul(p.mT, g) if value.requires_grad else None  # (..., S, Dv)
        dp = xp.matmul(g, v.mT)  # (..., T, S)
        ds = p * (dp - xp.sum(dp * p, axis=-1, keepdims=True)) * scale
        gq = xp.matmul(ds, k) if query.requires_grad else None  # (..., T, D)
        gk = xp.matmul(ds.mT, q) if key.requires_grad else None  # (..., S, D)
        return (unbroadcast(gq, query.shape) if gq is not None else None,
                unbroadcast(gk, key.shape) if gk is not None else None,
                unbroadcast(gv, value.shape) if gv is not None else None)

    return Tensor._make(out, (query, key, value), backward, "attention")


__all__ = ["linear", "gelu", "relu", "softmax", "log_softmax", "cross_entropy", "layer_norm",
           "dropout", "embedding", "scaled_dot_product_attention"]
