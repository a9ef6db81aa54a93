"""Lesson 02, modules: a Module finds its parameters from its attributes, names them by their
path (the names LoRA's ``target_modules`` match), saves and restores them, and refuses a bad
state dict without touching a single weight.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora import Tensor
from minilora.backend import Generator
from minilora.model import GPT, GPTConfig
from minilora.nn import Linear, Module, Parameter
from minilora.testing import examples, linears

pytestmark = pytest.mark.lesson02

CFG = GPTConfig(vocab_size=7, block_size=5, n_layer=2, n_head=2, n_embd=8)
IDX = np.array([[0, 3, 6, 2, 1], [5, 5, 4, 0, 2]])


def snapshot(model: Module) -> dict:
    return {name: p.data.copy() for name, p in model.named_parameters()}


def assert_same_parameters(model: Module, saved: dict) -> None:
    """Every parameter bit-identical to ``saved``: same names, dtypes, shapes and bytes."""
    current = dict(model.named_parameters())
    assert list(current) == list(saved)
    for name, value in saved.items():
        assert current[name].dtype == value.dtype, name
        np.testing.assert_array_equal(current[name].data, value, err_msg=name)


# -- registration and names -------------------------------------------------------------------
class Pair(Module):
    def __init__(self):
        super().__init__()
        self.scale = Parameter(np.ones(3))
        self.first = Linear(3, 3, generator=Generator(0))
        self.second = Linear(3, 3, bias=False, generator=Generator(1))
        self.note = Tensor(np.ones(2))  # a plain Tensor is state, not a parameter

    def forward(self, x):
        return self.second(self.first(x) * self.scale)


def test_attributes_register_parameters_and_modules():
    m = Pair()
    assert [n for n, _ in m.named_parameters()] == ["scale", "first.weight", "first.bias",
                                                   "second.weight"]
    assert [n for n, _ in m.named_modules()] == ["", "first", "second"]
    assert list(m.children()) == [m.first, m.second]
    m.scale = Tensor(np.ones(3))  # replaced by a non-Parameter: no longer registered
    del m.second
    assert [n for n, _ in m.named_parameters()] == ["first.weight", "first.bias"]


def test_a_shared_parameter_is_listed_once():
    m = Pair()
    m.second.weight = m.first.weight  # weight tying
    names = [n for n, _ in m.named_parameters()]
    assert names == ["scale", "first.weight", "first.bias"]
    assert m.num_parameters() == 3 + 9 + 3


def test_forgetting_super_init_is_reported():
    class Broken(Module):
        def __init__(self):
            self.w = Parameter(np.ones(2))

    with pytest.raises(RuntimeError, match="super"):
        Broken()


def test_gpt_parameter_paths_and_shapes():
    """PEFT's names: ``layers.0.attn.q_proj.weight``, ``mlp.up_proj``, ``lm_head``."""
    model = GPT(CFG)
    C, V = CFG.n_embd, CFG.vocab_size
    block = [("ln_1.weight", (C,)), ("ln_1.bias", (C,))]
    block += [(f"attn.{p}_proj.{w}", (C, C) if w == "weight" else (C,))
              for p in "qkvo" for w in ("weight", "bias")]
    block += [("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
              ("mlp.up_proj.weight", (4 * C, C)), ("mlp.up_proj.bias", (4 * C,)),
              ("mlp.down_proj.weight", (C, 4 * C)), ("mlp.down_proj.bias", (C,))]
    expected = [("wte.weight", (V, C)), ("wpe.weight", (CFG.block_size, C))]
    expected += [(f"layers.{i}.{name}", shape) for i in range(CFG.n_layer) for name, shape in block]
    expected += [("ln_f.weight", (C,)), ("ln_f.bias", (C,)), ("lm_head.weight", (V, C))]
    assert [(n, p.shape) for n, p in model.named_parameters()] == expected
    assert model.num_parameters() == sum(math.prod(s) for _, s in expected)
    assert list(model.state_dict()) == [n for n, _ in expected]


def test_gpt_modules_and_children():
    model = GPT(CFG)
    names = [n for n, _ in model.named_modules()]
    assert names[0] == "" and len(names) == len(set(names))
    for path in ("layers.1.attn.q_proj", "layers.0.mlp.down_proj", "lm_head", "ln_f"):
        assert path in names
        assert isinstance(model.get_submodule(path), Module)
    assert isinstance(model.get_submodule("layers.0.attn.o_proj"), Linear)
    assert [n for n, _ in model.named_children()] == ["wte", "wpe", "drop", "layers", "ln_f",
                                                     "lm_head"]
    assert list(model.children())[3] is model.layers
    with pytest.raises(AttributeError, match="nope"):
        model.get_submodule("layers.0.nope")


# -- state_dict -------------------------------------------------------------------------------
@examples(5)
@given(st.integers(0, 1000), st.integers(1, 1000))
def test_state_dict_round_trip_reproduces_the_model(seed, offset):
    """Loading A's state into B (built from another seed) makes B compute exactly what A does,
    and B owns copies: later changes to A do not leak into B."""
    a, b = GPT(CFG, seed=seed), GPT(CFG, seed=seed + offset)
    assert not np.array_equal(a(IDX).data, b(IDX).data)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(b(IDX).data, a(IDX).data)
    saved = snapshot(b)
    for p in a.parameters():
        p.data += 1.0
    assert_same_parameters(b, saved)


CORRUPTIONS = {
    "missing": (KeyError, "missing"),
    "unexpected": (KeyError, "unexpected"),
    "shape": (ValueError, "shape"),
    "dtype": (TypeError, "float64"),
    "nan": (ValueError, "NaN"),
}


def corrupt(state: dict, kind: str, key: str) -> dict:
    state = dict(state)
    if kind == "missing":
        del state[key]
    elif kind == "unexpected":
        state[key + "_extra"] = state[key]
    elif kind == "shape":
        state[key] = np.zeros(state[key].shape + (1,), dtype=state[key].dtype)
    elif kind == "dtype":
        state[key] = state[key].astype(np.float64)
    else:
        bad = state[key].copy()
        bad.reshape(-1)[-1] = np.nan
        state[key] = bad
    return state


@examples(10)
@given(kind=st.sampled_from(sorted(CORRUPTIONS)),
       key=st.sampled_from([n for n, _ in GPT(CFG).named_parameters()]))
def test_a_failed_load_leaves_the_model_bit_identical(kind, key):
    """Every check runs before any copy: whichever entry is bad, nothing is written."""
    model = GPT(CFG, seed=0)
    saved = snapshot(model)
    error, message = CORRUPTIONS[kind]
    with pytest.raises(error, match=message):
        model.load_state_dict(corrupt(GPT(CFG, seed=1).state_dict(), kind, key))
    assert_same_parameters(model, saved)


def test_the_last_entry_being_bad_still_changes_nothing():
    """The hardest case for a load that copies as it checks: all but the last entry are fine."""
    last = list(GPT(CFG).state_dict())[-1]
    for kind, (error, _) in CORRUPTIONS.items():
        model = GPT(CFG, seed=0)
        saved = snapshot(model)
        with pytest.raises(error):
            model.load_state_dict(corrupt(GPT(CFG, seed=1).state_dict(), kind, last))
        assert_same_parameters(model, saved)


def test_shape_error_names_both_shapes():
    model = GPT(CFG)
    with pytest.raises(ValueError, match=r"\(7, 8, 1\).*\(7, 8\)"):
        model.load_state_dict(corrupt(model.state_dict(), "shape", "lm_head.weight"))


# -- modes and gradients ----------------------------------------------------------------------
def test_train_and_eval_propagate_to_every_module():
    model = GPT(GPTConfig(**{**CFG.__dict__, "dropout": 0.5}))
    model.eval()
    assert not any(m.training for m in model.modules())
    np.testing.assert_array_equal(model(IDX).data, model(IDX).data)  # dropout is off
    model.train()
    assert all(m.training for m in model.modules())
    assert not np.array_equal(model(IDX).data, model(IDX).data)  # a fresh mask each call


def test_zero_grad_clears_every_gradient():
    model = GPT(CFG)
    model(IDX).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_requires_grad_freezes_and_unfreezes_a_subtree():
    model = GPT(CFG)
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())
    assert not model(IDX).requires_grad
    model.layers[1].requires_grad_(True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("layers.1.") for n in trainable)
    assert model.num_parameters(only_trainable=True) == model.layers[1].num_parameters()


