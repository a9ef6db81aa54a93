"""Lesson 01, the engine: every primitive's backward agrees with the definition of a derivative.

Each property draws shapes and values with hypothesis and compares backward() with central
finite differences (``gradcheck``, entry by entry) in float64. Values are drawn inside each op's
well-conditioned domain (log and sqrt of positives, division by numbers away from zero, relu
and max away from their kinks), so every property is a law, not a coin toss. After the ops come
the graph mechanics (accumulation, ``no_grad``, freeing the graph), the ``unbroadcast`` law, the
dtype rules, and a check against an independent reference: random expression trees
differentiated by the complex-step method, exact to rounding.
"""
import math
import operator

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minilora
from minilora import Tensor, no_grad, unbroadcast
from minilora.testing import (arrays as values, away_from_zero, axes as axis_and_keepdims,
                              broadcast_targets, broadcastable_shapes as two_broadcastable,
                              examples, gradcheck, separated, shapes, vjp_check)

pytestmark = pytest.mark.lesson01

shapes = shapes()


def T(a) -> Tensor:
    """A float64 leaf (gradcheck turns requires_grad on itself)."""
    return Tensor(np.array(a, dtype=np.float64))


# -- elementwise arithmetic, broadcasting included ------------------------------------------
@pytest.mark.law(lesson=1)
@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul])
@given(data=st.data())
def test_add_sub_mul_gradients_broadcast(op, data):
    """For broadcastable a, b and ∘ ∈ {+, −, ·}: backward of a ∘ b equals its central differences,
    the gradient summed back over the broadcast axes (unbroadcast).

    Source: calculus (the definition of the derivative); NumPy's broadcasting rules.
    """
    sa, sb = data.draw(two_broadcastable()).input_shapes
    assert gradcheck(op, [T(data.draw(values(sa))), T(data.draw(values(sb)))])


@pytest.mark.law(lesson=1)
@given(data=st.data())
def test_div_gradient_broadcast(data):
    """For broadcastable a, b with |b| ≥ 0.5: ∂(a/b)/∂a = 1/b and ∂(a/b)/∂b = −a/b², broadcast
    back, equal central differences.

    Source: calculus (the quotient rule); NumPy's broadcasting rules.
    """
    sa, sb = data.draw(two_broadcastable()).input_shapes
    assert gradcheck(operator.truediv, [T(data.draw(values(sa))), T(data.draw(away_from_zero(sb)))])


@pytest.mark.law(lesson=1)
@given(data=st.data())
def test_tensor_pow_tensor_gradient(data):
    """For a > 0: ∂(a^b)/∂a = b·a^(b−1) and ∂(a^b)/∂b = a^b·log a, both broadcast, equal central
    differences.

    Source: calculus (the power rule and d/db e^(b log a)).
    """
    sa, sb = data.draw(two_broadcastable()).input_shapes
    a, b = data.draw(values(sa, 0.5, 2.0)), data.draw(values(sb, -2.0, 2.0))
    assert gradcheck(operator.pow, [T(a), T(b)])


@pytest.mark.law(lesson=1)
@pytest.mark.parametrize("exponent", [2, 3, 2.0, -1.0])
@given(data=st.data())
def test_pow_by_integer_gradient_any_sign(exponent, data):
    """For an integer exponent n and any x ≠ 0 (negative included): d(xⁿ)/dx = n·x^(n−1), equal to
    central differences.

    Source: calculus (the power rule).
    """
    x = data.draw(away_from_zero(data.draw(shapes), 0.2))
    assert gradcheck(lambda t: t ** exponent, [T(x)])


@pytest.mark.law(lesson=1)
@pytest.mark.parametrize("exponent", [0.5, -1.5, 1.7])
@given(data=st.data())
def test_pow_by_real_gradient_positive_base(exponent, data):
    """For a real exponent p and x > 0: d(x^p)/dx = p·x^(p−1), equal to central differences.

    Source: calculus (the power rule).
    """
    x = data.draw(values(data.draw(shapes), 0.3, 3.0))
    assert gradcheck(lambda t: t ** exponent, [T(x)])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy notes the 0 · ∞ it computed
