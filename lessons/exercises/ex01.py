"""Lesson 01's exercises: write your answers here, then grade them.

    pytest lessons/checks/test_01.py

Each function (and each method of `Value` below its `tanh`) says what to compute; replace its
``raise NotImplementedError`` with your code. Worked answers: ``lessons/solutions/ex01.py``.
"""
import math  # noqa: F401 (you will need these)

import numpy as np  # noqa: F401

from minilora import Tensor  # noqa: F401


class Value:
    """The lesson's `Value`; exercise 1 adds exp, pow, neg and sub."""

    def __init__(self, data, parents=()):
        self.data, self.grad = float(data), 0.0
        self._parents = parents
        self._backward = lambda: None  # a leaf has nothing to pass on

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))

        def _backward():  # d(a + b)/da = 1, d(a + b)/db = 1
            self.grad += out.grad
            other.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))

        def _backward():  # d(a b)/da = b, d(a b)/db = a
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._backward = _backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,))

        def _backward():  # d tanh(a)/da = 1 - tanh(a)^2
            self.grad += (1 - t * t) * out.grad
        out._backward = _backward
        return out

    def exp(self):
        """e^a, with d e^a / da = e^a."""
        raise NotImplementedError("exercise 01.1: write Value.exp (lessons/exercises/ex01.py)")

    def __pow__(self, k):
        """a^k for a constant number k, with d a^k / da = k a^(k-1)."""
        raise NotImplementedError("exercise 01.1: write Value.__pow__")

    def __neg__(self):
        """-a, from the operations above (no new _backward needed)."""
        raise NotImplementedError("exercise 01.1: write Value.__neg__")

    def __sub__(self, other):
        """a - b, from + and negation."""
        raise NotImplementedError("exercise 01.1: write Value.__sub__")

    def __rsub__(self, other):  # 1 - a: given, once __neg__ works
        return other + (-self)

    def __truediv__(self, other):  # a / b = a * b^-1: given, once __pow__ works
        return self * other ** -1

    def __rtruediv__(self, other):  # 1 / a
        return other * self ** -1

    __radd__, __rmul__ = __add__, __mul__

    def backward(self):
        order, seen = [], set()

        def visit(v):  # depth-first: a node is appended after everything it depends on
            if v not in seen:
                seen.add(v)
                for p in v._parents:
                    visit(p)
                order.append(v)
        visit(self)
        self.grad = 1.0  # dL/dL
        for v in reversed(order):
            v._backward()


def sigmoid(z):
    """Exercise 1: sigma(z) = 1 / (1 + e^-z) for a Value z, built from Value's operations."""
    raise NotImplementedError("exercise 01.1: write sigmoid")


def cross_entropy_grad(Z, t):
    """Exercise 2: for logits Z (N, C) (a NumPy array) and integer targets t (N,), the gradient
    of the mean cross-entropy, dL/dZ, derived by hand (no autograd), as an (N, C) array."""
    raise NotImplementedError("exercise 01.2: write cross_entropy_grad")


def unbroadcast_prediction():
    """Exercise 3: a (3, 1) tensor c is added to a (2, 3, 4) tensor a. Predict, without running
    it: (the output's shape, the tuple of output axes the gradient is summed over, the array
    d (a + c).sum() / dc)."""
    raise NotImplementedError("exercise 01.3: write unbroadcast_prediction")


def softmax(z):
    """Exercise 4: softmax over the last axis of a Tensor, from Tensor operations only
    (exp, max, sum, division), safe for logits near 1000."""
    raise NotImplementedError("exercise 01.4: write softmax")
