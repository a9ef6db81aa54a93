"""Answers to lesson 01's exercises, in the form the checks grade (`lessons/checks/test_01.py`).

`lessons/solutions/01_autograd.py` runs them and explains what they show.
"""
import math

import numpy as np

from minilora import Tensor


class Value:
    """A scalar that remembers how it was made, with exp, pow, neg and sub added."""

    def __init__(self, data, parents=()):
        self.data, self.grad = float(data), 0.0
        self._parents = parents
        self._backward = lambda: None

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))

        def _backward():
            self.grad += out.grad
            other.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._backward = _backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,))

        def _backward():
            self.grad += (1 - t * t) * out.grad
        out._backward = _backward
        return out

    def exp(self):
        e = math.exp(self.data)
        out = Value(e, (self,))

        def _backward():  # d e^a / da = e^a
            self.grad += e * out.grad
        out._backward = _backward
        return out

    def __pow__(self, k):
        assert isinstance(k, (int, float)), "only a constant exponent"
        out = Value(self.data ** k, (self,))

        def _backward():  # d a^k / da = k a^(k-1)
            self.grad += k * self.data ** (k - 1) * out.grad
        out._backward = _backward
        return out

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other ** -1

    __radd__, __rmul__ = __add__, __mul__

    def __rsub__(self, other):
        return other + (-self)

    def __rtruediv__(self, other):
        return other * self ** -1

    def backward(self):
        order, seen = [], set()

        def visit(v):
            if v not in seen:
                seen.add(v)
                for p in v._parents:
                    visit(p)
                order.append(v)
        visit(self)
        self.grad = 1.0
        for v in reversed(order):
            v._backward()


def sigmoid(z):
    """Exercise 1: sigma(z) = 1 / (1 + e^-z), from Value's operations."""
    return 1 / (1 + (-z).exp())


def cross_entropy_grad(Z, t):
    """Exercise 2: dL/dZ = (softmax(Z) - onehot(t)) / N for the mean cross-entropy, (N, C)."""
    p = np.exp(Z - Z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)  # (N, C) softmax
    return (p - np.eye(Z.shape[1])[t]) / len(Z)  # (N, C)


def unbroadcast_prediction():
    """Exercise 3: (output shape, axes summed over, gradient of (a + c).sum() w.r.t. c)."""
    return (2, 3, 4), (0, 2), np.full((3, 1), 8.0)


def softmax(z):
    """Exercise 4: softmax over the last axis from Tensor operations, shifted by the row max."""
    m = z.max(axis=-1, keepdims=True).detach()  # (N, 1), a constant shift
    e = (z - m).exp()  # (N, C), every entry in (0, 1]
    return e / e.sum(axis=-1, keepdims=True)  # (N, C) / (N, 1) -> (N, C)
