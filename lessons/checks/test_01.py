"""Checks for lesson 01: `Value`'s new operations, cross-entropy by hand, unbroadcast, softmax.

Run: `pytest lessons/checks/test_01.py` (your answers in lessons/exercises/ex01.py).
"""
import math

import numpy as np
import pytest

import minilora.functional as F
from grading import answers, check, check_close
from minilora import Tensor
from minilora.gradcheck import gradcheck

ex = answers("01")


def slope(fn, x0, eps=1e-6):
    return (fn(ex.Value(x0 + eps)).data - fn(ex.Value(x0 - eps)).data) / (2 * eps)


def value_and_grad(fn, x0):
    x = ex.Value(x0)
    out = fn(x)
    out.backward()
    return out.data, x.grad


def test_exp():
    data, grad = value_and_grad(lambda a: a.exp(), 0.7)
    check_close(data, math.exp(0.7), "Value(0.7).exp().data", "use math.exp", atol=1e-12)
    check_close(grad, math.exp(0.7), "d e^a / da at a = 0.7",
                "the derivative of e^a is e^a: self.grad += e * out.grad", atol=1e-12)


@pytest.mark.parametrize("k", [3, -1, 0.5])
def test_pow(k):
    data, grad = value_and_grad(lambda a: a ** k, 1.5)
    check_close(data, 1.5 ** k, f"Value(1.5) ** {k}", "out = Value(self.data ** k, (self,))",
                atol=1e-12)
    check_close(grad, k * 1.5 ** (k - 1), f"d a^{k} / da at a = 1.5",
                "d a^k / da = k a^(k-1); accumulate with +=", atol=1e-12)


def test_neg_and_sub():
    a, b = ex.Value(2.0), ex.Value(5.0)
    out = a - b
    out.backward()
    check_close(out.data, -3.0, "Value(2) - Value(5)", "a - b = a + (-b)")
    check((a.grad, b.grad) == (1.0, -1.0),
          f"gradients of a - b: expected (1, -1), got ({a.grad}, {b.grad})",
          "negation is multiplication by -1, whose rule Value already has")
    data, grad = value_and_grad(lambda x: -x, 3.0)
    check((data, grad) == (-3.0, -1.0), f"-Value(3): expected value -3 and gradient -1, got "
          f"{data} and {grad}", "-a = a * -1")


@pytest.mark.parametrize("z0", [-3.0, 0.0, 2.0])
def test_sigmoid_and_its_derivative(z0):
    s, grad = value_and_grad(ex.sigmoid, z0)
    check_close(s, 1 / (1 + math.exp(-z0)), f"sigmoid({z0})", "1 / (1 + (-z).exp())",
                atol=1e-12)
    check_close(grad, s * (1 - s), f"d sigmoid / dz at {z0}",
                "sigma' = sigma (1 - sigma) comes out by itself if the rules are right",
                atol=1e-10)
    check_close(grad, slope(ex.sigmoid, z0), "the gradient vs a central difference",
                "compare your exp and pow rules with lesson 01's section 1", atol=1e-7)


def test_cross_entropy_grad():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((6, 5))  # (N, C)
    t = rng.integers(0, 5, 6)  # (N,)
    logits = Tensor(Z, requires_grad=True, dtype="float64")
    F.cross_entropy(logits, t).backward()
    check_close(ex.cross_entropy_grad(Z, t), logits.grad, "dL/dZ of the mean cross-entropy",
                "softmax(Z) minus the one-hot targets, divided by N (the mean)", atol=1e-12)


def test_unbroadcast_prediction():
    shape, axes, grad = ex.unbroadcast_prediction()
    a = Tensor(np.zeros((2, 3, 4)), dtype="float64")
    c = Tensor(np.zeros((3, 1)), requires_grad=True, dtype="float64")
    out = a + c
    out.sum().backward()
    check(tuple(shape) == out.shape, f"output shape: expected {out.shape}, got {tuple(shape)}",
          "align the shapes from the right: (3, 1) becomes (1, 3, 1)")
    check(tuple(sorted(axes)) == (0, 2), f"summed axes: expected (0, 2), got {tuple(axes)}",
          "the new leading axis, and every axis of size 1 that was stretched")
    check_close(grad, c.grad, "d (a + c).sum() / dc", "each entry of c was used 2 x 4 times")


def test_softmax():
    rng = np.random.default_rng(1)
    Z = Tensor(rng.standard_normal((4, 5)), dtype="float64")
    out = ex.softmax(Z)
    check(isinstance(out, Tensor), f"softmax must return a Tensor, got {type(out).__name__}",
          "use Tensor operations (z.exp(), z.max(...), .sum(...)), not NumPy's")
    check_close(out, F.softmax(Z), "softmax(Z)", "exp, then divide by the row sum", atol=1e-12)
    check(gradcheck(ex.softmax, [Z]), "gradcheck failed", "build softmax from Tensor ops only")
    big = ex.softmax(Tensor(np.array([[1000.0, 999.0, 998.0]]), dtype="float64")).numpy()
    check(np.isfinite(big).all(), f"softmax at logits near 1000 gave {big}",
          "subtract the row maximum before exp (and treat it as a constant: .detach())")