def test_pow_at_zero_takes_the_limits():
    """At a = 0 the formulas give 0 · ∞; the gradients are the limits instead, as PyTorch's:
    x⁰ is the constant 1, so d/dx = 0 even at x = 0; 0^b = 0 for b > 0, so d/db = 0 there."""
    x = Tensor(np.array([0.0, 1.0, -2.0]), requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])
    a = Tensor(np.array([0.0, 0.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([2.0, 0.0, 0.5]), requires_grad=True)
    (a ** b).sum().backward()
    np.testing.assert_allclose(a.grad, [0.0, 0.0, 0.5 * 2 ** -0.5], rtol=1e-15)
    np.testing.assert_allclose(b.grad, [0.0, 0.0, 2 ** 0.5 * np.log(2)], rtol=1e-15)


SCALAR_LEFT = {
    "2 - x": (lambda x: 2 - x, values),
    "2 + x": (lambda x: 2 + x, values),
    "3 * x": (lambda x: 3 * x, values),
    "1 / x": (lambda x: 1 / x, away_from_zero),
    "2.5 / x": (lambda x: 2.5 / x, away_from_zero),
    "2 ** x": (lambda x: 2 ** x, values),
    "0.5 ** x": (lambda x: 0.5 ** x, values),
}


@pytest.mark.law(lesson=1)
@pytest.mark.parametrize("name", sorted(SCALAR_LEFT))
@given(data=st.data())
def test_scalar_on_the_left(name, data):
    """Reflected operators (c − x, c / x, c ** x, …) give NumPy's values to 1e-15 and gradients
    equal to central differences.

    Source: calculus; Python's reflected-operator protocol (``__rsub__``, ``__rtruediv__``,
    ``__rpow__``).
    """
    fn, strategy = SCALAR_LEFT[name]
    x = data.draw(strategy(data.draw(shapes)))
    np.testing.assert_allclose(fn(T(x)).data, fn(x), rtol=1e-15)
    assert gradcheck(fn, [T(x)])


# -- matrix product ---------------------------------------------------------------------------
@pytest.mark.law(lesson=1)
@given(data=st.data())
def test_matmul_gradient(data):
    """For a @ b under NumPy's matmul rules (1-D operands as a row or a column, batch axes
    broadcast): the value is NumPy's, ∂/∂a = G bᵀ and ∂/∂b = aᵀ G (unbroadcast), equal to central
    differences.

    Source: calculus (the product rule for matrices); NumPy's matmul semantics.
    """
    sa, sb = data.draw(hnp.mutually_broadcastable_shapes(
        signature=np.matmul.signature, max_dims=2, max_side=3)).input_shapes
    a, b = data.draw(values(sa)), data.draw(values(sb))
    np.testing.assert_allclose((T(a) @ T(b)).data, a @ b, rtol=1e-13, atol=1e-13)
    assert gradcheck(operator.matmul, [T(a), T(b)])


@pytest.mark.parametrize("sa, sb", [((4,), (4,)), ((4,), (4, 2)), ((3, 4), (4,)),
                                    ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)),
                                    ((2, 1, 3, 4), (5, 4, 2)), ((4,), (2, 4, 3)),
                                    ((2, 3, 4), (4,))])
def test_matmul_gradient_named_cases(sa, sb):
    """The cases the generated shapes might rarely reach, each named (incl. folded batches)."""
    gen = np.random.default_rng(0)
    assert gradcheck(operator.matmul, [T(gen.normal(size=sa)), T(gen.normal(size=sb))])


def test_matmul_mismatch_raises_naming_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 2\)"):
        T(np.ones((3, 4))) @ T(np.ones((5, 2)))


# -- elementwise functions --------------------------------------------------------------------
UNARY = {
    "neg": (operator.neg, np.negative, values),
    "exp": (Tensor.exp, np.exp, values),
    "log": (Tensor.log, np.log, lambda s: values(s, 0.1, 5.0)),
    "tanh": (Tensor.tanh, np.tanh, values),
    "relu": (Tensor.relu, lambda x: np.maximum(x, 0), separated),
    "sqrt": (Tensor.sqrt, np.sqrt, lambda s: values(s, 0.1, 5.0)),
}


