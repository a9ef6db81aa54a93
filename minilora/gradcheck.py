"""Gradient checking: does backward() agree with the definition of a derivative?

Two checks, both in float64 (float32 round-off would swamp a finite difference):

* :func:`gradcheck` compares every entry of every input's gradient with the central difference
  (f(x + ε eᵢ) − f(x − ε eᵢ)) / 2ε. Exact, but one pair of forward passes per entry.
* :func:`vjp_check` compares one number: ⟨u, J v⟩ for random directions u (output) and v (input),
  from backward() as ⟨J^T u, v⟩ and from a single directional difference. Cheap for any size.
"""
from __future__ import annotations

from .backend import Generator, xp
from .tensor import Tensor


def _scalar(fn, inputs, u):
    """⟨u, fn(inputs)⟩ as a Python float (u = None means the output is already a scalar)."""
    out = fn(*inputs)
    return float(xp.sum(out.data if u is None else out.data * u))


def _check_inputs(inputs) -> None:
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or str(t.dtype).split(".")[-1] != "float64":
            raise TypeError(f"gradient checks need float64 Tensors; input {i} is "
                            f"{getattr(t, 'dtype', type(t).__name__)}")


def numerical_grad(fn, inputs: list[Tensor], eps: float = 1e-6, u=None) -> list:
    """Central differences of ⟨u, fn(inputs)⟩ with respect to every entry of every input."""
    grads = []
    for t in inputs:
        x0, n = t.data, t.numel()
        positions = xp.arange(n)
        entries = []
        for i in range(n):
            bump = eps * xp.reshape(xp.astype(positions == i, x0.dtype), t.shape)  # ε eᵢ
            t.data = x0 + bump
            plus = _scalar(fn, inputs, u)
            t.data = x0 - bump
            minus = _scalar(fn, inputs, u)
            entries.append((plus - minus) / (2 * eps))
        t.data = x0
        grads.append(xp.reshape(xp.asarray(entries, dtype=x0.dtype), t.shape))
    return grads


def analytic_grad(fn, inputs: list[Tensor], u=None) -> list:
    """Gradients of ⟨u, fn(inputs)⟩ from backward()."""
    for t in inputs:
        t.grad = None
        t.requires_grad = True
    out = fn(*inputs)
    out.backward(None if u is None else u * xp.ones_like(out.data))
    return [t.grad if t.grad is not None else xp.zeros_like(t.data) for t in inputs]


def gradcheck(fn, inputs: list[Tensor], eps: float = 1e-6, atol: float = 1e-7,
              rtol: float = 1e-6, seed: int = 0) -> bool:
    """True if backward() matches central differences entry by entry; raises otherwise.

    A non-scalar output is reduced with a random weighting u, so every output entry counts.
    """
    _check_inputs(inputs)
    out = fn(*inputs)
    u = None if out.numel() == 1 else Generator(seed).normal(out.shape, dtype="float64")
    analytic = analytic_grad(fn, inputs, u)
    numeric = numerical_grad(fn, inputs, eps, u)
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        err = xp.abs(a - n)
        bad = err > atol + rtol * xp.abs(n)
        if bool(xp.any(bad)):
            raise AssertionError(f"gradcheck: input {i} (shape {inputs[i].shape}): max abs error "
                                 f"{float(xp.max(err)):.3e}, analytic vs numeric differ")
    return True


def vjp_check(fn, inputs: list[Tensor], eps: float = 1e-6, rtol: float = 1e-6,
              seed: int = 0) -> bool:
    """True if ⟨Jᵀu, v⟩ (backward) equals d/dε ⟨u, f(x + ε v)⟩ (central difference); raises otherwise."""
    _check_inputs(inputs)
    gen = Generator(seed)
    out = fn(*inputs)
    u = gen.normal(out.shape, dtype="float64")
    vs = [gen.normal(t.shape, dtype="float64") for t in inputs]
    analytic = sum(float(xp.sum(g * v)) for g, v in zip(analytic_grad(fn, inputs, u), vs))
    originals = [t.data for t in inputs]

    def value_at(step: float) -> float:  # ⟨u, f(x + step · v)⟩
        for t, x0, v in zip(inputs, originals, vs):
            t.data = x0 + step * v
        return _scalar(fn, inputs, u)

    plus, minus = value_at(eps), value_at(-eps)
    for t, x0 in zip(inputs, originals):
        t.data = x0
    numeric = (plus - minus) / (2 * eps)
    if abs(analytic - numeric) > rtol * max(1.0, abs(numeric)):
        raise AssertionError(f"vjp_check: backward gives {analytic:.10e}, finite difference "
                             f"{numeric:.10e}")
    return True
