"""``F.lora_linear``, LoRA's forward as one fused op: it equals the composed form
``F.linear(x, W0, b) + scaling · F.linear(F.linear(x, A), B)``, its hand-derived backward
agrees with finite differences, and a frozen base computes no dW0."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minilora.functional as F
from minilora import Tensor
from minilora.gradcheck import gradcheck

pytestmark = pytest.mark.lesson03

dims = st.integers(1, 5)


def draw(seed, shape, requires_grad=True):
    return Tensor(np.random.default_rng(seed).normal(size=shape), requires_grad=requires_grad)


@given(st.integers(0, 2**32 - 1), dims, dims, dims, dims, st.booleans())
def test_matches_the_composed_layer_and_finite_differences(seed, N, n_in, n_out, r, bias):
    x, W, A, B = (draw(seed + i, s) for i, s in
                  enumerate([(2, N, n_in), (n_out, n_in), (r, n_in), (n_out, r)]))
    b = draw(seed + 4, (n_out,)) if bias else None
    scaling = 0.5 + seed % 3

    fused = F.lora_linear(x, W, b, A, B, scaling)
    composed = F.linear(x, W, b) + F.linear(F.linear(x, A) * scaling, B)
    np.testing.assert_allclose(fused.data, composed.data, rtol=1e-12, atol=1e-12)

    inputs = [x, W, A, B] + ([b] if bias else [])
    call = (lambda x, W, A, B, b=None: F.lora_linear(x, W, b, A, B, scaling))
    assert gradcheck(call, inputs)


def test_a_frozen_base_gets_no_gradient_and_the_adapters_do():
    x = draw(0, (3, 4, 6), requires_grad=False)
    W, b = draw(1, (5, 6), requires_grad=False), draw(2, (5,), requires_grad=False)
    A, B = draw(3, (2, 6)), draw(4, (5, 2))
    F.lora_linear(x, W, b, A, B, 2.0).sum().backward()
    assert W.grad is None and b.grad is None and x.grad is None
    assert A.grad.shape == A.shape and B.grad.shape == B.shape


def test_shapes_that_do_not_fit_are_refused():
    x, W = draw(0, (2, 6)), draw(1, (5, 6))
    with pytest.raises(ValueError, match="do not fit"):
        F.lora_linear(x, W, None, draw(2, (2, 4)), draw(3, (5, 2)), 1.0)
    with pytest.raises(ValueError, match="do not fit"):
        F.lora_linear(x, W, None, draw(2, (2, 6)), draw(3, (5, 3)), 1.0)