@pytest.mark.law(lesson=1)
@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_value_and_gradient(name, data):
    """neg, exp, log, tanh, relu and sqrt, each inside its well-conditioned domain: values equal
    NumPy's to 1e-15 and backward equals central differences.

    Source: calculus (each function's derivative).
    """
    fn, reference, strategy = UNARY[name]
    x = data.draw(strategy(data.draw(shapes)))
    np.testing.assert_allclose(fn(T(x)).data, reference(x), rtol=1e-15)
    assert gradcheck(fn, [T(x)])


# -- indexing ---------------------------------------------------------------------------------
@pytest.mark.law(lesson=1)
@given(data=st.data())
def test_getitem_basic_gradient(data):
    """Basic indexing (slices, integers, None, Ellipsis): x[i] equals NumPy's, and the gradient
    lands where the entries came from (zero elsewhere).

    Source: calculus (indexing is linear: its adjoint scatters); NumPy's basic indexing.
    """
    shape = data.draw(shapes)
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True))
    x = data.draw(values(shape))
    np.testing.assert_array_equal(T(x)[index].data, x[index])
    assert gradcheck(lambda t: t[index], [T(x)])


@pytest.mark.law(lesson=1)
@given(data=st.data())
def test_getitem_integer_arrays_gradient(data):
    """Integer-array indexing, repeats included: the gradient of an entry picked k times is the sum
    of its k incoming gradients.

    Source: calculus (the adjoint of a gather is a scatter-add); NumPy's advanced indexing.
    """
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    index = data.draw(hnp.integer_array_indices(
        shape, result_shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=5)))
    x = data.draw(values(shape))
    np.testing.assert_array_equal(T(x)[index].data, x[index])
    assert gradcheck(lambda t: t[index], [T(x)])


def test_getitem_repeated_rows_and_mixed_index():
    x = T(np.arange(12.0).reshape(3, 4))
    x.requires_grad = True
    (x[[0, 0, 2]].sum() + x[:, np.array([1, 1, 3])].sum()).backward()
    expected = np.zeros((3, 4))
    expected[0] += 2
    expected[2] += 1
    expected[:, 1] += 2
    expected[:, 3] += 1
    np.testing.assert_array_equal(x.grad, expected)


# -- reductions -------------------------------------------------------------------------------
REDUCTIONS = {"sum": (Tensor.sum, np.sum), "mean": (Tensor.mean, np.mean),
              "max": (Tensor.max, np.max)}


@pytest.mark.law(lesson=1)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(data=st.data())
def test_reduction_value_and_gradient(name, data):
    """sum, mean and max over any axes (keepdims or not): values equal NumPy's and backward equals
    central differences (max drawn without ties).

    Source: calculus (the derivatives of sum, mean and max away from ties).
    """
    fn, reference = REDUCTIONS[name]
    shape = data.draw(shapes)
    axis, keepdims = data.draw(axis_and_keepdims(len(shape)))
    x = data.draw(separated(shape))
    out = fn(T(x), axis=axis, keepdims=keepdims)
    expected = reference(x, axis=axis, keepdims=keepdims)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.data, expected, rtol=1e-14)
    assert gradcheck(lambda t: fn(t, axis=axis, keepdims=keepdims), [T(x)])


def test_max_shares_the_gradient_among_ties():
    """At a tie the derivative does not exist; the convention (PyTorch's amax) splits it."""
    x = Tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


# -- shape ------------------------------------------------------------------------------------
@pytest.mark.law(lesson=1)
@given(data=st.data())
def test_reshape_gradient(data):
    """reshape to any compatible shape: its value is NumPy's and its gradient is the incoming
    gradient reshaped back, equal to central differences.

    Source: calculus (a linear map's adjoint).
    """
    shape = data.draw(shapes)
    target = data.draw(st.sampled_from([(-1,), tuple(reversed(shape)), (1, math.prod(shape)),
                                        shape + (1,)]))
    x = data.draw(values(shape))
    np.testing.assert_array_equal(T(x).reshape(target).data, x.reshape(target))
    assert gradcheck(lambda t: t.reshape(target), [T(x)])
    assert gradcheck(lambda t: t.reshape(*target), [T(x)])


