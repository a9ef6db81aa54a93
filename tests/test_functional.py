"""Lesson 01, the fused functions: each hand-derived backward agrees with finite differences,
each forward with a NumPy reference written from the formula, and each bad input is refused.

Values are drawn from a seeded normal (hypothesis draws the seed and the shapes), so they are
continuous: no ties in a softmax row, no constant row under layer_norm. Everything is float64.
"""
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minilora.functional as F
from minilora import Tensor
from minilora.backend import Generator
from minilora.testing import examples, gradcheck, logits_and_targets, normal, qkv, seeds, shapes

pytestmark = pytest.mark.lesson01

shapes = shapes(min_dims=1)


def T(a, requires_grad=False) -> Tensor:
    return Tensor(np.array(a, dtype=np.float64), requires_grad=requires_grad)


def np_log_softmax(z, axis=-1):
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


# -- gelu -------------------------------------------------------------------------------------
@pytest.mark.law(lesson=2)
@given(shapes, seeds)
def test_gelu_is_the_tanh_approximation(shape, seed):
    """GELU(x) = 0.5·x·(1 + tanh(√(2/π)(x + 0.044715 x³))) (GPT-2's tanh form, not the erf form),
    with backward equal to central differences.

    Source: Hendrycks and Gimpel 2016 (GELU); the GPT-2 reference code.
    """
    x = normal(shape, seed, 3.0)
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(F.gelu(T(x)).data, expected, rtol=1e-13, atol=1e-15)
    assert gradcheck(F.gelu, [T(x)])


# -- softmax and log_softmax ------------------------------------------------------------------
@pytest.mark.law(lesson=2)
@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
@given(shape=shapes, seed=seeds, data=st.data())
def test_softmax_gradients_and_values(fn, shape, seed, data):
    """softmax and log_softmax along any axis equal exp/log of the shifted log-sum-exp reference,
    and backward equals central differences.

    Source: the definitions softmax(z)ᵢ = e^{zᵢ} / Σⱼ e^{zⱼ}, log_softmax = z − log Σ e^z.
    """
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = normal(shape, seed, 2.0)
    logp = np_log_softmax(x, dim)
    expected = np.exp(logp) if fn is F.softmax else logp
    np.testing.assert_allclose(fn(T(x), dim).data, expected, rtol=1e-12, atol=1e-15)
    assert gradcheck(lambda t: fn(t, dim), [T(x)])


@pytest.mark.law(lesson=2)
@given(shapes, seeds, st.floats(-1e4, 1e4))
def test_softmax_is_shift_invariant(shape, seed, c):
    """softmax(x + c) = softmax(x) for every constant c (|c| ≤ 10⁴): the shift that keeps exp()
    from overflowing changes nothing.

    Source: the definition of softmax (e^{c} cancels).
    """
    x = normal(shape, seed)
    np.testing.assert_allclose(F.softmax(T(x + c)).data, F.softmax(T(x)).data,
                               rtol=1e-8, atol=1e-12)


def test_log_softmax_is_stable_for_huge_logits():
    """exp(1e4) overflows; the shifted form gives the exact answer and a finite gradient."""
    x = T([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], requires_grad=True)
    out = F.log_softmax(x)
    np.testing.assert_allclose(out.data, [[0.0, -2e4, -1e4], [-np.log(3)] * 3], rtol=1e-15)
    u = np.array([[1.0, 2.0, 3.0], [1.0, -1.0, 0.5]])
    (out * T(u)).sum().backward()
    p = np.exp(out.data)
    assert np.all(np.isfinite(x.grad))
    np.testing.assert_allclose(x.grad, u - p * u.sum(axis=-1, keepdims=True), atol=1e-15)


# -- cross_entropy ----------------------------------------------------------------------------
def np_cross_entropy(logits, targets, ignore_index=-100):
    logp = np_log_softmax(logits.reshape(-1, logits.shape[-1]))
    t = targets.reshape(-1)
    valid = t != ignore_index
    picked = logp[np.arange(len(t))[valid], t[valid]]
    return -picked.mean() if valid.any() else 0.0