# -- layers -----------------------------------------------------------------------------------
@pytest.mark.law(lesson=2)
@given(linears(dim=st.integers(1, 40), bias=st.just(True), dtype="float32"))
def test_linear_layout_and_init_bounds(layer):
    """Linear(in, out).weight is (out, in), every entry of W and b lies within PyTorch's bound
    1/√in, and x (…, in) maps to (…, out).

    Source: PyTorch's ``nn.Linear.reset_parameters`` (Kaiming-uniform with a = √5).
    """
    n_in, n_out = layer.in_features, layer.out_features
    assert layer.weight.shape == (n_out, n_in) and layer.bias.shape == (n_out,)
    bound = 1 / math.sqrt(n_in)
    assert np.all(np.abs(layer.weight.data) <= bound) and np.all(np.abs(layer.bias.data) <= bound)
    y = layer(Tensor(np.ones((2, n_in), dtype=np.float32)))
    assert y.shape == (2, n_out)


def test_linear_init_fills_the_uniform_interval():
    """Not just inside the bounds: the variance is that of U(−b, b), b²/3 (to 3%)."""
    w = Linear(256, 128, generator=Generator(0)).weight.data
    bound = 1 / 16
    assert abs(w.var() / (bound ** 2 / 3) - 1) < 0.03
    assert w.max() > 0.99 * bound and w.min() < -0.99 * bound


def test_linear_without_bias_and_bad_sizes():
    layer = Linear(3, 2, bias=False)
    assert layer.bias is None and [n for n, _ in layer.named_parameters()] == ["weight"]
    with pytest.raises(ValueError, match="positive"):
        Linear(0, 2)


def test_to_float64_casts_every_parameter_exactly():
    model = GPT(CFG)
    before = snapshot(model)
    model(IDX).sum().backward()
    model.to("float64")
    for name, p in model.named_parameters():
        assert p.dtype == np.float64 and p.grad is None
        np.testing.assert_array_equal(p.data, before[name].astype(np.float64))
    assert model(IDX).dtype == np.float64
    model.float()
    assert_same_parameters(model, before)
