# %% [markdown]
# # Solutions to lesson 01: autograd from scratch
#
# Each solution ends with asserts, so running this file checks it:
# `python lessons/solutions/01_autograd.py`.

# %%
import math

import numpy as np

import minilora.functional as F
from minilora import Tensor
from minilora.gradcheck import gradcheck

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Grow `Value`
#
# The lesson's `Value`, plus `exp`, `__neg__`, `__sub__` and `__pow__` (a constant exponent).
# The new rules: $\frac{d}{da} e^a = e^a$, $\frac{d}{da} a^k = k a^{k-1}$; negation and
# subtraction are built from the rules we already have.

# %%
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
    return 1 / (1 + (-z).exp())


for z0 in (-3.0, -0.5, 0.0, 2.0):
    z = Value(z0)
    s = sigmoid(z)
    s.backward()
    eps = 1e-6
    numeric = (sigmoid(Value(z0 + eps)).data - sigmoid(Value(z0 - eps)).data) / (2 * eps)
    print(f"z = {z0:+.1f}: backward {z.grad:.8f}  s(1-s) {s.data * (1 - s.data):.8f}  "
          f"central difference {numeric:.8f}")
    assert abs(z.grad - s.data * (1 - s.data)) < 1e-12
    assert abs(z.grad - numeric) < 1e-8

# %% [markdown]
# ## 2. Cross-entropy by hand
#
# With $p = \mathrm{softmax}(Z_n)$, $-\log p_{t}$ = $-Z_{n t} + \log\sum_c e^{Z_{n c}}$. Its
# derivative in $Z_{n c}$ is $-[c = t] + e^{Z_{nc}} / \sum_{c'} e^{Z_{nc'}} = p_c - [c = t]$.
# The mean over $N$ rows divides by $N$.

# %%
N, C = 6, 5
Z = Tensor(rng.standard_normal((N, C)), requires_grad=True, dtype="float64")  # (N, C)
t = rng.integers(0, C, N)  # (N,) integer targets
F.cross_entropy(Z, t).backward()

p = np.exp(Z.data - Z.data.max(axis=1, keepdims=True))
p /= p.sum(axis=1, keepdims=True)  # (N, C) softmax
one_hot = np.eye(C)[t]  # (N, C)
by_hand = (p - one_hot) / N
print("max |autograd - by hand|:", np.abs(Z.grad - by_hand).max())
assert np.allclose(Z.grad, by_hand, atol=1e-12)

# %% [markdown]
# ## 3. Predict `unbroadcast`
#
# Shapes align from the right: (3, 1) against (2, 3, 4) becomes (1, 3, 1) → (2, 3, 4). The
# gradient is summed over the new leading axis 0 and over the stretched axis 2, back to (3, 1).
# Each entry of the (3, 1) tensor was used 2 · 4 = 8 times, so the gradient of the sum is 8.

# %%
a = Tensor(rng.standard_normal((2, 3, 4)), dtype="float64")
c = Tensor(np.zeros((3, 1)), requires_grad=True, dtype="float64")
out = a + c
out.sum().backward()
print("output shape", out.shape, " c.grad", c.grad.ravel())
assert out.shape == (2, 3, 4)
assert c.grad.shape == (3, 1) and np.array_equal(c.grad, np.full((3, 1), 8.0))

# %% [markdown]
# ## 4. Softmax from primitives
#
# $\mathrm{softmax}(z)_i = e^{z_i - m} / \sum_j e^{z_j - m}$ for any constant $m$; choosing
# $m = \max_j z_j$ makes every exponent ≤ 0, so `exp` cannot overflow. The maximum is treated as
# a constant (`detach`): it cancels in the ratio, so its gradient contribution is exactly zero.

# %%
def softmax(z):
    m = z.max(axis=-1, keepdims=True).detach()  # (N, 1), a constant shift
    e = (z - m).exp()  # (N, C), every entry in (0, 1]
    return e / e.sum(axis=-1, keepdims=True)  # (N, C) / (N, 1) -> (N, C)


Z = Tensor(rng.standard_normal((4, 5)), dtype="float64")
assert gradcheck(softmax, [Z])
assert np.allclose(softmax(Z).data, F.softmax(Z).data)

big = Tensor(np.array([[1000.0, 999.0, 998.0]]), dtype="float64")
with np.errstate(over="ignore", invalid="ignore"):
    naive = (big.exp() / big.exp().sum(axis=-1, keepdims=True)).data  # inf / inf = nan
print("naive softmax at logits near 1000:", naive, "  shifted:", softmax(big).data)
assert np.isnan(naive).all() and np.isfinite(softmax(big).data).all()
print("all solutions check out")