@pytest.mark.law(lesson=2)
@given(logits_and_targets())
def test_cross_entropy_matches_reference_and_gradcheck(pair):
    """cross_entropy(z, t) = −mean over non-ignored positions of log_softmax(z)[t] (sum with
    reduction="sum"), with backward equal to central differences.

    Source: the definition of cross-entropy; PyTorch's ``F.cross_entropy`` (ignore_index = −100).
    """
    logits, targets = pair
    loss = F.cross_entropy(T(logits), targets)
    np.testing.assert_allclose(loss.item(), np_cross_entropy(logits, targets), rtol=1e-12,
                               atol=1e-15)
    assert gradcheck(lambda z: F.cross_entropy(z, targets), [T(logits)])
    assert gradcheck(lambda z: F.cross_entropy(z, targets, reduction="sum"), [T(logits)])


@pytest.mark.law(lesson=2)
@given(logits_and_targets(), seeds)
def test_ignored_positions_contribute_nothing(pair, seed):
    """Changing the logits where the target is ignore_index changes neither the loss nor any
    gradient, and the gradient there is exactly zero.

    Source: PyTorch's ``ignore_index`` semantics for ``F.cross_entropy``.
    """
    logits, targets = pair
    ignored = targets == -100
    other = logits.copy()
    other[ignored] = normal(other[ignored].shape, seed, 10.0)
    a, b = T(logits, requires_grad=True), T(other, requires_grad=True)
    la, lb = F.cross_entropy(a, targets), F.cross_entropy(b, targets)
    la.backward()
    lb.backward()
    assert la.item() == lb.item()
    np.testing.assert_array_equal(a.grad, b.grad)
    assert np.all(a.grad[ignored] == 0)


def test_all_ignored_gives_zero_loss_and_zero_gradient():
    z = T(normal((2, 3, 4), 0), requires_grad=True)
    loss = F.cross_entropy(z, np.full((2, 3), -100))
    loss.backward()
    assert loss.item() == 0.0
    np.testing.assert_array_equal(z.grad, np.zeros((2, 3, 4)))


def test_cross_entropy_refuses_bad_targets():
    z = T(normal((2, 3, 4), 0))
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3, 4\)"):
        F.cross_entropy(z, np.zeros((3, 2), dtype=int))
    with pytest.raises(TypeError, match="integer"):
        F.cross_entropy(z, np.zeros((2, 3)))
    for bad in (4, -1):
        targets = np.zeros((2, 3), dtype=int)
        targets[1, 2] = bad
        with pytest.raises(ValueError, match="out of range"):
            F.cross_entropy(z, targets)


# -- layer_norm -------------------------------------------------------------------------------
def np_layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


@pytest.mark.law(lesson=2)
@given(shapes, seeds)
def test_layer_norm_matches_reference_and_gradcheck(shape, seed):
    """layer_norm(x) = (x − mean) / √(var + ε) · w + b over the last axis (biased variance), with
    backward equal to central differences.

    Source: Ba et al. 2016 (layer normalization); PyTorch's ``F.layer_norm``.
    """
    gen = np.random.default_rng(seed)
    x, w, b = gen.normal(size=shape), gen.normal(size=shape[-1:]), gen.normal(size=shape[-1:])
    C = shape[-1]
    np.testing.assert_allclose(F.layer_norm(T(x), C, T(w), T(b)).data, np_layer_norm(x, w, b),
                               rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda x_, w_, b_: F.layer_norm(x_, C, w_, b_), [T(x), T(w), T(b)])
    assert gradcheck(lambda x_: F.layer_norm(x_, C), [T(x)])


def test_layer_norm_refuses_a_shape_that_is_not_the_last_axis():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        F.layer_norm(T(np.ones((2, 3))), 2)


# -- dropout ----------------------------------------------------------------------------------
@pytest.mark.law(lesson=2)
@given(st.floats(0.0, 0.9), seeds)
def test_dropout_in_eval_is_the_identity(p, seed):
    """In eval mode dropout(x, p) = x exactly, for every p.

    Source: Srivastava et al. 2014 (inverted dropout: no rescaling at test time).
    """
    x = T(normal((3, 4), seed))
    y = F.dropout(x, p, training=False, generator=Generator(seed))
    np.testing.assert_array_equal(y.data, x.data)


@pytest.mark.law(lesson=2)
@examples(10)
@given(st.floats(0.05, 0.9), seeds)
def test_dropout_zeroes_about_p_and_rescales_the_rest(p, seed):
    """In training, each entry is zeroed with probability p (the zero fraction of 20,000 entries
    lies within 6 standard deviations of p) and survivors are scaled by 1/(1 − p), so E[dropout(x)]
    = x.

    Source: Srivastava et al. 2014 (inverted dropout).
    """
    x = np.abs(normal((20_000,), seed)) + 0.1
    y = F.dropout(T(x), p, training=True, generator=Generator(seed)).data
    dropped = y == 0
    assert abs(dropped.mean() - p) < 6 * math.sqrt(p * (1 - p) / x.size)
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - p), rtol=1e-15)


