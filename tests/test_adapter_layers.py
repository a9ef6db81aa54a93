"""Adapter layers (AdapterH, AdapterL: the paper's Table 1 baselines): their laws."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minilora import functional as F
from minilora.backend import Generator
from minilora.baselines.adapter_layers import (Adapter, AdaptedLayer, add_adapter_layers,
                                               adapter_parameter_count)
from minilora.gradcheck import gradcheck
from minilora.model import GPT, GPTConfig
from minilora.nn import Linear
from minilora.optim import AdamW
from minilora.tensor import Tensor

pytestmark = pytest.mark.lesson03

CFG = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8, dtype="float64")
IDX = np.random.default_rng(0).integers(0, 11, (2, 6))


def loss(model, idx=IDX):
    logits = model(idx)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx.reshape(-1))


@pytest.mark.parametrize("kind", ["H", "L"])
def test_adapted_model_starts_equal_to_its_base(kind):
    base = GPT(CFG, seed=3)
    expected = base(IDX).numpy()
    adapted = add_adapter_layers(GPT(CFG, seed=3), kind=kind, bottleneck=3, seed=1)
    assert np.array_equal(adapted(IDX).numpy(), expected)  # W_up = 0: adapter(h) = h exactly


@pytest.mark.parametrize("kind", ["H", "L"])
def test_placement(kind):
    model = add_adapter_layers(GPT(CFG), kind=kind, bottleneck=2)
    names = [n for n, m in model.named_modules() if isinstance(m, Adapter)]
    if kind == "H":  # after attention and after the MLP of every block
        assert names == [f"layers.{i}.{part}.adapter" for i in range(2) for part in ("attn", "mlp")]
    else:  # one per block, on the block's output, with a LayerNorm
        assert names == [f"layers.{i}.adapter" for i in range(2)]
        assert all(model.get_submodule(n).adapter_ln is not None for n in names)


@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(["H", "L"]), d=st.sampled_from([4, 8, 12]),
       n_layer=st.integers(1, 3), m=st.integers(1, 5))
def test_only_adapters_train_and_their_count_matches_the_formula(kind, d, n_layer, m):
    cfg = GPTConfig(vocab_size=7, block_size=4, n_layer=n_layer, n_head=2, n_embd=d)
    model = add_adapter_layers(GPT(cfg), kind=kind, bottleneck=m)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".adapter." in n for n in trainable)
    assert model.num_parameters(only_trainable=True) == adapter_parameter_count(d, n_layer, kind, m)
    assert model.num_parameters() == GPT(cfg).num_parameters() + \
        adapter_parameter_count(d, n_layer, kind, m)


@pytest.mark.parametrize("kind", ["H", "L"])
def test_training_moves_only_the_adapters(kind):
    model = add_adapter_layers(GPT(CFG, seed=0), kind=kind, bottleneck=3)
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    start = float(loss(model).data)
    for _ in range(5):
        optimizer.zero_grad()
        value = loss(model)
        value.backward()
        optimizer.step()
    assert float(loss(model).data) < start
    for n, p in model.named_parameters():
        if not p.requires_grad:  # every base weight stays as it was
            assert np.array_equal(p.data, before[n]), n
        elif "adapter_up" in n or "adapter_down" in n:
            assert not np.array_equal(p.data, before[n]), n


@pytest.mark.parametrize("kind", ["H", "L"])
def test_at_init_only_the_up_projection_has_a_gradient(kind):
    """As LoRA's A with B = 0: with W_up = 0, ∂L/∂W_down = 0 exactly, ∂L/∂W_up ≠ 0."""
    model = add_adapter_layers(GPT(CFG, seed=0), kind=kind, bottleneck=3)
    loss(model).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(not np.any(g) for n, g in grads.items() if "adapter_down" in n)
    assert any(np.any(g) for n, g in grads.items() if "adapter_up.weight" in n)


@pytest.mark.parametrize("layer_norm,activation", [(False, "gelu"), (True, "relu")])
def test_adapter_gradients_match_finite_differences(layer_norm, activation):
    gen = Generator(0)
    adapter = Adapter(5, 3, layer_norm, activation, generator=gen, dtype="float64")
    adapter.adapter_up.weight.data = gen.normal((5, 3), dtype="float64")  # nonzero: every path
    h = Tensor(gen.normal((2, 4, 5), dtype="float64") + 0.3, requires_grad=True)
    params = [p for p in adapter.parameters()]
    assert gradcheck(lambda h, *ps: adapter(h), [h, *params])


def test_adapted_layer_is_adapter_after_base_layer():
    gen = Generator(2)
    adapter = Adapter(4, 2, generator=gen, dtype="float64")
    adapter.adapter_up.weight.data = gen.normal((4, 2), dtype="float64")
    linear = Linear(4, 4, generator=gen, dtype="float64")
    x = Tensor(gen.normal((3, 4), dtype="float64"))
    assert np.array_equal(AdaptedLayer(linear, adapter)(x).numpy(), adapter(linear(x)).numpy())


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="X"), "kind must be one of"), (dict(bottleneck=0), "bottleneck must be"),
    (dict(bottleneck=2.5), "bottleneck must be"), (dict(bottleneck=True), "bottleneck must be")])
def test_bad_arguments_are_refused_before_any_change(kwargs, match):
    model = GPT(CFG)
    before = {n: (p.data.copy(), p.requires_grad) for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=match):
        add_adapter_layers(model, **kwargs)
    after = {n: (p.data, p.requires_grad) for n, p in model.named_parameters()}
    assert list(after) == list(before)
    assert all(np.array_equal(after[n][0], before[n][0]) and after[n][1] for n in before)


def test_adapters_are_not_added_twice():
    model = add_adapter_layers(GPT(CFG), kind="H", bottleneck=2)
    with pytest.raises(ValueError, match="already has adapter layers"):
        add_adapter_layers(model, kind="L", bottleneck=2)
    with pytest.raises(TypeError, match="expected a GPT"):
        add_adapter_layers(Adapter(4, 2), kind="H")
