# %% [markdown]
# # Solutions to lesson 01: autograd from scratch
#
# Each solution ends with asserts, so running this file checks it:
# `python lessons/solutions/01_autograd.py`.
#
# The answers the checks grade are in `ex01.py` beside this file (the same names as in
# `lessons/exercises/ex01.py`); this script runs them and explains what they show.
# `MINILORA_ANSWERS=lessons/solutions pytest lessons/checks/test_01.py` grades them.

# %%
import numpy as np
from threadpoolctl import threadpool_limits

import minilora.functional as F
from ex01 import Value, cross_entropy_grad, sigmoid, softmax, unbroadcast_prediction
from minilora import Tensor
from minilora.gradcheck import gradcheck

rng = np.random.default_rng(0)

threadpool_limits(1)  # one BLAS thread, as in the lessons (see their first code cell)

# %% [markdown]
# ## 1. Grow `Value`
#
# The lesson's `Value`, plus `exp`, `__neg__`, `__sub__` and `__pow__` (a constant exponent),
# in `ex01.py` beside this file. The new rules: $\frac{d}{da} e^a = e^a$,
# $\frac{d}{da} a^k = k a^{k-1}$; negation and subtraction are built from the rules we already
# have.

# %%
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

by_hand = cross_entropy_grad(Z.data, t)  # (softmax(Z) - onehot(t)) / N
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
shape, axes, grad = unbroadcast_prediction()
assert out.shape == shape and axes == (0, 2)
assert c.grad.shape == (3, 1) and np.array_equal(c.grad, grad)

# %% [markdown]
# ## 4. Softmax from primitives
#
# $\mathrm{softmax}(z)_i = e^{z_i - m} / \sum_j e^{z_j - m}$ for any constant $m$; choosing
# $m = \max_j z_j$ makes every exponent ≤ 0, so `exp` cannot overflow. The maximum is treated as
# a constant (`detach`): it cancels in the ratio, so its gradient contribution is exactly zero.

# %%
Z = Tensor(rng.standard_normal((4, 5)), dtype="float64")
assert gradcheck(softmax, [Z])
assert np.allclose(softmax(Z).data, F.softmax(Z).data)

big = Tensor(np.array([[1000.0, 999.0, 998.0]]), dtype="float64")
with np.errstate(over="ignore", invalid="ignore"):
    naive = (big.exp() / big.exp().sum(axis=-1, keepdims=True)).data  # inf / inf = nan
print("naive softmax at logits near 1000:", naive, "  shifted:", softmax(big).data)
assert np.isnan(naive).all() and np.isfinite(softmax(big).data).all()
print("all solutions check out")
