"""Tensor: an array that remembers how it was made, and reverse-mode autodiff over it.

Each operator computes its output and, right beside it, a ``backward(g)`` closure: given
``g = dL/d(out)`` it returns ``dL/d(input)`` for each input (the chain rule for that operator).
``Tensor.backward()`` visits the graph in reverse topological order and adds up what flows in.

Frozen means free: an input with ``requires_grad=False`` gets ``None`` from every closure
(no gradient work), and an output that depends only on such inputs records no graph at all.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

from . import backend
from .backend import xp

_grad_enabled = True


@contextmanager
def no_grad():
    """Run without recording the graph (evaluation, optimizer updates), as ``torch.no_grad()``."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


def unbroadcast(grad, shape: tuple[int, ...]):
    """Sum ``grad`` back down to ``shape``: the adjoint of broadcasting ``shape`` up to grad's.

    Broadcasting copies a value along new leading axes and along axes of size 1, so its
    gradient sums over exactly those axes. Every broadcasting operator uses this one rule.
    """
    if tuple(grad.shape) == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    if lead > 0:
        grad = xp.sum(grad, axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = xp.sum(grad, axis=axes, keepdims=True)
    return grad


def _floating(a) -> bool:
    return xp.isdtype(a.dtype, "real floating")


def _to_array(data, dtype=None):
    """Any array-like to an array of the active namespace; Python floats become float32."""
    if dtype is not None:
        dtype = backend.dtype(dtype) if isinstance(dtype, str) else dtype
    if type(data).__module__ == "numpy" and not backend.is_numpy():
        data = backend.from_numpy(data)  # host -> device, at construction only
    arr = data if hasattr(data, "__array_namespace__") else xp.asarray(data)
    if dtype is None and _floating(arr) and not hasattr(data, "__array_namespace__"):
        dtype = backend.dtype()  # Python lists/floats default to float32, as in PyTorch
    if dtype is not None and arr.dtype != dtype:
        arr = xp.astype(arr, dtype)
    return arr


def _freed(g):
    raise RuntimeError(
        "trying to backward through the graph a second time: its intermediate results were "
        "released after the first backward(); call backward(retain_graph=True) the first time"
    )


class Tensor:
    """An n-dimensional array with an optional gradient, e.g. ``Tensor([[1., 2.]], requires_grad=True)``.

    ``.data`` and ``.grad`` are plain arrays of the active backend (NumPy by default).
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_op")
    __array_priority__ = 1000  # ndarray + Tensor defers to Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _to_array(data, dtype)
        if requires_grad and not _floating(self.data):
            raise TypeError(f"only floating-point tensors can require grad, got {self.data.dtype}")
        self.grad = None
        self.requires_grad = requires_grad
        self._parents: tuple[Tensor, ...] = ()
        self._backward = None
        self._op = ""

    # -- the graph -----------------------------------------------------------------------
    @staticmethod
    def _make(data, parents: tuple["Tensor", ...], backward, op: str) -> "Tensor":
        """The output of an op; it joins the graph only if some input needs a gradient."""
        out = Tensor.__new__(Tensor)
        out.data, out.grad, out._op = data, None, op
        out.requires_grad = _grad_enabled and any(p.requires_grad for p in parents)
        out._parents = parents if out.requires_grad else ()
        out._backward = backward if out.requires_grad else None
        return out

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    def _topological_order(self) -> list["Tensor"]:
        order, seen, stack = [], set(), [(self, False)]
        while stack:  # iterative DFS: deep graphs must not hit Python's recursion limit
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node._parents if p.requires_grad and id(p) not in seen)
        return order

    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate ``d self / d leaf`` into every leaf's ``.grad`` (``grad`` = d L / d self)."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no input of "
                               "it has requires_grad=True, or it was computed under no_grad())")
        if grad is None:
            if math.prod(self.shape) != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar output, got "
                                   f"shape {self.shape}; pass grad= of that shape")
            grad = xp.ones_like(self.data)
        else:
            grad = _to_array(grad.data if isinstance(grad, Tensor) else grad, self.data.dtype)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward(): grad has shape {tuple(grad.shape)}, "
                                 f"but the output has shape {self.shape}")
        grads = {id(self): grad}
        owned = set()  # nodes whose running sum is an array this loop made (safe to add into)
        for node in reversed(self._topological_order()):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node.is_leaf:  # gradients accumulate, as in PyTorch; .grad owns its memory
                if node.grad is not None:
                    node.grad = node.grad + g
                else:
                    node.grad = g if id(node) in owned else xp.asarray(g, copy=True)
                continue
            for parent, pg in zip(node._parents, node._backward(g)):
                if pg is not None and parent.requires_grad:
                    key = id(parent)
                    if key not in grads:
                        grads[key] = pg
                    elif key in owned:
                        grads[key] += pg  # in place on our own sum: no new array per input
                    else:
                        grads[key] = grads[key] + pg
                        owned.add(key)
            if not retain_graph:
                node._parents, node._backward = (), _freed

    # -- conveniences ---------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)

    def numel(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def numpy(self):
        """Explicit host transfer to a NumPy array."""
        return backend.to_numpy(self.data)

    def item(self) -> float:
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return float(xp.reshape(self.data, ()))

    def __array__(self, dtype=None, copy=None):  # lets np.asarray(t) work on the NumPy backend
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({backend.to_numpy(self.data)!r}{grad})"

    def astype(self, dtype) -> "Tensor":
        """A cast copy, differentiable (the gradient is cast back)."""
        source = self.data.dtype
        return Tensor._make(_to_array(self.data, dtype), (self,),
                            lambda g: (xp.astype(g, source),), "astype")

    def double(self) -> "Tensor":
        return self.astype("float64")

    def float(self) -> "Tensor":
        return self.astype("float32")

    __hash__ = object.__hash__


def as_tensor(x, like: Tensor | None = None) -> Tensor:
    """``x`` if it is a Tensor, else a constant Tensor (with ``like``'s dtype when floating)."""
    if isinstance(x, Tensor):
        return x
    dtype = like.dtype if like is not None and _floating(like.data) else None
    return Tensor(x, dtype=dtype)


def check_same_dtype(op: str, *tensors: Tensor) -> None:
    """Mixing float32 and float64 is an error here, not a silent (and slow) upcast."""
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        names = " and ".join(str(t.dtype) for t in tensors)
        raise TypeError(f"{op}: dtype mismatch ({names}); cast one side with .astype()")