@given(st.floats(0.05, 0.9), seeds)
def test_dropout_is_deterministic_given_the_seed(p, seed):
    x = T(normal((4, 5), 0))
    a = F.dropout(x, p, generator=Generator(seed)).data
    b = F.dropout(x, p, generator=Generator(seed)).data
    np.testing.assert_array_equal(a, b)
    # a fixed generator makes the mask a constant, so the function is differentiable
    assert gradcheck(lambda t: F.dropout(t, p, generator=Generator(seed)), [x])


def test_dropout_refuses_p_outside_0_1():
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout"):
            F.dropout(T(np.ones(3)), p)


# -- embedding --------------------------------------------------------------------------------
@pytest.mark.law(lesson=2)
@given(st.integers(1, 6), st.integers(1, 4), hnp.array_shapes(max_dims=2, max_side=6), seeds)
def test_embedding_gradient_sums_repeated_rows(V, D, index_shape, seed):
    """embedding(idx, W) = W[idx], and a row picked k times receives the sum of its k gradients.

    Source: calculus (a lookup is a gather; its adjoint a scatter-add).
    """
    gen = np.random.default_rng(seed)
    idx = gen.integers(0, V, index_shape)
    w = gen.normal(size=(V, D))
    np.testing.assert_array_equal(F.embedding(idx, T(w)).data, w[idx])
    assert gradcheck(lambda w_: F.embedding(idx, w_), [T(w)])
    u = gen.normal(size=index_shape + (D,))
    wt = T(w, requires_grad=True)
    (F.embedding(idx, wt) * T(u)).sum().backward()
    expected = np.zeros((V, D))
    np.add.at(expected, idx.reshape(-1), u.reshape(-1, D))
    np.testing.assert_allclose(wt.grad, expected, rtol=1e-14, atol=1e-15)


def test_embedding_refuses_bad_indices():
    w = T(np.ones((5, 2)))
    for bad in ([0, 5], [-1, 2]):
        with pytest.raises(ValueError, match="out of range"):
            F.embedding(np.array(bad), w)
    with pytest.raises(TypeError, match="integer"):
        F.embedding(np.array([0.0, 1.0]), w)


# -- attention --------------------------------------------------------------------------------
def np_attention(q, k, v, causal):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        T_, S = s.shape[-2:]
        s = np.where(np.tril(np.ones((T_, S), dtype=bool)), s, -np.inf)
    return np.exp(np_log_softmax(s)) @ v


@pytest.mark.law(lesson=2)
@pytest.mark.parametrize("causal", [False, True])
@given(data=st.data())
def test_attention_matches_reference_and_gradcheck(causal, data):
    """scaled_dot_product_attention(q, k, v) = softmax(q kᵀ / √d + mask) v (mask −∞ above the
    diagonal when causal), batch axes broadcasting, with backward equal to central differences.

    Source: Vaswani et al. 2017, Eq. 1; PyTorch's ``F.scaled_dot_product_attention``.
    """
    q, k, v = data.draw(qkv(causal))
    out = F.scaled_dot_product_attention(T(q), T(k), T(v), is_causal=causal)
    np.testing.assert_allclose(out.data, np_attention(q, k, v, causal), rtol=1e-12, atol=1e-14)
    assert gradcheck(lambda *a: F.scaled_dot_product_attention(*a, is_causal=causal),
                     [T(q), T(k), T(v)])


def test_attention_refuses_leading_axes_that_do_not_broadcast():
    q, k = T(np.ones((2, 3, 4, 5))), T(np.ones((3, 3, 4, 5)))
    with pytest.raises(ValueError, match=r"leading axes .*\(2, 3, 4, 5\).*\(3, 3, 4, 5\)"):
        F.scaled_dot_product_attention(q, k, k)


