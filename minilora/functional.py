"""Neural-network functions with fused backwards: ``import minilora.functional as F``.

Each could be composed from the primitive ops, but a hand-derived backward is shorter to read,
needs less memory (one saved array instead of a chain of them) and runs faster. Every one is
gradient-checked against finite differences in the tests.

These are the reference ops: the formula, nothing else. Five of them have a fast kernel
(:mod:`minilora.fast`) that each looks up in ``kernels`` (empty unless ``fast.enable()``), after
checking its inputs, as nanoGPT's attention checks ``if self.flash:``.
"""
from __future__ import annotations

import math

from . import backend
from .backend import kernels, xp
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
    if "linear" in kernels:
        return kernels["linear"](x, weight, bias)
    x2 = xp.reshape(x.data, (-1, x.shape[-1]))  # (N, in), N = all leading axes
    y = xp.matmul(x2, weight.data.mT)  # (N, in) @ (in, out) -> (N, out)
    if bias is not None:
        y = y + bias.data

    def backward(g):
        g2 = xp.reshape(g, (-1, g.shape[-1]))  # (N, out)
        gx = xp.matmul(g2, weight.data) if x.requires_grad else None  # (N, out) @ (out, in)
        gw = xp.matmul(g2.mT, x2) if weight.requires_grad else None  # (out, N) @ (N, in)
        gb = xp.sum(g2, axis=0) if bias is not None and bias.requires_grad else None
        return (xp.reshape(gx, x.shape) if gx is not None else None), gw, gb

    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._make(xp.reshape(y, x.shape[:-1] + (weight.shape[0],)), parents, backward,
                        "linear")


def lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
                scaling: float) -> Tensor:
    """``h = x W0ᵀ + b + scaling · (x Aᵀ) Bᵀ``: a LoRA layer's forward (Hu et al. 2021, eq. 3).

    ``lora_A`` is (r, in), ``lora_B`` (out, r). B A is never formed: x goes through the rank-r
    bottleneck u = x Aᵀ (N, r), and the thin u is scaled rather than the (N, out) update. The
    backward is the composition's: dx = g W0 + gu A, dA = guᵀ x, dB = gᵀ (scaling · u), with
    gu = scaling · g B. The fast path fuses it into one op that keeps only u.
    """
    check_same_dtype("lora_linear", x, weight, lora_A, lora_B,
                     *([bias] if bias is not None else []))
    if x.shape[-1] != weight.shape[1] or lora_A.shape[1] != weight.shape[1] \
            or lora_B.shape != (weight.shape[0], lora_A.shape[0]):
        raise ValueError(f"lora_linear: input {x.shape}, weight {weight.shape}, lora_A "
                         f"{lora_A.shape} and lora_B {lora_B.shape} do not fit")
    if "lora_linear" in kernels:
        return kernels["lora_linear"](x, weight, bias, lora_A, lora_B, scaling)
    return linear(x, weight, bias) + linear(linear(x, lora_A) * scaling, lora_B)


def gelu(x: Tensor) -> Tensor:
    """GELU, tanh approximation (GPT-2): y = 0.5 x (1 + t), t = tanh(c (x + a x³)), c = √(2/π).

    Backward: dy/dx = 0.5 (1 + t) + 0.5 x (1 − t²) c (1 + 3a x²), written as
    −0.5 (x c (1 + 3a x²) (t² − 1) − t − 1): the order of operations the fast kernel uses, so
    the two agree to the bit. ``x * x``, not ``x ** 2``: NumPy's float32 power is far slower.
    """
    if "gelu" in kernels:
        return kernels["gelu"](x)
    c, a = math.sqrt(2.0 / math.pi), 0.044715
    X = x.data
    t = xp.tanh((X * X * (a * c) + c) * X)  # tanh(c (x + a x³)), c factored out as c + a c x²
    y = (t + 1) * X * 0.5

    def backward(g):
        return (((X * X * (3 * a * c) + c) * X * (t * t - 1) - t - 1) * g * -0.5,)

    return Tensor._make(y, (x,), backward, "gelu")


