"""Lesson 01, frozen means free: a parameter with ``requires_grad=False`` costs no gradient work.

LoRA's training speed-up comes from one skipped product: a frozen Linear's weight gradient
dW = gᵀ x, an (out, N) @ (N, in) matmul. To see that it never runs, these tests install an
array namespace through the backend seam that is NumPy except that ``matmul`` writes down its
operand shapes, then compare what backward() multiplied with and without freezing.
"""
from collections import Counter

import numpy as np
import pytest

from minilora import Tensor, backend
from minilora.model import GPT, GPTConfig
from minilora.nn import Linear, Parameter

pytestmark = pytest.mark.lesson01


class CountingNumpy:
    """NumPy, with every ``matmul`` recorded as its pair of operand shapes."""

    __name__ = "counting-numpy"

    def __init__(self):
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def matmul(self, a, b):
        self.calls.append((tuple(a.shape), tuple(b.shape)))
        return np.matmul(a, b)

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.fixture
def counting():
    namespace = CountingNumpy()
    backend.use(namespace)
    yield namespace
    backend.use("numpy")


def backward_matmuls(counting, loss) -> Counter:
    """The matmuls ``loss.backward()`` performs, as a multiset of operand shapes."""
    counting.calls.clear()
    loss.backward()
    return Counter(counting.calls)


# -- one Linear -------------------------------------------------------------------------------
@pytest.mark.parametrize("B, T, n_in, n_out", [(2, 3, 4, 5), (1, 7, 3, 2), (3, 1, 6, 6)])
def test_a_frozen_linear_never_computes_its_weight_gradient(counting, B, T, n_in, n_out):
    """Training all: backward multiplies for dx and dW. Frozen W: for dx only. The difference
    is exactly one (out, N) @ (N, in) product, and W.grad stays None."""
    N = B * T
    x = np.random.default_rng(0).normal(size=(B, T, n_in))

    def run(freeze: bool):
        layer = Linear(n_in, n_out, generator=backend.Generator(0), dtype="float64")
        layer.weight.requires_grad = not freeze
        inputs = Tensor(x, requires_grad=True)
        calls = backward_matmuls(counting, layer(inputs).tanh().sum())
        return layer, inputs, calls

    trained, x_trained, all_calls = run(freeze=False)
    frozen, x_frozen, frozen_calls = run(freeze=True)
    weight_gradient = ((n_out, N), (N, n_in))
    assert all_calls - frozen_calls == Counter({weight_gradient: 1})
    assert not frozen_calls - all_calls
    assert sum(all_calls.values()) - sum(frozen_calls.values()) == 1
    if N != n_out:  # then no other backward product has this pair of shapes
        assert weight_gradient not in frozen_calls
    assert frozen.weight.grad is None and trained.weight.grad is not None
    np.testing.assert_array_equal(frozen.bias.grad, trained.bias.grad)
    np.testing.assert_array_equal(x_frozen.grad, x_trained.grad)


def test_frozen_weight_on_a_constant_input_does_no_matmul_at_all(counting):
    """With only the bias trainable, backward needs neither dW nor dx: zero products."""
    layer = Linear(4, 3, generator=backend.Generator(0), dtype="float64")
    layer.weight.requires_grad = False
    x = Tensor(np.ones((5, 4)))
    assert backward_matmuls(counting, layer(x).sum()) == Counter()
    assert layer.weight.grad is None
    np.testing.assert_array_equal(layer.bias.grad, np.full(3, 5.0))


# -- a whole GPT, embeddings trainable --------------------------------------------------------
def test_a_gpt_frozen_but_its_embeddings_skips_one_product_per_linear(counting):
    cfg = GPTConfig(vocab_size=7, block_size=5, n_layer=2, n_head=2, n_embd=8, dtype="float64")
    idx = np.array([[0, 3, 6, 2, 1], [5, 5, 4, 0, 2]])
    N = idx.size

    def run(freeze: bool):
        model = GPT(cfg, seed=0)
        if freeze:
            model.requires_grad_(False)
            model.wte.requires_grad_(True)
            model.wpe.requires_grad_(True)
        return model, backward_matmuls(counting, model(idx).tanh().sum())

    trained, all_calls = run(freeze=False)
    frozen, frozen_calls = run(freeze=True)
    linears = [m for _, m in frozen.named_modules() if isinstance(m, Linear)]
    assert len(linears) == 6 * cfg.n_layer + 1  # q, k, v, o, up, down per block, and lm_head
    skipped = Counter(((m.out_features, N), (N, m.in_features)) for m in linears)
    assert all_calls - frozen_calls == skipped
    assert not frozen_calls - all_calls
    assert sum(all_calls.values()) - sum(frozen_calls.values()) == len(linears)

    for name, p in frozen.named_parameters():
        if name.startswith(("wte.", "wpe.")):
            np.testing.assert_allclose(p.grad, dict(trained.named_parameters())[name].grad,
                                       rtol=1e-12, atol=1e-15)
        else:
            assert p.grad is None, name


# -- subgraphs of frozen leaves ---------------------------------------------------------------
def test_a_subgraph_of_frozen_leaves_records_no_graph(counting):
    """An expression of frozen leaves only is a constant: no parents, no backward, and the
    backward of a loss that uses it multiplies only for the trainable input."""
    gen = np.random.default_rng(0)
    W = Parameter(gen.normal(size=(3, 3)), requires_grad=False)
    b = Parameter(gen.normal(size=(3,)), requires_grad=False)
    h = (W @ W.T + b).tanh().sum(axis=0)
    assert not h.requires_grad and h._parents == () and h.is_leaf

    x = Tensor(gen.normal(size=(2, 3)), requires_grad=True)
    calls = backward_matmuls(counting, (x @ (W + h)).sum())  # one product: dx = g (W + h)ᵀ
    assert calls == Counter({((2, 3), (3, 3)): 1})
    assert W.grad is None and b.grad is None
    np.testing.assert_allclose(x.grad, np.ones((2, 3)) @ (W.data + h.data).T, rtol=1e-14)
