# %% [markdown]
# # Lesson 01: autograd from scratch
#
# Training a network, and training LoRA's A and B, means following the gradient of a loss.
# This lesson builds the machine that computes gradients: reverse-mode automatic
# differentiation, the chain rule applied one operation at a time.
#
# **What you'll learn**
# - the chain rule as code: every operation stores a small `_backward` beside its forward;
# - `backward()` as a topological sort and a reversed loop (a 40-line `Value` class);
# - the same idea for arrays in minilora's `Tensor`, and the gradient of a matrix product;
# - broadcasting and its adjoint, `unbroadcast`;
# - gradient checking with `minilora.gradcheck`, and the bug it catches;
# - "frozen means free": why a weight with `requires_grad=False` costs no gradient work.
#
# **Prerequisites**: Python, NumPy arrays, the derivative of a function of one variable.
#
# **Time**: 30–45 minutes to read and do the exercises; how long it runs (full and
# `MINILORA_FAST=1`, wall and CPU time) is measured in `lessons/README.md`.

# %%
import inspect
import math
import os

import numpy as np
from threadpoolctl import threadpool_limits

import minilora.functional as F
import minilora.ops
from minilora import Tensor, unbroadcast
from minilora.gradcheck import gradcheck, vjp_check

# One BLAS thread: these matrices are small, so extra threads gain little, and on a busy
# machine a thread waiting for a core makes each product slower (lessons/README.md's times
# were measured so). threadpoolctl sets it for this process only.
threadpool_limits(1)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"  # CI runs every lesson with MINILORA_FAST=1
N = 3 if FAST else 8  # array size in the gradient checks (2 forward passes per entry)

# %% [markdown]
# ## 1. A derivative is a slope
#
# For $f(x) = x^3 - 2x$, calculus gives $f'(x) = 3x^2 - 2$. A computer without calculus can
# still measure the slope with a *central difference*,
# $\frac{f(x+\varepsilon) - f(x-\varepsilon)}{2\varepsilon}$, whose error shrinks like
# $\varepsilon^2$. We will use it as the referee for every gradient in this course.

# %%
def f(x):
    return x ** 3 - 2 * x


x0, eps = 1.5, 1e-5
exact = 3 * x0 ** 2 - 2
numeric = (f(x0 + eps) - f(x0 - eps)) / (2 * eps)
print(f"f'(1.5): exact {exact}, central difference {numeric:.10f}")

# %% [markdown]
# ## 2. The chain rule, one operation at a time: `Value`
#
# A `Value` holds a number and remembers the values it was made from. Each operation builds
# its output and, right beside it, a `_backward` closure that applies the chain rule for that
# operation: if $L$ depends on $out = a \cdot b$, then
# $\frac{\partial L}{\partial a} \mathrel{+}= b \, \frac{\partial L}{\partial out}$.
#
# `backward()` orders the graph so that every node comes after the nodes it was made from
# (a topological sort), seeds $\partial L / \partial L = 1$, and calls the closures in reverse.
# Gradients *accumulate* (`+=`): a value used twice receives a contribution from each use,
# which is the multivariate chain rule.

# %%
class Value:
    """A scalar that remembers how it was made (Karpathy's micrograd, cut to the bone)."""

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


# %% [markdown]
# A neuron, $o = \tanh(w_1 x_1 + w_2 x_2 + b)$, and its five partial derivatives in one
# backward pass:

# %%
def neuron(x1, x2, w1, w2, b):
    return (w1 * x1 + w2 * x2 + b).tanh()


# micrograd's example: b is chosen so that the neuron's output is tanh(0.8814) = 1/sqrt(2)
inputs = {"x1": 2.0, "x2": 0.0, "w1": -3.0, "w2": 1.0, "b": 6.8813735870195432}
leaves = {name: Value(v) for name, v in inputs.items()}
o = neuron(**leaves)
o.backward()
value_grads = {name: v.grad for name, v in leaves.items()}
for name, g in value_grads.items():
    print(f"do/d{name:2} = {g:+.6f}")

# %% [markdown]
# The referee: nudge one input at a time and measure the slope.

# %%
def central_difference(fn, point, name, eps=1e-6):
    """(fn(point + eps e_name) - fn(point - eps e_name)) / 2 eps, evaluated on Values."""
    def at(shift):
        return fn(**{k: Value(v + shift * (k == name)) for k, v in point.items()}).data
    return (at(eps) - at(-eps)) / (2 * eps)


for name in inputs:
    numeric = central_difference(neuron, inputs, name)
    assert abs(numeric - value_grads[name]) < 1e-6, name
print("Value's gradients match central differences")

# %% [markdown]
# Using a value twice: $y = x \cdot x$ must give $dy/dx = 2x$. With `=` instead of `+=` in the
# closures, the second use would overwrite the first and we would get $x$.

# %%
x = Value(3.0)
y = x * x
y.backward()
print("d(x*x)/dx at x = 3:", x.grad)

