"""LoRA configs, layers and small models, with drawn A and B: what the LoRA laws draw.

Every layer and model is float64: a law compares two computations of the same number, and
float64 leaves room to see a wrong formula above the round-off. Shapes are drawn small, skinny
(m ≫ n) and wide (m ≪ n); seeds cover the whole 32-bit range, so every example is a different
initialization.
"""
from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

from ..backend import Generator
from ..lora import LoraConfig, LoraModel, get_lora_model
from ..lora_layer import LoraLinear
from ..model import GPT, GPTConfig
from ..nn import Linear, Module
from ..tensor import Tensor
from .arrays import seeds

dims = st.integers(1, 12)
alphas = st.sampled_from([0.5, 1.0, 2.0, 8.0, 16.0])
combination_weights = st.floats(-2, 2).filter(lambda w: abs(w) > 1e-3)  # add_weighted_adapter's


def inputs(rng, n: int, batch_dims=(5,)) -> Tensor:
    """A standard normal input batch (*batch_dims, n)."""
    return Tensor(rng.standard_normal((*batch_dims, n)))


@st.composite
def lora_shapes(draw, extra_rank: int = 2, dim=dims):
    """(m, n, r): out, in, and a rank up to min(m, n) + extra_rank."""
    m, n = draw(dim), draw(dim)
    return m, n, draw(st.integers(1, min(m, n) + extra_rank))


# -- configs and layers ------------------------------------------------------------------------
TARGETS = [["q_proj", "v_proj"], "all-linear", ["lm_head", "up_proj"], r".*\.(k|o)_proj"]


def lora_configs(r=st.integers(1, 8), lora_alpha=alphas, target_modules=st.sampled_from(TARGETS),
                 init_lora_weights=st.sampled_from([True, "gaussian"]),
                 use_rslora=st.booleans(), lora_dropout=st.sampled_from([0.0, 0.1, 0.5]),
                 bias=st.sampled_from(["none", "all", "lora_only"])):
    """``LoraConfig`` values; pass a strategy (``st.just(x)`` for a constant) to fix a field."""
    return st.builds(LoraConfig, r=r, lora_alpha=lora_alpha, target_modules=target_modules,
                     init_lora_weights=init_lora_weights, use_rslora=use_rslora,
                     lora_dropout=lora_dropout, bias=bias)


@st.composite
def linears(draw, dim=dims, bias=st.booleans(), dtype: str = "float64"):
    """A frozen ``Linear(n -> m)`` with PyTorch's initialization from a drawn seed."""
    layer = Linear(draw(dim), draw(dim), bias=draw(bias), generator=Generator(draw(seeds)),
                   dtype=dtype)
    layer.requires_grad_(False)
    return layer


def lora_linear(m: int, n: int, r: int, seed: int, *, alpha=None, init=True, rslora=False,
                dropout=0.0, bias=True) -> LoraLinear:
    """A LoraLinear (adapter "default", active, lora_alpha = r unless given) around a frozen
    float64 Linear(n -> m)."""
    base = Linear(n, m, bias=bias, generator=Generator(seed), dtype="float64")
    base.requires_grad_(False)
    return LoraLinear(base, "default", r=r, lora_alpha=alpha if alpha is not None else r,
                      lora_dropout=dropout, init_lora_weights=init, use_rslora=rslora,
                      generator=Generator(seed + 1))


def factors(layer: LoraLinear, name: str = "default"):
    """The adapter's parameters (A, B): A is (r, in), B is (out, r)."""
    return layer.lora_A[name].weight, layer.lora_B[name].weight


def randomize(layer: LoraLinear, rng, name: str = "default") -> LoraLinear:
    """Standard normal A and B, so ΔW ≠ 0 (the state after some training)."""
    A, B = factors(layer, name)
    A.data = rng.standard_normal(A.shape)
    B.data = rng.standard_normal(B.shape)
    return layer


@st.composite
def lora_linears(draw, trained: bool = False, shape=None, init=st.sampled_from([True, "gaussian"]),
                 alpha=alphas, rslora=st.booleans(), bias=st.booleans()):
    """A ``LoraLinear`` of drawn shape, alpha, scaling rule and seed. ``trained=False``: its
    initialization (B = 0); ``trained=True``: A and B drawn standard normal (ΔW ≠ 0)."""
    m, n, r = draw(shape if shape is not None else lora_shapes())
    seed = draw(seeds)
    layer = lora_linear(m, n, r, seed, alpha=draw(alpha), init=draw(init), rslora=draw(rslora),
                        bias=draw(bias))
    return randomize(layer, np.random.default_rng(seed)) if trained else layer