@pytest.mark.law(lesson=1)
@given(data=st.data())
def test_permute_gradient(data):
    """permute(dims): its value is NumPy's transpose and its gradient is the incoming gradient
    permuted by the inverse permutation.

    Source: calculus (a linear map's adjoint).
    """
    shape = data.draw(shapes)
    dims = tuple(data.draw(st.permutations(range(len(shape)))))
    x = data.draw(values(shape))
    np.testing.assert_array_equal(T(x).permute(dims).data, np.transpose(x, dims))
    assert gradcheck(lambda t: t.permute(dims), [T(x)])


@pytest.mark.law(lesson=1)
@given(data=st.data())
def test_transpose_T_mT_gradient(data):
    """transpose(d0, d1), .T and .mT equal NumPy's swapaxes, .T, .mT, and backward equals central
    differences.

    Source: calculus (a linear map's adjoint); NumPy's axis conventions.
    """
    shape = data.draw(hnp.array_shapes(min_dims=2, max_dims=4, max_side=3))
    d0, d1 = data.draw(st.integers(-len(shape), len(shape) - 1)), data.draw(
        st.integers(-len(shape), len(shape) - 1))
    x = data.draw(values(shape))
    np.testing.assert_array_equal(T(x).transpose(d0, d1).data, np.swapaxes(x, d0, d1))
    np.testing.assert_array_equal(T(x).T.data, x.T)
    np.testing.assert_array_equal(T(x).mT.data, x.mT)
    for fn in (lambda t: t.transpose(d0, d1), lambda t: t.T, lambda t: t.mT):
        assert gradcheck(fn, [T(x)])


@pytest.mark.law(lesson=1)
@given(data=st.data())
def test_cat_and_stack_gradient(data):
    """cat splits the gradient back into the pieces along its axis; stack is cat on a new axis;
    both equal NumPy's values and central differences.

    Source: calculus (a linear map's adjoint).
    """
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    pieces = []
    for n in sizes:
        piece_shape = list(shape)
        piece_shape[dim] = n
        pieces.append(data.draw(values(tuple(piece_shape))))
    np.testing.assert_array_equal(minilora.cat([T(p) for p in pieces], dim).data,
                                  np.concatenate(pieces, dim))
    assert gradcheck(lambda *ts: minilora.cat(ts, dim), [T(p) for p in pieces])

    same = [data.draw(values(shape)) for _ in sizes]
    new_dim = data.draw(st.integers(-len(shape) - 1, len(shape)))
    np.testing.assert_array_equal(minilora.stack([T(p) for p in same], new_dim).data,
                                  np.stack(same, new_dim))
    assert gradcheck(lambda *ts: minilora.stack(ts, new_dim), [T(p) for p in same])


# -- the graph --------------------------------------------------------------------------------
def _leaf(seed=0, shape=(3, 4)):
    return Tensor(np.random.default_rng(seed).normal(size=shape), requires_grad=True)


def test_gradients_accumulate_across_backward_calls():
    """Two backward() calls add up, as in PyTorch: zero_grad is the caller's job."""
    x = _leaf()
    (x * x).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 4 * x.data)


def test_a_tensor_used_twice_gets_both_contributions():
    x = _leaf()
    y = x * x + x  # x reaches y by three paths
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)


def test_no_grad_records_no_graph():
    x = _leaf()
    with no_grad():
        y = (x * 2).exp().sum()
    assert not y.requires_grad and y._parents == () and y.is_leaf
    assert minilora.is_grad_enabled()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_backward_on_non_scalar_needs_a_gradient():
    y = _leaf() * 2
    with pytest.raises(RuntimeError, match=r"\(3, 4\)"):
        y.backward()
    y.backward(np.ones((3, 4)))  # an explicit gradient of the output's shape is fine


def test_backward_with_wrong_gradient_shape_raises():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3, 4\)"):
        (_leaf() * 2).backward(np.ones((4, 3)))


def test_second_backward_through_a_freed_graph_raises():
    y = (_leaf() * 2).tanh().sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = _leaf()
    y = (x * 3).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad, np.full((3, 4), 6.0))