# %% [markdown]
# ## 3. The same with minilora's `Tensor`
#
# `minilora.Tensor` is the same machine for arrays, with PyTorch's names: `requires_grad=True`
# marks a leaf we want the gradient of, `.backward()` runs the reversed loop, `.grad` holds
# $\partial L / \partial\,\text{leaf}$ (a NumPy array). We use float64 here so the comparison
# with `Value` (Python floats) is exact to round-off.

# %%
tensors = {name: Tensor(v, requires_grad=True, dtype="float64") for name, v in inputs.items()}
o_t = neuron(**tensors)
o_t.backward()
for name, t in tensors.items():
    print(f"do/d{name:2}: Tensor {float(t.grad):+.6f}   Value {value_grads[name]:+.6f}")
    assert abs(float(t.grad) - value_grads[name]) < 1e-12

# %% [markdown]
# **For the PyTorch reader.** The same lines in PyTorch:
#
# | here (minilora) | PyTorch |
# |---|---|
# | `Tensor(v, requires_grad=True, dtype="float64")` | `torch.tensor(v, requires_grad=True, dtype=torch.float64)` |
# | `o_t.backward()`, then `t.grad` (a NumPy array) | `o.backward()`, then `t.grad` (a `torch.Tensor`) |
# | `x.detach()`, `with no_grad():` | `x.detach()`, `with torch.no_grad():` |
# | a `_backward` closure beside each forward (`minilora/ops.py`) | `torch.autograd.Function` with `forward(ctx, ...)` and `backward(ctx, grad_output)` |
# | `gradcheck(fn, inputs)` (section 6) | `torch.autograd.gradcheck(fn, inputs)`, also on float64 inputs |

# %% [markdown]
# Here is minilora's multiplication. It is `Value.__mul__` for arrays: the forward
# `a.data * b`, and a backward that maps $g = \partial L/\partial out$ to $g \cdot b$ and
# $g \cdot a$. Two things are new: `unbroadcast` (section 5), and `None` for an input that does
# not require a gradient (section 7).

# %%
print(inspect.getsource(minilora.ops.mul))

# %% [markdown]
# ## 4. Arrays: the gradient of a matrix product
#
# A linear layer computes $Y = X W^\top$ with $X$ of shape (N, in) and $W$ of shape
# (out, in), as `torch.nn.Linear` stores it. Write $G = \partial L / \partial Y$ (N, out).
# Each $Y_{nj} = \sum_i X_{ni} W_{ji}$, so
#
# $$\frac{\partial L}{\partial W} = G^\top X \quad\text{(out, in)}, \qquad
#   \frac{\partial L}{\partial X} = G\, W \quad\text{(N, in)}.$$
#
# A gradient always has the shape of the thing it is the gradient of; that is a quick check
# on every formula like these.

# %%
rng = np.random.default_rng(0)
X = Tensor(rng.standard_normal((5, 4)), requires_grad=True, dtype="float64")  # (N, in)
W = Tensor(rng.standard_normal((3, 4)), requires_grad=True, dtype="float64")  # (out, in)
G = rng.standard_normal((5, 3))  # (N, out): an arbitrary upstream gradient dL/dY

Y = X @ W.T  # (N, in) @ (in, out) -> (N, out)
Y.backward(G)  # start the reversed loop from dL/dY = G instead of 1
print("dL/dW shape", W.grad.shape, " dL/dX shape", X.grad.shape)
assert np.allclose(W.grad, G.T @ X.data)  # (out, N) @ (N, in) -> (out, in)
assert np.allclose(X.grad, G @ W.data)  # (N, out) @ (out, in) -> (N, in)

# %% [markdown]
# ## 5. Broadcasting and `unbroadcast`
#
# Adding a bias $b$ (3,) to $X$ (4, 3) *broadcasts* $b$: NumPy copies it into each of the 4
# rows. Each copy receives its own gradient, and the chain rule adds them up: the gradient of
# broadcasting is a *sum* over the axes broadcasting created (new leading axes, and axes of
# size 1 that were stretched). minilora has one helper for this, used by every broadcasting
# operator: `unbroadcast(grad, shape)`.

# %%
g = np.arange(12.0).reshape(4, 3)  # an upstream gradient of shape (4, 3)
print("unbroadcast to (3,):  ", unbroadcast(g, (3,)))  # summed over the new leading axis
print("unbroadcast to (4, 1):", unbroadcast(g, (4, 1)).ravel())  # summed over the stretched axis
assert np.array_equal(unbroadcast(g, (3,)), g.sum(axis=0))
assert np.array_equal(unbroadcast(g, (4, 1)), g.sum(axis=1, keepdims=True))

X = Tensor(rng.standard_normal((4, 3)), requires_grad=True, dtype="float64")  # (4, 3)
b = Tensor(np.zeros(3), requires_grad=True, dtype="float64")  # (3,)
(X + b).sum().backward()  # (4, 3) + (3,) -> (4, 3) -> ()
print("b.grad after (X + b).sum():", b.grad)  # each b_j was used 4 times
assert b.grad.shape == b.shape and np.array_equal(b.grad, [4.0, 4.0, 4.0])