def relu(x: Tensor) -> Tensor:
    return x.relu()


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
    if "layer_norm" in kernels:
        return kernels["layer_norm"](x, weight, bias, eps)
    X = x.data
    xc = X - xp.mean(X, axis=-1, keepdims=True)  # x − μ
    rstd = 1.0 / xp.sqrt(xp.mean(xc * xc, axis=-1, keepdims=True) + eps)  # 1 / √(σ² + eps)
    xhat = xc * rstd
    y = xhat * weight.data if weight is not None else xhat
    if bias is not None:
        y = y + bias.data

    def backward(g):
        gh = g * weight.data if weight is not None else g  # ĝ
        gx = (gh - xp.mean(gh, axis=-1, keepdims=True)
              - xhat * xp.mean(gh * xhat, axis=-1, keepdims=True)) * rstd
        gw = unbroadcast(g * xhat, weight.shape) \
            if weight is not None and weight.requires_grad else None
        gb = unbroadcast(g, bias.shape) if bias is not None and bias.requires_grad else None
        return tuple(gr for gr, p in zip((gx, gw, gb), (x, weight, bias)) if p is not None)

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


def causal_bias(T: int, S: int, dtype):
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


def broadcast_heads(query: Tensor, key: Tensor, value: Tensor):
    """Q, K, V as arrays broadcast to one batch shape (views), and that shape, as in a matmul."""
    q, k, v = query.data, key.data, value.data
    batch = _broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if batch is None:
        raise ValueError(f"attention: the leading axes of query {query.shape}, key {key.shape} "
                         f"and value {value.shape} do not broadcast")
    return (*(xp.broadcast_to(t, batch + t.shape[-2:]) for t in (q, k, v)), batch)


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 is_causal: bool = False, scale: float | None = None) -> Tensor:
    """O = softmax(Q Kᵀ · scale + mask) V, with Q, K, V of shape (..., T, D).

    One fused op: the backward reuses the saved probabilities P and output O,
    dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − Σ dP ⊙ P), dQ = dS K · scale, dK = dSᵀ Q · scale,
    where the row sums Σ_j dP_ij P_ij equal Σ_d dO_id O_id (FlashAttention's D_i, Dao 2022).
    """
    check_same_dtype("scaled_dot_product_attention", query, key, value)
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"attention: query {query.shape}, key {key.shape}, value {value.shape} "
                         f"do not fit")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    q, k, v, _ = broadcast_heads(query, key, value)
    if "scaled_dot_product_attention" in kernels:
        return kernels["scaled_dot_product_attention"](query, key, value, is_causal, scale)
    s = xp.matmul(q, k.mT) * scale  # (..., T, D) @ (..., D, S) -> (..., T, S)
    if is_causal:
        s = s + causal_bias(q.shape[-2], k.shape[-2], q.dtype)  # no peeking ahead
    p = _softmax(s, -1)  # (..., T, S)
    o = xp.matmul(p, v)  # (..., T, S) @ (..., S, Dv) -> (..., T, Dv)

    def backward(g):
        gv = xp.matmul(p.mT, g)  # (..., S, T) @ (..., T, Dv) -> (..., S, Dv)
        dp = xp.matmul(g, v.mT)  # (..., T, Dv) @ (..., Dv, S) -> (..., T, S)
        ds = p * (dp - xp.sum(g * o, axis=-1, keepdims=True))  # Σ_j dP_ij P_ij = Σ_d dO_id O_id
        gq = xp.matmul(ds, k) * scale  # (..., T, S) @ (..., S, D) -> (..., T, D)
        gk = xp.matmul(ds.mT, q) * scale  # (..., S, T) @ (..., T, D) -> (..., S, D)
        return tuple(unbroadcast(grad, t.shape) for grad, t in zip((gq, gk, gv),
                                                                   (query, key, value)))

    return Tensor._make(o, (query, key, value), backward, "attention")


__all__ = ["linear", "lora_linear", "gelu", "relu", "softmax", "log_softmax", "cross_entropy",
           "layer_norm", "dropout", "embedding", "scaled_dot_product_attention"]