@pytest.mark.law(lesson=2)
@given(data=st.data())
def test_causal_attention_never_looks_ahead(data):
    """With is_causal, output row t depends on rows ≤ t only: new values after t leave it
    bit-identical and give zero gradient to the later inputs.

    Source: Vaswani et al. 2017, Section 3.2.3 (masked self-attention in the decoder).
    """
    q, k, v = data.draw(qkv(causal=True))
    t = data.draw(st.integers(0, q.shape[-2] - 1))
    later = (Ellipsis, slice(t + 1, None), slice(None))
    out = F.scaled_dot_product_attention(T(q), T(k), T(v), is_causal=True).data
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    for a in (q2, k2, v2):
        a[later] = normal(a[later].shape, t, 5.0)
    out2 = F.scaled_dot_product_attention(T(q2), T(k2), T(v2), is_causal=True).data
    np.testing.assert_array_equal(out[..., : t + 1, :], out2[..., : t + 1, :])

    ts = [T(a, requires_grad=True) for a in (q, k, v)]
    F.scaled_dot_product_attention(*ts, is_causal=True)[..., t, :].sum().backward()
    for x in ts:
        assert np.all(x.grad[later] == 0)


# -- linear -----------------------------------------------------------------------------------
@pytest.mark.law(lesson=2)
@given(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), st.integers(1, 4),
       st.integers(1, 4), seeds)
def test_linear_matches_reference_and_gradcheck(lead, n_in, n_out, seed):
    """linear(x, W, b) = x Wᵀ + b over any leading axes, W of shape (out, in), with backward equal
    to central differences (with and without b).

    Source: PyTorch's ``F.linear`` layout; the paper's h = W0 x.
    """
    gen = np.random.default_rng(seed)
    x, w, b = gen.normal(size=lead + (n_in,)), gen.normal(size=(n_out, n_in)), \
        gen.normal(size=(n_out,))
    np.testing.assert_allclose(F.linear(T(x), T(w), T(b)).data, x @ w.T + b, rtol=1e-12,
                               atol=1e-14)
    assert gradcheck(F.linear, [T(x), T(w), T(b)])
    assert gradcheck(F.linear, [T(x), T(w)])


def test_linear_refuses_bad_shapes_naming_both():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        F.linear(T(np.ones((2, 3))), T(np.ones((4, 5))))


# -- composition ------------------------------------------------------------------------------
@examples(10)
@given(seeds)
def test_fused_backwards_leave_the_incoming_gradient_alone(seed):
    """A sum hands the same gradient array to each of its terms. A backward that edited its
    incoming gradient in place (a tempting speed trick) would corrupt its neighbours' share,
    and this composite of every fused op would then fail its gradient check."""
    gen = np.random.default_rng(seed)
    x, w, b, W = (gen.normal(size=s) for s in [(2, 3, 4), (4,), (4,), (4, 4)])
    targets = gen.integers(0, 4, (2, 3))

    def composite(x, w, b, W):
        return (F.gelu(x) + F.layer_norm(x, 4, w, b) + F.softmax(x) + F.log_softmax(x, 0)
                + F.linear(x, W, b) + F.dropout(x, 0.5, generator=Generator(seed))
                + F.scaled_dot_product_attention(x, x, x, is_causal=True)
                + F.cross_entropy(x, targets) + F.embedding(targets, W))

    assert gradcheck(composite, [T(x), T(w), T(b), T(W)])


# -- dtype ------------------------------------------------------------------------------------
FLOAT32_CASES = {  # (function, input shapes)
    "gelu": (F.gelu, [(2, 3)]),
    "softmax": (F.softmax, [(2, 3)]),
    "log_softmax": (F.log_softmax, [(2, 3)]),
    "cross_entropy": (lambda z: F.cross_entropy(z, np.array([0, -100])), [(2, 3)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, 3, w, b), [(2, 3), (3,), (3,)]),
    "dropout": (lambda x: F.dropout(x, 0.3, generator=Generator(0)), [(2, 3)]),
    "embedding": (lambda w: F.embedding(np.array([0, 1, 1]), w), [(2, 3)]),
    "attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                  [(2, 3, 4)] * 3),
    "linear": (F.linear, [(2, 3), (4, 3), (4,)]),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_float32_stays_float32_through_forward_and_backward(name):
    """The engine's default dtype survives every fused op and its backward (no silent upcast
    through a Python float or a NumPy reduction)."""
    fn, in_shapes = FLOAT32_CASES[name]
    gen = np.random.default_rng(0)
    xs = [Tensor(gen.normal(size=s).astype(np.float32), requires_grad=True) for s in in_shapes]
    out = fn(*xs)
    assert out.dtype == np.float32
    (out * Tensor(gen.normal(size=out.shape).astype(np.float32))).sum().backward()
    assert [x.grad.dtype for x in xs] == [np.float32] * len(xs)