def test_detach_item_numpy():
    x = _leaf()
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(d.data, x.data)
    (x * d).sum().backward()  # d is a constant: the gradient is d, not 2x
    np.testing.assert_array_equal(x.grad, d.data)

    s = x.sum()
    assert isinstance(s.item(), float) and s.item() == float(np.sum(x.data))
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        x.item()
    assert isinstance(x.numpy(), np.ndarray)
    np.testing.assert_array_equal(x.numpy(), x.data)


# -- the unbroadcast law ----------------------------------------------------------------------
@pytest.mark.law(lesson=1)
@given(broadcast_targets(), st.integers(0, 2 ** 32 - 1))
def test_unbroadcast_is_the_adjoint_of_broadcasting(pair, seed):
    """⟨unbroadcast(G, s), X⟩ = ⟨G, broadcast_to(X, target)⟩ for every X of shape s broadcasting to
    target, and unbroadcast of ones counts the copies: prod(target)/prod(s).

    Source: linear algebra (summing over broadcast axes is the adjoint of broadcasting);
    HIPS/autograd's unbroadcast.
    """
    shape, target = pair
    gen = np.random.default_rng(seed)
    counted = unbroadcast(np.ones(target), shape)
    assert counted.shape == shape
    np.testing.assert_array_equal(counted, np.full(shape, math.prod(target) / math.prod(shape)))
    G, X = gen.normal(size=target), gen.normal(size=shape)
    np.testing.assert_allclose(np.sum(unbroadcast(G, shape) * X),
                               np.sum(G * np.broadcast_to(X, target)), rtol=1e-12, atol=1e-12)


# -- dtypes -----------------------------------------------------------------------------------
def test_python_floats_default_to_float32():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([[1.0, 2.0]]).dtype == np.float32
    x = Tensor([1.0, 2.0])
    for y in (x * 2.0, 2.0 - x, x ** 2, 1 / x, 2 ** x):
        assert y.dtype == np.float32


def test_numpy_scalars_act_as_python_numbers():
    """``x / np.sqrt(d)`` must not turn a float32 model into float64 (NumPy's own rule would:
    np.float64 is a "strong" dtype), and neither must its gradient."""
    x = Tensor([1.0, 2.0], requires_grad=True)
    ys = [x + np.float64(1.0), np.float64(2.0) - x, x * np.float64(0.5), np.float64(1.0) / x,
          x / np.sqrt(np.float64(2.0)), x ** np.float64(2.0)]
    assert all(y.dtype == np.float32 for y in ys)
    sum(y.sum() for y in ys).backward()
    assert x.grad.dtype == np.float32


