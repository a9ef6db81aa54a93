"""DoRA (Liu et al. 2024): weight-decomposed low-rank adaptation.

A weight is a magnitude times a direction, one of each per output row (PyTorch's (out, in)
layout; the paper's "column" of W ∈ R^{d×k} is a row here):

    W' = m ⊙ (W0 + s·B A) / ‖W0 + s·B A‖_row          m ∈ R^{out}, trainable

LoRA's B A moves the direction; the magnitude m is trained on its own. m starts at
‖W0 + s·B A‖_row (‖W0‖_row when B = 0), so the adapted model starts equal to the base model.

Computed as PEFT computes it, without forming m ⊙ W' (b is the base layer's bias):

    y = base(x) + (m/‖·‖ − 1) ⊙ W0 x + (m/‖·‖) ⊙ s·B A x  =  b + (m/‖·‖) ⊙ (W0 + s·B A) x

The norm needs the (out, in) matrix W0 + s·B A in every forward pass: DoRA's extra cost over
LoRA. Gradients flow through the norm here, so they are the exact derivative of the formula.
PEFT, following the paper's Section 4.3, detaches the norm (treats it as a constant) to save
the memory of that backward: same forward, a different (approximate) gradient.
"""
from __future__ import annotations

from .. import backend
from .. import functional as F
from ..backend import xp
from ..lora_layer import VARIANTS, LoraLinear, LoraVariant
from ..nn import Linear, Module, Parameter
from ..tensor import Tensor, no_grad


class DoraLinearLayer(Module):
    """The magnitude vector ``weight`` (out_features,) of one DoRA adapter (PEFT's name)."""

    def __init__(self, out_features: int, dtype: str | None = None):
        super().__init__()
        self.weight = Parameter(xp.ones((out_features,), dtype=backend.dtype(dtype)))

    @staticmethod
    def get_weight_norm(weight: Tensor, lora_weight: Tensor, scaling: float) -> Tensor:
        """‖W0 + s·B A‖ of each output row, differentiable in ``lora_weight`` = B A."""
        W = weight + lora_weight * scaling  # (out, in)
        return (W * W).sum(axis=1).sqrt()  # (out,)

    def update_layer(self, base_layer: Linear, lora_A: Linear, lora_B: Linear,
                     scaling: float) -> None:
        """m ← ‖W0 + s·B A‖_row: the adapted layer starts out equal to the base layer."""
        with no_grad():
            lora_weight = lora_B.weight @ lora_A.weight  # (out, r) @ (r, in) -> (out, in)
            self.weight.data = self.get_weight_norm(base_layer.weight, lora_weight, scaling).data

    def forward(self, x: Tensor, *, lora_A: Linear, lora_B: Linear, scaling: float,
                base_layer: Linear, base_result: Tensor) -> Tensor:
        """What DoRA adds to ``base_layer(x)``, given ``base_result`` = W0 x (no bias).

        ``x`` is the LoRA branch's (dropped-out) input; W0 is read from the base layer, so a
        4-bit base is dequantized here too.
        """
        lora_weight = lora_B.weight @ lora_A.weight  # (out, r) @ (r, in) -> (out, in)
        weight_norm = self.get_weight_norm(base_layer.weight, lora_weight, scaling)  # (out,)
        mag_norm_scale = self.weight / weight_norm  # (out,): m / ‖W0 + s·B A‖
        lora_result = lora_B(lora_A(x) * scaling)  # (..., out): s·B A x, thin products only
        return (mag_norm_scale - 1.0) * base_result + mag_norm_scale * lora_result

    def merged_weight(self, W, delta):
        """(m/‖W + ΔW‖) ⊙ (W + ΔW) and the norm used (``unmerged_weight`` needs it back)."""
        norm = xp.sqrt(xp.sum((W + delta) * (W + delta), axis=1))  # (out,)
        return (self.weight.data / norm)[:, None] * (W + delta), norm

    def unmerged_weight(self, W, delta, norm):
        """The inverse of :meth:`merged_weight`: W · ‖·‖/m − ΔW."""
        return W * (norm / self.weight.data)[:, None] - delta


class DoraVariant(LoraVariant):
    """DoRA through the LoRA layer's hooks: a magnitude m per adapter in the layer's
    ``lora_magnitude_vector`` (PEFT's name), a forward that rescales, an exact merge."""

    def __init__(self):
        self.norm = None  # ‖W + ΔW‖_row used by the merge, which the unmerge divides back

    def init(self, layer: LoraLinear, name: str) -> None:
        magnitude = DoraLinearLayer(layer.out_features, backend.dtype_name(
            layer.base_layer.weight.dtype))
        magnitude.update_layer(layer.base_layer, layer.lora_A[name], layer.lora_B[name],
                               layer.scaling[name])
        layer.lora_magnitude_vector[name] = magnitude

    def forward(self, layer: LoraLinear, name: str, x: Tensor, result: Tensor) -> Tensor:
        x_in = layer.lora_dropout[name](x)  # x itself when dropout is off
        first = [n for n in layer.active_adapters if n not in layer.merged_adapters][0] == name
        bias = layer.base_layer.bias
        if x_in is x and first:  # result is still base_layer(x) = W0 x + b: W0 x is in it
            W0x = result if bias is None else result - bias
        else:
            W0x = F.linear(x_in, layer.base_layer.weight)
        return result + layer.lora_magnitude_vector[name](
            x_in, lora_A=layer.lora_A[name], lora_B=layer.lora_B[name],
            scaling=layer.scaling[name], base_layer=layer.base_layer, base_result=W0x)

    def merged_weight(self, layer: LoraLinear, name: str, W):
        """W ← m ⊙ (W + ΔW) / ‖W + ΔW‖_row."""
        W, self.norm = layer.lora_magnitude_vector[name].merged_weight(W, layer.delta_weight(name))
        return W

    def unmerged_weight(self, layer: LoraLinear, name: str, W):
        return layer.lora_magnitude_vector[name].unmerged_weight(W, layer.delta_weight(name),
                                                                 self.norm)


VARIANTS["use_dora"] = DoraVariant