# %% [markdown]
# ## 6. Gradient checking
#
# Every backward in minilora is tested against the definition of the derivative.
# `gradcheck(fn, inputs)` compares every entry of every input's gradient with a central
# difference (two forward passes per entry: exact but slow). `vjp_check` compares a single
# number, $\langle u, J v\rangle$ for random directions $u$ and $v$: one directional difference,
# cheap at any size. Both need float64: float32 round-off would swamp a finite difference.
#
# Here is a small classifier, $\mathrm{log\,softmax}(X W^\top + b)$, checked both ways.

# %%
def classifier(X, W, b):
    return F.log_softmax(X @ W.T + b, dim=-1)  # (N, in) @ (in, C) + (C,) -> (N, C)


X = Tensor(rng.standard_normal((N, 4)), dtype="float64")  # (N, in)
W = Tensor(rng.standard_normal((5, 4)), dtype="float64")  # (C, in)
b = Tensor(rng.standard_normal(5), dtype="float64")  # (C,)
print("gradcheck:", gradcheck(classifier, [X, W, b]))
print("vjp_check:", vjp_check(classifier, [X, W, b]))

# %% [markdown]
# A gradient check earns its keep when it fails. A classic bug: cutting the graph by accident.
# `x * x.detach()` has the right value, $x^2$, but backward sees the second factor as a
# constant and returns $x$ instead of $2x$. Every test of the forward pass would pass.

# %%
def square_with_a_bug(x):
    return x * x.detach()


x = Tensor(rng.standard_normal(N), dtype="float64")
try:
    gradcheck(square_with_a_bug, [x])
    raise RuntimeError("gradcheck should have failed")
except AssertionError as err:
    caught = str(err)
print("caught:", caught)

# %% [markdown]
# ## 7. Frozen means free: the link to LoRA
#
# LoRA freezes the pre-trained weight $W_0$ and trains only two thin matrices. In an autograd
# engine, freezing is `requires_grad=False`, and it must cost nothing: the backward of an
# operation returns `None` for such an input, so the product that would have made its
# gradient, $G^\top X$ (the largest of a linear layer's three backward products), is never
# computed. The input's gradient, $G W$, is still needed, to reach the layers below.

# %%
W0 = Tensor(rng.standard_normal((3, 4)))  # frozen: requires_grad=False (the default)
X = Tensor(rng.standard_normal((5, 4)), requires_grad=True)
F.linear(X, W0).sum().backward()  # (N, in) -> (N, out) -> ()
print("W0.grad:", W0.grad, "  X.grad shape:", X.grad.shape)

# %% [markdown]
# ## Self-checks
#
# Each line below asserts a property this lesson showed; the script stops at the first that
# fails.

# %%
assert abs((f(x0 + eps) - f(x0 - eps)) / (2 * eps) - exact) < 1e-8  # the slope of section 1
assert "gradcheck" in caught  # the detached square was caught
assert W0.grad is None and X.grad.shape == X.shape  # frozen means free
for name, t in tensors.items():  # Tensor and Value agree with each other and the referee
    assert abs(float(t.grad) - central_difference(neuron, inputs, name)) < 1e-6
print("all self-checks passed")

# %% [markdown]
# ## Exercises
#
# Solutions are in `lessons/solutions/01_autograd.py`; try first.
# Graded: exercises 1-4. Write your answers in `lessons/exercises/ex01.py` (each function's
# docstring says what to compute) and run `pytest lessons/checks/test_01.py`: a wrong answer
# fails with what was expected and a hint.
#
# 1. **Grow `Value`.** Add `exp()`, `__neg__`, `__sub__` and `__pow__` (a constant exponent
#    $k$: $\frac{d}{da} a^k = k a^{k-1}$) to `Value`. Build the sigmoid
#    $\sigma(z) = 1/(1 + e^{-z})$ from them and check $\sigma'(z) = \sigma(z)(1 - \sigma(z))$
#    and a central difference.
# 2. **Cross-entropy by hand.** For logits $Z$ (N, C) and integer targets $t$, the mean
#    cross-entropy $L = -\frac1N \sum_n \log\mathrm{softmax}(Z_n)_{t_n}$ has
#    $\partial L/\partial Z = (\mathrm{softmax}(Z) - \mathrm{onehot}(t)) / N$. Derive it, then
#    check it against `F.cross_entropy(...).backward()`.
# 3. **Predict `unbroadcast`.** A tensor of shape (3, 1) is added to one of shape (2, 3, 4).
#    What is the output's shape, over which axes does its gradient get summed, and what is the
#    gradient of `(a + c).sum()` with respect to the (3, 1) tensor? Predict, then run it.
# 4. **Softmax from primitives.** Write softmax with `Tensor` operations only (`exp`, `max`,
#    `sum`, division). Check it with `gradcheck`, and against `F.softmax` on the same input.
#    Why subtract the row maximum before `exp`? (Try logits near 1000 in float64.)
