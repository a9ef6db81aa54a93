"""Lesson 02, the GPT: a whole tiny model is gradient-checked in float64, it is causal, its
configuration refuses impossible shapes, and ``generate()`` decodes as documented.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minilora.functional as F
from minilora.backend import Generator
from minilora.gradcheck import gradcheck, vjp_check
from minilora.model import GPT, GPTConfig
from minilora.testing import examples

pytestmark = pytest.mark.lesson02

CFG = GPTConfig(vocab_size=7, block_size=5, n_layer=2, n_head=2, n_embd=8, dtype="float64")
IDX = np.array([[0, 3, 6, 2, 1], [5, 5, 4, 0, 2]])
TARGETS = np.array([[3, 6, 2, 1, -100], [5, 4, 0, 2, 6]])


def tiny_gpt(seed=0) -> GPT:
    """GPT-2's init makes every bias 0 and every LayerNorm an identity, which would hide a
    backward that forgets them; jitter every parameter so each one matters."""
    model = GPT(CFG, seed=seed)
    gen = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = p.data + gen.normal(0.0, 0.3, p.shape)
    return model


def loss(model):
    return F.cross_entropy(model(IDX), TARGETS)


@pytest.mark.law(lesson=2)
@examples(5)
@given(st.integers(0, 2 ** 16))
def test_vjp_check_on_every_parameter(seed):
    """For the whole GPT (every parameter jittered so that each one matters): ⟨Jᵀu, v⟩ from
    backward equals the directional difference d/dε ⟨u, f(θ + ε v)⟩, for the loss and for the
    logits.

    Source: calculus (the adjoint identity), applied to the GPT-2 architecture (Radford et al.
    2019).
    """
    model = tiny_gpt(seed)
    params = list(model.parameters())
    assert vjp_check(lambda *_: loss(model), params, seed=seed)
    assert vjp_check(lambda *_: model(IDX), params, seed=seed + 1)


def test_gradcheck_on_a_subset_of_parameters():
    """Entry by entry, one tensor from each kind of layer."""
    model = tiny_gpt(0)
    names = ["wte.weight", "wpe.weight", "layers.0.attn.q_proj.weight", "layers.0.ln_1.bias",
             "layers.1.attn.v_proj.bias", "layers.1.mlp.down_proj.weight", "ln_f.weight",
             "lm_head.weight"]
    params = dict(model.named_parameters())
    assert gradcheck(lambda *_: loss(model), [params[n] for n in names])


def test_forward_shape_and_dtype():
    logits = tiny_gpt()(IDX)
    assert logits.shape == (2, 5, 7) and logits.dtype == np.float64


@pytest.mark.law(lesson=2)
@examples(10)
@given(st.integers(0, 4), st.integers(0, 2 ** 16))
def test_the_model_is_causal(t, seed):
    """The logits at position t are a function of tokens 0..t: changing later tokens leaves them
    bit-identical.

    Source: Radford et al. 2018/2019 (a decoder-only language model with masked self-attention).
    """
    model = tiny_gpt()
    other = IDX.copy()
    other[:, t + 1:] = np.random.default_rng(seed).integers(0, 7, other[:, t + 1:].shape)
    np.testing.assert_allclose(model(other).data[:, : t + 1], model(IDX).data[:, : t + 1],
                               rtol=0, atol=1e-12)


def test_a_sequence_longer_than_block_size_raises():
    with pytest.raises(ValueError, match="6.*5"):
        tiny_gpt()(np.zeros((1, 6), dtype=int))


# -- generate ---------------------------------------------------------------------------------
def test_generate_shapes_and_range():
    model = tiny_gpt()
    out = model.generate(IDX[:, :2], max_new_tokens=7, generator=Generator(0))  # beyond block
    assert out.shape == (2, 9)
    np.testing.assert_array_equal(out[:, :2], IDX[:, :2])
    assert out.min() >= 0 and out.max() < CFG.vocab_size


def test_greedy_is_deterministic_and_picks_the_argmax():
    model = tiny_gpt()
    a = model.generate(IDX[:, :3], max_new_tokens=4, temperature=0)
    b = model.generate(IDX[:, :3], max_new_tokens=4, temperature=0)
    np.testing.assert_array_equal(a, b)
    for step in range(4):  # each new token is the argmax given everything before it
        context = a[:, max(0, 3 + step - CFG.block_size): 3 + step]
        np.testing.assert_array_equal(a[:, 3 + step], model(context).data[:, -1].argmax(-1))


@pytest.mark.law(lesson=2)
@examples(5)
@given(st.integers(0, 2 ** 16), st.floats(0.1, 3.0))
def test_top_k_1_is_greedy(seed, temperature):
    """generate with top_k = 1 equals greedy decoding (temperature 0), at any temperature and
    with any generator: one candidate leaves nothing to sample.

    Source: the definition of top-k sampling (Fan et al. 2018, "Hierarchical Neural Story
    Generation").
    """
    model = tiny_gpt()
    greedy = model.generate(IDX[:, :2], max_new_tokens=5, temperature=0)
    sampled = model.generate(IDX[:, :2], max_new_tokens=5, temperature=temperature, top_k=1,
                             generator=Generator(seed))
    np.testing.assert_array_equal(sampled, greedy)


def test_sampling_is_reproducible_given_a_generator():
    model = tiny_gpt()
    a = model.generate(IDX[:, :2], 6, temperature=1.5, generator=Generator(7))
    b = model.generate(IDX[:, :2], 6, temperature=1.5, generator=Generator(7))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(IDX, 1, temperature=-1.0)


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (dict(n_embd=10, n_head=4), "divisible"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(n_layer=-1), "n_layer"),
    (dict(block_size=0), "block_size"),
    (dict(dropout=1.0), "dropout"),
])
def test_config_refuses_impossible_shapes(change, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**change)