FLOAT32_CASES = {  # (function, input shapes): every primitive once
    "add": (operator.add, [(2, 3), (3,)]), "sub": (operator.sub, [(2, 3), (3,)]),
    "mul": (operator.mul, [(2, 3), (3,)]), "div": (operator.truediv, [(2, 3), (3,)]),
    "pow": (operator.pow, [(2, 3), (3,)]), "pow 1.5": (lambda a: a ** 1.5, [(3,)]),
    "2 - x": (lambda a: 2 - a, [(3,)]), "1 / x": (lambda a: 1 / a, [(3,)]),
    "2 ** x": (lambda a: 2 ** a, [(3,)]), "matmul": (operator.matmul, [(2, 3, 4), (4, 5)]),
    "dot": (operator.matmul, [(4,), (4,)]), "neg": (operator.neg, [(3,)]),
    "exp": (Tensor.exp, [(3,)]), "log": (Tensor.log, [(3,)]), "tanh": (Tensor.tanh, [(3,)]),
    "relu": (Tensor.relu, [(3,)]), "sqrt": (Tensor.sqrt, [(3,)]),
    "sum": (lambda a: a.sum(axis=0), [(2, 3)]), "mean": (lambda a: a.mean(), [(2, 3)]),
    "max": (lambda a: a.max(axis=1, keepdims=True), [(2, 3)]),
    "index": (lambda a: a[[0, 0, 1], ::2], [(2, 3)]),
    "reshape": (lambda a: a.reshape(-1), [(2, 3)]), "T": (lambda a: a.T, [(2, 3)]),
    "cat": (lambda a, b: minilora.cat([a, b], 1), [(2, 3), (2, 1)]),
    "stack": (lambda a, b: minilora.stack([a, b]), [(2, 3), (2, 3)]),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_float32_stays_float32_through_forward_and_backward(name):
    fn, in_shapes = FLOAT32_CASES[name]
    gen = np.random.default_rng(0)
    xs = [Tensor(gen.uniform(0.5, 1.5, s).astype(np.float32), requires_grad=True)
          for s in in_shapes]
    out = fn(*xs)
    assert out.dtype == np.float32
    (out * Tensor(gen.normal(size=out.shape).astype(np.float32))).sum().backward()
    assert [x.grad.dtype for x in xs] == [np.float32] * len(xs)


def test_float64_is_preserved():
    x = T([1.0, 2.0])
    for y in (x * 2.0, 2.0 - x, x ** 2, 1 / x, 2 ** x, x.exp(), x @ x, x.sum(), x.max()):
        assert y.dtype == np.float64


def test_mixing_float32_and_float64_raises_naming_both():
    a, b = Tensor([1.0, 2.0]), T([1.0, 2.0])
    for op in (operator.add, operator.mul, operator.truediv, operator.matmul):
        with pytest.raises(TypeError, match="float32.*float64"):
            op(a, b)
    with pytest.raises(TypeError, match="float64.*float32"):
        minilora.cat([b, a])


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="int"):
        Tensor([1, 2, 3], requires_grad=True)


# -- an independent reference: complex-step differentiation of random expressions --------------
# A tree is ("leaf", i), (op, child) or (op, left, right). Most ops are written once, with
# operators both Tensors and NumPy arrays understand; functions NumPy spells differently have
# two entries: (minilora version, reference version). Inputs to log, sqrt, / and ** are kept
# positive or away from zero by construction (x·x + 1), so the tree is defined everywhere.
def _complex_max(z, axis=-1, keepdims=True):
    """max by real part, sharing the derivative among ties (the engine's convention)."""
    hit = z.real == np.max(z.real, axis=axis, keepdims=True)
    return np.sum(z * hit, axis=axis, keepdims=keepdims) / np.sum(hit, axis=axis, keepdims=True)


def _fits_matmul(a, b) -> bool:
    """Inner sizes agree, and no vector meets a batch of matrices: that product has shape
    (2, n), which would no longer broadcast against (3, 3)."""
    if a.ndim == 0 or b.ndim == 0 or {a.ndim, b.ndim} == {1, 3}:
        return False
    return a.shape[-1] == b.shape[-2 if b.ndim > 1 else 0]


UNARY_NODES = {
    "neg": lambda x: -x,
    "square": lambda x: x * x,  # one tensor used twice by the same op
    "exp": (Tensor.exp, np.exp),
    "tanh": (Tensor.tanh, np.tanh),
    "relu": (Tensor.relu, lambda z: np.where(z.real > 0, z, 0)),
    "log": (lambda x: (x * x + 1).log(), lambda z: np.log(z * z + 1)),
    "sqrt": (lambda x: (x * x + 1).sqrt(), lambda z: np.sqrt(z * z + 1)),
    "sum": lambda x: x.sum(axis=-1, keepdims=True) if x.ndim else x,
    "mean": lambda x: x.mean(axis=-1, keepdims=True) if x.ndim else x,
    "max": (lambda x: x.max(axis=-1, keepdims=True) if x.ndim else x,
            lambda z: _complex_max(z) if z.ndim else z),
    "mT": lambda x: x.mT if x.ndim >= 2 else x,
    "flip": lambda x: x[..., ::-1] if x.ndim else x,
    "2 - x": lambda x: 2 - x,
    "3 / (x*x + 1)": lambda x: 3 / (x * x + 1),
    "1.5 ** x": lambda x: 1.5 ** x,
}
BINARY_NODES = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": lambda a, b: a / (b * b + 1),
    "pow": (lambda a, b: (a * a + 1) ** b.tanh(), lambda a, b: (a * a + 1) ** np.tanh(b)),
    "matmul": lambda a, b: a @ b if _fits_matmul(a, b) else a * b,
}
# Every leaf shape has sizes in {1, 3} (a leading batch of 2 aside), so any two subtrees
# broadcast together, and every node keeps it that way.
LEAF_SHAPES = [(), (3,), (1, 3), (3, 1), (3, 3), (2, 3, 3), (2, 1, 3)]
N_LEAVES = 3


