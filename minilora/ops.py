"""The primitive operators, each forward written right beside its backward.

Every function takes Tensors (or Python numbers) and returns ``Tensor._make(out, inputs,
backward)``, where ``backward(g)`` maps ``g = dL/d(out)`` to one gradient per input, or ``None``
for an input that does not require grad (frozen means free: that product is never computed).
At the end of the file the operators become Tensor methods (``a + b``, ``a @ b``, ``a.sum()``).
"""
from __future__ import annotations

from numbers import Number

from . import backend
from .backend import xp
from .tensor import Tensor, as_tensor, check_same_dtype, unbroadcast


def _need(t) -> bool:
    return isinstance(t, Tensor) and t.requires_grad


def _binary(a: Tensor, b, op: str) -> tuple[Tensor, Tensor | Number]:
    """Numbers stay numbers (``x * 2.0`` keeps x's dtype); anything else becomes a Tensor."""
    if isinstance(b, Number):
        # A NumPy scalar acts as the Python number it holds: np.float64 would upcast float32.
        return a, (b.item() if hasattr(b, "item") else b)
    b = as_tensor(b, like=a)
    check_same_dtype(op, a, b)
    return a, b


def _data(x):
    return x.data if isinstance(x, Tensor) else x


# -- elementwise arithmetic (broadcasting; gradients go through unbroadcast) ---------------
def add(a: Tensor, b) -> Tensor:
    a, b = _binary(a, b, "add")
    return Tensor._make(a.data + _data(b), (a, *([b] if isinstance(b, Tensor) else [])),
                        lambda g: (unbroadcast(g, a.shape) if a.requires_grad else None,
                                   unbroadcast(g, b.shape) if _need(b) else None), "add")


def sub(a: Tensor, b) -> Tensor:
    a, b = _binary(a, b, "sub")
    return Tensor._make(a.data - _data(b), (a, *([b] if isinstance(b, Tensor) else [])),
                        lambda g: (unbroadcast(g, a.shape) if a.requires_grad else None,
                                   unbroadcast(-g, b.shape) if _need(b) else None), "sub")


def mul(a: Tensor, b) -> Tensor:
    a, b = _binary(a, b, "mul")
    bd = _data(b)
    return Tensor._make(a.data * bd, (a, *([b] if isinstance(b, Tensor) else [])),
                        lambda g: (unbroadcast(g * bd, a.shape) if a.requires_grad else None,
                                   unbroadcast(g * a.data, b.shape) if _need(b) else None), "mul")


def div(a: Tensor, b) -> Tensor:
    a, b = _binary(a, b, "div")
    bd = _data(b)
    out = a.data / bd
    return Tensor._make(out, (a, *([b] if isinstance(b, Tensor) else [])),
                        lambda g: (unbroadcast(g / bd, a.shape) if a.requires_grad else None,
                                   unbroadcast(-g * out / bd, b.shape) if _need(b) else None),
                        "div")


def pow(a: Tensor, b) -> Tensor:
    """``a ** b``: d/da = b a^(b-1); d/db = a^b log a (defined for a > 0).

    At a = 0 the formulas give 0 · ∞; the limits are used instead, as in PyTorch: d/da = 0
    where b = 0 (a⁰ is the constant 1) and d/db = 0 where b ≥ 0.
    """
    a, b = _binary(a, b, "pow")
    bd = _data(b)
    out = a.data ** bd

    def backward(g):
        ga = gb = None
        if a.requires_grad:
            ga = unbroadcast(xp.where(xp.asarray(bd) == 0, 0 * g, g * bd * a.data ** (bd - 1)),
                             a.shape)
        if _need(b):
            at_zero = (a.data == 0) & (bd >= 0)
            gb = unbroadcast(xp.where(at_zero, 0 * g, g * out * xp.log(a.data)), b.shape)
        return ga, gb

    return Tensor._make(out, (a, *([b] if isinstance(b, Tensor) else [])), backward, "pow")


def rsub(a: Tensor, b) -> Tensor:
    return add(neg(a), b)


