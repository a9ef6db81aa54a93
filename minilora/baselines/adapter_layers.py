"""Adapter layers, the baselines of the paper's Table 1 (Section 3, "Adapter layers introduce
inference latency").

An adapter is a small bottleneck with a skip connection, inserted into each block:

    adapter(h) = h + W_up σ(W_down h)          (Houlsby et al. 2019, σ = GELU here)
    adapter(h) = h + W_up σ(W_down LN(h))      (Lin et al. 2020, σ = ReLU)

W_down is (m, d) and W_up is (d, m) with the bottleneck m ≪ d. W_up starts at zero (Houlsby's
near-identity init taken to its limit), so an adapted model starts equal to its base, as LoRA's
B = 0 does. The placements:

* **AdapterH** (Houlsby): two per block, on the output of the attention sublayer and on the
  output of the MLP, before each residual addition.
* **AdapterL** (Lin): one per block, on the block's output (after the MLP's residual
  addition), with a LayerNorm at its input.

Unlike ΔW = B A, an adapter sits *in sequence* with the layer it follows: it cannot be merged
into any weight, so every forward pass pays for its extra products (what Table 1 measures).

    model = add_adapter_layers(GPT(config), kind="H", bottleneck=16)

freezes every base weight and leaves only the adapters (and, for AdapterL, their LayerNorms)
trainable, so the model trains with the same optimizers and loop as a LoRA model.
"""
from __future__ import annotations

from .. import backend
from .. import functional as F
from ..backend import xp
from ..nn import LayerNorm, Linear, Module
from ..tensor import Tensor

KINDS = ("H", "L")


class Adapter(Module):
    """h + W_up σ(W_down [LN](h)): a bottleneck of width ``bottleneck`` with a skip connection."""

    def __init__(self, d_model: int, bottleneck: int, layer_norm: bool = False,
                 activation: str = "gelu", *, generator: backend.Generator | None = None,
                 dtype: str | None = None):
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ValueError(f"Adapter: activation must be 'gelu' or 'relu', got {activation!r}")
        self.activation = activation
        self.adapter_ln = LayerNorm(d_model, dtype=dtype) if layer_norm else None
        self.adapter_down = Linear(d_model, bottleneck, generator=generator, dtype=dtype)
        self.adapter_up = Linear(bottleneck, d_model, generator=generator, dtype=dtype)
        self.adapter_up.weight.data = xp.zeros_like(self.adapter_up.weight.data)  # starts as h
        self.adapter_up.bias.data = xp.zeros_like(self.adapter_up.bias.data)

    def forward(self, h: Tensor) -> Tensor:
        x = self.adapter_ln(h) if self.adapter_ln is not None else h
        act = F.gelu if self.activation == "gelu" else F.relu
        z = act(self.adapter_down(x))  # (B, T, d) -> (B, T, m)
        return h + self.adapter_up(z)  # (B, T, m) -> (B, T, d), plus the skip connection

    def extra_repr(self) -> str:
        return f"bottleneck={self.adapter_down.out_features}, activation={self.activation}"


class AdaptedLayer(Module):
    """``adapter(base_layer(x))``: a layer followed by its adapter (PEFT's ``base_layer`` name)."""

    def __init__(self, base_layer: Module, adapter: Adapter):
        super().__init__()
        self.base_layer, self.adapter = base_layer, adapter

    def forward(self, x: Tensor) -> Tensor:
        return self.adapter(self.base_layer(x))


def adapter_parameter_count(d_model: int, n_layer: int, kind: str, bottleneck: int) -> int:
    """Trainable parameters: each adapter has W_down, b_down, W_up, b_up (2·d·m + m + d), plus
    LN's weight and bias (2·d) for AdapterL; AdapterH has two per block, AdapterL one."""
    per_adapter = 2 * d_model * bottleneck + bottleneck + d_model
    return n_layer * (2 * per_adapter if kind == "H" else per_adapter + 2 * d_model)


def add_adapter_layers(model: Module, kind: str = "H", bottleneck: int = 16,
                       seed: int = 0) -> Module:
    """Insert AdapterH (``kind="H"``) or AdapterL (``"L"``) into every block of a GPT, in place;
    freeze every base weight. Returns the model.

    Checks everything before changing anything: a bad argument, or a model that already has
    adapters, leaves the model as it was.
    """
    if kind not in KINDS:
        raise ValueError(f"add_adapter_layers: kind must be one of {KINDS}, got {kind!r}")
    if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 1:
        raise ValueError(f"add_adapter_layers: bottleneck must be a positive int, "
                         f"got {bottleneck!r}")
    if not hasattr(model, "layers") or not hasattr(model, "config"):
        raise TypeError(f"add_adapter_layers: expected a GPT (with .layers and .config), "
                        f"got {type(model).__name__}")
    if any(isinstance(m, Adapter) for m in model.modules()):
        raise ValueError("add_adapter_layers: the model already has adapter layers")
    cfg, gen = model.config, backend.Generator(seed)
    model.requires_grad_(False)
    new = lambda **kw: Adapter(cfg.n_embd, bottleneck, generator=gen, dtype=cfg.dtype, **kw)  # noqa: E731
    for i, block in enumerate(model.layers):
        if kind == "H":
            block.attn = AdaptedLayer(block.attn, new())
            block.mlp = AdaptedLayer(block.mlp, new())
        else:
            setattr(model.layers, str(i), AdaptedLayer(block, new(layer_norm=True,
                                                                  activation="relu")))
    return model
