"""BitFit (Ben Zaken et al. 2021): train only the bias terms, the baseline "BitFit" of the
LoRA paper's Tables 2-4 (Section 5.1, "Bias-only or BitFit").

Every layer keeps its weights W0 frozen and learns only its bias b:

    h = W0 x + b          (Linear: q_proj, k_proj, v_proj, o_proj, up_proj, down_proj)
    h = γ ⊙ x̂ + β         (LayerNorm: ln_1, ln_2, ln_f; the shift β is LayerNorm's bias)

Ben Zaken et al. train the biases of the attention projections, the MLP and the LayerNorms,
which are all the bias terms this GPT has (``lm_head`` has none). Nothing is added, so the
model starts equal to its base, and the trainable count is the number of bias entries of a
pre-LayerNorm GPT with d = n_embd, L = n_layer, mlp_ratio m:

    |Θ| = L · (4d + m·d + d + 2d) + d = L · (m + 7) · d + d
          (q, k, v, o; up; down; ln_1, ln_2 per block; ln_f)

    model = apply_bitfit(GPT(config))
"""
from __future__ import annotations

from ..nn import Module


def bias_names(model: Module) -> list[str]:
    """Dotted names of every bias parameter (``layers.0.attn.q_proj.bias``, ``ln_f.bias``)."""
    return [name for name, _ in model.named_parameters() if name.split(".")[-1] == "bias"]


def bitfit_parameter_count(config) -> int:
    """|Θ| = L · (m + 7) · d + d for a GPTConfig with biases (0 without them)."""
    if not config.bias:
        return 0
    d, L, m = config.n_embd, config.n_layer, config.mlp_ratio
    per_block = 4 * d + m * d + d + 2 * d  # q, k, v, o; up (m·d); down; ln_1, ln_2
    return L * per_block + d  # + ln_f


def apply_bitfit(model: Module) -> Module:
    """Freeze every weight of ``model`` and leave only its biases trainable, in place; returns it.

    Raises (before freezing anything) if the model has no bias, e.g. ``GPTConfig(bias=False)``:
    BitFit would then train nothing.
    """
    if not isinstance(model, Module):
        raise TypeError(f"apply_bitfit: model must be a minilora Module, got "
                        f"{type(model).__name__}")
    names = set(bias_names(model))
    if not names:
        raise ValueError(f"apply_bitfit: {type(model).__name__} has no bias parameters "
                         f"(built with bias=False?); allowed: a model whose layers have biases")
    for name, param in model.named_parameters():
        param.requires_grad = name in names
    return model


__all__ = ["apply_bitfit", "bias_names", "bitfit_parameter_count"]
