"""Check the math yourself: hypothesis strategies for what LoRA's laws quantify over, and the
assertions the laws need.

A law is a property stated for all drawn inputs ("merge then unmerge restores W0", "at B = 0,
∂L/∂A = 0 exactly"). minilora's own laws are catalogued in ``docs/laws.md`` (with a worked
example of writing a new one); they are written with this module, and so is yours.

- ``arrays``: seeds, shapes, well-conditioned float arrays, logits, attention inputs,
  matrices of known spectrum.
- ``layers``: (m, n, r) triples, ``LoraConfig`` values, ``Linear`` and ``LoraLinear`` layers
  with drawn A and B, small MLPs and GPTs with adapters, adapter pairs and a folder to save
  them in.
- ``assertions``: dtype-aware closeness, bit equality; the gradient and VJP checks are
  ``minilora.gradcheck``'s, re-exported here.
- ``examples(n)``: a per-law budget that follows the loaded hypothesis profile.

hypothesis is an optional dependency (the ``test`` extra); ``import minilora`` never imports it.
"""
try:
    import hypothesis
except ImportError as err:  # tests/test_laws.py checks this message in an interpreter without it
    raise ImportError("minilora.testing needs hypothesis, which is in the `test` extra: "
                      "pip install 'minilora[test]'") from err

from ..gradcheck import gradcheck, vjp_check
from .arrays import (arrays, away_from_zero, axes, broadcast_targets, broadcastable_shapes,
                     known_svd, logits_and_targets, normal, orthonormal, qkv,
                     quantizable_weights, seeds, separated, shapes, subspace_shapes)
from .assertions import (assert_bits_equal, assert_close, default_rtol, forward_scale,
                         numerical_rank)
from .layers import (AdaptedGPT, AdapterPair, TinyMLP, adapter_pairs, alphas,
                     combination_weights, dims, factors, gpts_with_adapters, inputs, linears,
                     lora_configs, lora_linear, lora_linears, lora_shapes, randomize,
                     saved_adapters, tiny_gpt, tiny_mlps, two_adapters)

QUICK_EXAMPLES = 25  # examples per law in the quick profile that CI runs (tests/conftest.py)


def examples(n: int) -> "hypothesis.settings":
    """``@settings`` for a law that is costly per example: n examples in the quick profile,
    scaled in proportion to the loaded profile's budget (ten times n under ``thorough``)."""
    budget = hypothesis.settings.default.max_examples
    return hypothesis.settings(max_examples=max(1, n * budget // QUICK_EXAMPLES))


__all__ = [
    "AdaptedGPT", "AdapterPair", "QUICK_EXAMPLES", "TinyMLP", "adapter_pairs", "alphas", "arrays",
    "assert_bits_equal", "assert_close", "away_from_zero", "axes", "broadcast_targets",
    "broadcastable_shapes", "combination_weights", "default_rtol", "dims", "examples", "factors",
    "forward_scale", "gpts_with_adapters", "gradcheck", "inputs", "known_svd", "linears",
    "logits_and_targets", "lora_configs", "lora_linear", "lora_linears", "lora_shapes", "normal",
    "numerical_rank", "orthonormal", "qkv", "quantizable_weights", "randomize", "saved_adapters",
    "seeds", "separated", "shapes", "subspace_shapes", "tiny_gpt", "tiny_mlps", "two_adapters",
    "vjp_check",
]