def rdiv(a: Tensor, b) -> Tensor:
    return div(as_tensor(b, like=a), a) if not isinstance(b, Number) else mul(pow(a, -1.0), b)


def rpow(a: Tensor, b) -> Tensor:
    return pow(as_tensor(b, like=a), a)


def neg(a: Tensor) -> Tensor:
    return Tensor._make(-a.data, (a,), lambda g: (-g,), "neg")


# -- matrix product -----------------------------------------------------------------------
def matmul(a: Tensor, b) -> Tensor:
    """``a @ b`` with NumPy's rules (1-D operands, broadcast batch axes).

    dL/da = g @ bᵀ and dL/db = aᵀ @ g, each summed over the axes broadcasting added.
    """
    a, b = _binary(a, b, "matmul")
    if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                         f"(inner dimensions must match)")
    A = a.data if a.ndim > 1 else a.data[None, :]  # 1-D operands act as a row / a column
    B = b.data if b.ndim > 1 else b.data[:, None]
    out = xp.matmul(A, B)  # (..., n, k) @ (..., k, m) -> (..., n, m)

    def backward(g):
        G = xp.reshape(g, out.shape)
        ga = gb = None
        if a.requires_grad:
            ga = xp.reshape(unbroadcast(xp.matmul(G, B.mT), A.shape), a.shape)
        if b.requires_grad:
            if B.ndim == 2 and A.ndim > 2:
                # Speed: fold the batch axes into one GEMM instead of a batched product + sum.
                gb = xp.matmul(xp.reshape(A, (-1, A.shape[-1])).mT,
                               xp.reshape(G, (-1, G.shape[-1])))  # (k, N) @ (N, m) -> (k, m)
            else:
                gb = unbroadcast(xp.matmul(A.mT, G), B.shape)
            gb = xp.reshape(gb, b.shape)
        return ga, gb

    shape = out.shape[:-2] + (out.shape[-2],) * (a.ndim > 1) + (out.shape[-1],) * (b.ndim > 1)
    return Tensor._make(xp.reshape(out, shape), (a, b), backward, "matmul")


# -- elementwise functions ----------------------------------------------------------------
def exp(a: Tensor) -> Tensor:
    out = xp.exp(a.data)
    return Tensor._make(out, (a,), lambda g: (g * out,), "exp")


def log(a: Tensor) -> Tensor:
    return Tensor._make(xp.log(a.data), (a,), lambda g: (g / a.data,), "log")


def tanh(a: Tensor) -> Tensor:
    out = xp.tanh(a.data)
    return Tensor._make(out, (a,), lambda g: (g * (1 - out * out),), "tanh")


def relu(a: Tensor) -> Tensor:
    mask = a.data > 0
    return Tensor._make(xp.where(mask, a.data, 0), (a,),
                        lambda g: (xp.where(mask, g, 0),), "relu")


def sqrt(a: Tensor) -> Tensor:
    out = xp.sqrt(a.data)
    return Tensor._make(out, (a,), lambda g: (g / (2 * out),), "sqrt")


# -- reductions ---------------------------------------------------------------------------
def _axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(ax % ndim for ax in axes)


def _expand(g, axes: tuple[int, ...], keepdims: bool):
    """Put the reduced axes back as size 1, so ``g`` broadcasts against the input."""
    if keepdims:
        return g
    shape = list(g.shape)
    for ax in sorted(axes):
        shape.insert(ax, 1)
    return xp.reshape(g, tuple(shape))