# -- models ------------------------------------------------------------------------------------
def tiny_gpt(seed: int, n_layer: int = 2) -> GPT:
    """A float64 GPT small enough to draw by the dozen: vocabulary 11, 6 positions, C = 8."""
    cfg = GPTConfig(vocab_size=11, block_size=6, n_layer=n_layer, n_head=2, n_embd=8,
                    mlp_ratio=2, dtype="float64")
    return GPT(cfg, seed=seed % 10_000)


class AdaptedGPT(NamedTuple):
    build: object  # () -> a fresh copy of the base GPT
    model: LoraModel  # the base with the drawn adapter injected
    idx: np.ndarray  # (2, 6) token ids


@st.composite
def gpts_with_adapters(draw, config=None):
    """A tiny GPT with an adapter from ``config`` (default: ``lora_configs()``) and a batch."""
    seed, cfg = draw(seeds), draw(config if config is not None else lora_configs())
    idx = np.random.default_rng(seed).integers(0, 11, (2, 6))
    return AdaptedGPT(lambda: tiny_gpt(seed), get_lora_model(tiny_gpt(seed), cfg), idx)


class TinyMLP(Module):
    """x (…, n) -> up_proj (h) -> tanh -> down_proj (m) -> tanh -> lm_head (3)."""

    def __init__(self, n, h, m, seed):
        super().__init__()
        gen = Generator(seed)
        self.up_proj = Linear(n, h, generator=gen, dtype="float64")
        self.down_proj = Linear(h, m, generator=gen, dtype="float64")
        self.lm_head = Linear(m, 3, bias=False, generator=gen, dtype="float64")

    def forward(self, x):
        return self.lm_head(self.down_proj(self.up_proj(x).tanh()).tanh())


@st.composite
def tiny_mlps(draw, dim=st.integers(1, 10)):
    """(build, x): a zero-argument constructor of a fresh TinyMLP (skinny or wide), an input."""
    n, h, m, seed = draw(dim), draw(dim), draw(dim), draw(seeds)
    x = Tensor(np.random.default_rng(seed).standard_normal((4, n)))
    return (lambda: TinyMLP(n, h, m, seed % 10_000)), x


def two_adapters(build, seed: int, ra: int = 2, rb: int = 3, **kw) -> LoraModel:
    """A LoraModel on ``build()`` with adapters "a" (active) and "b", both with ΔW ≠ 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # r may exceed min(m, n) of a skinny layer: allowed
        return _two_adapters(build, seed, ra, rb, **kw)


def _two_adapters(build, seed, ra, rb, **kw):
    lm = get_lora_model(build(), LoraConfig(r=ra, lora_alpha=2 * ra, init_lora_weights=False,
                                            target_modules="all-linear", **kw), "a", seed=seed)
    lm.add_adapter("b", LoraConfig(r=rb, lora_alpha=1.5, init_lora_weights=False,
                                   target_modules="all-linear", **kw), seed=seed + 1)
    return lm


class AdapterPair(NamedTuple):
    build: object  # () -> a fresh copy of the base model
    model: LoraModel  # the base with adapters "a" (active) and "b"
    x: Tensor  # an input batch


@st.composite
def adapter_pairs(draw, ranks=st.integers(1, 3), models=tiny_mlps()):
    """Two trained-looking adapters ("a", "b") on one small base; save them with
    ``saved_adapters`` to have them on disk."""
    (build, x), seed = draw(models), draw(seeds)
    return AdapterPair(build, two_adapters(build, seed % 10_000, draw(ranks), draw(ranks)), x)


@contextlib.contextmanager
def saved_adapters(model: LoraModel):
    """Every adapter of ``model`` saved in a temporary folder: yields {name: its folder}
    (removed on exit, so each example of a law starts from an empty disk)."""
    with tempfile.TemporaryDirectory(prefix="minilora-laws-") as root:
        folders = {}
        for name in model.peft_config:
            folders[name] = Path(root) / name
            model.save_pretrained(folders[name], adapter_name=name)
        yield folders