def _evaluate(tree, leaves, reference: bool):
    op, *children = tree
    if op == "leaf":
        return leaves[children[0]]
    fn = {**UNARY_NODES, **BINARY_NODES}[op]
    if isinstance(fn, tuple):
        fn = fn[reference]
    return fn(*(_evaluate(c, leaves, reference) for c in children))


trees = st.recursive(
    st.integers(0, N_LEAVES - 1).map(lambda i: ("leaf", i)),
    lambda sub: st.tuples(st.sampled_from(sorted(UNARY_NODES)), sub)
    | st.tuples(st.sampled_from(sorted(BINARY_NODES)), sub, sub),
    max_leaves=8)


@pytest.mark.law(lesson=1)
@examples(60)
@given(tree=trees, leaf_shapes=st.lists(st.sampled_from(LEAF_SHAPES), min_size=N_LEAVES,
                                        max_size=N_LEAVES), seed=st.integers(0, 2 ** 32 - 1))
def test_random_expressions_match_complex_step_reference(tree, leaf_shapes, seed):
    """For a random composition of the engine's ops: values equal a NumPy evaluation, and gradients
    equal the complex-step derivative Im f(x + i·h·eₖ)/h (h = 1e-20), an independent reference
    exact to rounding, within 1e-6.

    The reference evaluates the same expression in NumPy on complex inputs x + i·h·eₖ: then
    Im f / h is ∂f/∂xₖ with no subtraction, so it is exact to rounding (h = 1e-20), and it
    shares no code with the engine's backward. Agreement is required to 1e-6 relative.

    Source: Squire and Trapp 1998, "Using complex variables to estimate derivatives of real
    functions" (the complex-step method).
    """
    gen = np.random.default_rng(seed)
    xs = [gen.uniform(-1.0, 1.0, size=s) for s in leaf_shapes]
    value = _evaluate(tree, [x.astype(complex) for x in xs], reference=True)
    assume(np.all(np.isfinite(value)) and np.max(np.abs(value), initial=0) < 1e6)
    u = gen.normal(size=np.shape(value))

    leaves = [Tensor(x, requires_grad=True) for x in xs]
    out = _evaluate(tree, leaves, reference=False)
    np.testing.assert_allclose(out.data, value.real, rtol=1e-12,
                               atol=1e-14 * max(1.0, float(np.max(np.abs(value), initial=0))))
    (out * Tensor(u)).sum().backward()

    h = 1e-20
    for i, x in enumerate(xs):
        reference = np.zeros(x.shape)
        for k in np.ndindex(x.shape):
            bumped = [y.astype(complex) for y in xs]
            bumped[i][k] += 1j * h
            reference[k] = np.sum(_evaluate(tree, bumped, reference=True) * u).imag / h
        grad = leaves[i].grad if leaves[i].grad is not None else np.zeros(x.shape)
        scale = max(1.0, float(np.max(np.abs(reference), initial=0)))
        np.testing.assert_allclose(grad, reference, rtol=1e-6, atol=1e-9 * scale)


@pytest.mark.law(lesson=1)
@given(data=st.data())
@examples(10)
def test_vjp_check_agrees_on_a_composite(data):
    """⟨Jᵀu, v⟩ from backward equals d/dε ⟨u, f(x + ε v)⟩ by a central difference, for random
    directions u, v: the one-number check used on whole models.

    Source: calculus (the adjoint identity ⟨u, J v⟩ = ⟨Jᵀ u, v⟩); HIPS/autograd's VJP check.
    """
    sa, sb = data.draw(two_broadcastable(max_dims=2)).input_shapes
    a, b = data.draw(values(sa)), data.draw(values(sb))
    assert vjp_check(lambda p, q: (p * q).tanh() + (p - q).exp(), [T(a), T(b)])