def sum(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    axes = _axes(axis, a.ndim)
    return Tensor._make(xp.sum(a.data, axis=axes, keepdims=keepdims), (a,),
                        lambda g: (xp.broadcast_to(_expand(g, axes, keepdims), a.shape),), "sum")


def mean(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    axes = _axes(axis, a.ndim)
    count = 1
    for ax in axes:
        count *= a.shape[ax]
    return mul(sum(a, axes, keepdims), 1.0 / count)


def max(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Gradient flows to the maximal entries, shared equally among ties."""
    axes = _axes(axis, a.ndim)
    out = xp.max(a.data, axis=axes, keepdims=True)

    def backward(g):
        hit = xp.astype(a.data == out, a.data.dtype)
        return (_expand(g, axes, keepdims) * hit / xp.sum(hit, axis=axes, keepdims=True),)

    return Tensor._make(out if keepdims else xp.reshape(out, tuple(
        n for i, n in enumerate(a.shape) if i not in axes)), (a,), backward, "max")


# -- shape --------------------------------------------------------------------------------
def reshape(a: Tensor, *shape) -> Tensor:
    shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
    return Tensor._make(xp.reshape(a.data, shape), (a,),
                        lambda g: (xp.reshape(g, a.shape),), "reshape")


def permute(a: Tensor, *dims) -> Tensor:
    dims = tuple(dims[0]) if len(dims) == 1 and not isinstance(dims[0], int) else dims
    dims = tuple(d % a.ndim for d in dims)
    inverse = tuple(sorted(range(a.ndim), key=dims.__getitem__))
    return Tensor._make(xp.permute_dims(a.data, dims), (a,),
                        lambda g: (xp.permute_dims(g, inverse),), "permute")


def transpose(a: Tensor, dim0: int = -2, dim1: int = -1) -> Tensor:
    """Swap two axes (PyTorch's ``transpose(dim0, dim1)``)."""
    dims = list(range(a.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(a, dims)


def getitem(a: Tensor, key) -> Tensor:
    """Indexing; basic (slices, ints, None, ...) on every backend, integer arrays on NumPy."""
    key = tuple(_data(k) for k in key) if isinstance(key, tuple) else _data(key)
    out = a.data[key]

    def backward(g):
        full = xp.zeros(a.shape, dtype=g.dtype)
        keys = key if isinstance(key, tuple) else (key,)
        if any(hasattr(k, "shape") or isinstance(k, list) for k in keys):
            backend.index_add(full, key, g)  # integer-array indexing may repeat entries
        else:
            full[key] = g
        return (full,)

    return Tensor._make(out, (a,), backward, "getitem")


def cat(tensors, dim: int = 0) -> Tensor:
    """Concatenate along ``dim`` (``torch.cat``); the gradient is split back into the pieces."""
    tensors = [as_tensor(t) for t in tensors]
    check_same_dtype("cat", *tensors)
    dim = dim % tensors[0].ndim
    bounds = [0]
    for t in tensors:
        bounds.append(bounds[-1] + t.shape[dim])

    def backward(g):
        index = (slice(None),) * dim
        return tuple(g[index + (slice(lo, hi),)] if t.requires_grad else None
                     for t, lo, hi in zip(tensors, bounds, bounds[1:]))

    return Tensor._make(xp.concat([t.data for t in tensors], axis=dim), tuple(tensors),
                        backward, "cat")


def stack(tensors, dim: int = 0) -> Tensor:
    """Stack along a new axis ``dim`` (``torch.stack``)."""
    tensors = [as_tensor(t) for t in tensors]
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors need the same shape, got {sorted(shapes)}")
    dim = dim % (tensors[0].ndim + 1)
    return cat([reshape(t, t.shape[:dim] + (1,) + t.shape[dim:]) for t in tensors], dim)


# -- Tensor methods -----------------------------------------------------------------------
Tensor.__add__ = Tensor.__radd__ = add
Tensor.__sub__, Tensor.__rsub__ = sub, rsub
Tensor.__mul__ = Tensor.__rmul__ = mul
Tensor.__truediv__, Tensor.__rtruediv__ = div, rdiv
Tensor.__pow__, Tensor.__rpow__ = pow, rpow
Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = lambda a, b: matmul(as_tensor(b, like=a), a)
Tensor.__neg__ = neg
Tensor.__getitem__ = getitem
for _f in (exp, log, tanh, relu, sqrt, sum, mean, max, reshape, permute, transpose):
    setattr(Tensor, _f.__name__, _f)
Tensor.T = property(lambda a: permute(a, tuple(reversed(range(a.ndim)))))
Tensor.mT = property(lambda a: transpose(a, -2, -1))
