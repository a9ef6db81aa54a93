"""Combining adapters into a new one (PEFT's ``add_weighted_adapter``): cat, linear, svd.

One base model with several adapters (a domain, a task, a style) can carry a mix of them as a
further adapter: ΔW_new ≈ Σ w_i ΔW_i, built per layer from the A_i and B_i. The recipes
trade exactness against rank; :meth:`LoraModel.add_weighted_adapter` documents them.
"""
from __future__ import annotations

import re
from dataclasses import replace

from .backend import xp
from .lora_layer import LoraLinear
from .validation import check_int, check_real, fail


def add_weighted_adapter(lm, adapters: list[str], weights: list[float], adapter_name: str,
                         combination_type: str = "svd", svd_rank: int | None = None) -> None:
    """Add ``adapter_name`` to the LoraModel ``lm``: every argument checked, then the factors
    of every layer computed, then the adapter added (so a failure changes nothing)."""
    if not isinstance(adapters, (list, tuple)) or not all(isinstance(a, str) for a in adapters):
        fail("add_weighted_adapter: adapters", adapters, "a list of adapter names", TypeError)
    if not isinstance(weights, (list, tuple)):
        fail("add_weighted_adapter: weights", weights, "a list of numbers", TypeError)
    weights = [check_real(f"add_weighted_adapter: weights[{i}]", w)
               for i, w in enumerate(weights)]
    if svd_rank is not None:
        svd_rank = check_int("add_weighted_adapter: svd_rank", svd_rank, low=1)
    unknown = [a for a in adapters if a not in lm.peft_config]
    if unknown or len(adapters) != len(weights) or not adapters:
        raise ValueError(f"add_weighted_adapter: adapters {adapters} (unknown: {unknown}) and "
                         f"weights {weights} must be known and of equal length")
    if adapter_name in lm.peft_config:
        raise ValueError(f"adapter {adapter_name!r} already exists")
    if combination_type not in ("cat", "linear", "svd"):
        raise ValueError(f"combination_type must be 'cat', 'linear' or 'svd', "
                         f"got {combination_type!r}")
    ranks = {lm.peft_config[a].r for a in adapters}
    if combination_type == "linear" and (len(ranks) > 1 or any(
            lm.peft_config[a].rank_pattern for a in adapters)):
        raise ValueError(f"combination_type='linear' needs adapters of one rank, got {ranks}")
    if any(lm.peft_config[a].use_dora for a in adapters):
        raise ValueError("add_weighted_adapter: DoRA adapters cannot be combined: their "
                         "magnitude rescales W0 + ΔW as a whole, not a sum of ΔW's")
    if combination_type == "linear" and any(w < 0 for w in weights):
        raise ValueError(f"combination_type='linear' takes √w of each weight, so weights "
                         f"must be >= 0, got {weights}; 'cat' and 'svd' take any sign")
    factors = {}
    for path, layer in lm.lora_layers():
        present = [(a, w) for a, w in zip(adapters, weights) if a in layer.lora_A]
        if present:
            factors[path] = _combine(layer, present, combination_type, svd_rank)
    new_r = {path: A.shape[0] for path, (A, _) in factors.items()}
    base = lm.peft_config[adapters[0]]
    config = replace(base, r=max(new_r.values()), lora_alpha=max(new_r.values()),
                     use_rslora=False,  # scaling alpha / r = 1 (rsLoRA would give √r)
                     target_modules=sorted(factors), init_lora_weights=True,
                     rank_pattern={re.escape(p): r for p, r in new_r.items()},
                     alpha_pattern={re.escape(p): r for p, r in new_r.items()})
    lm.add_adapter(adapter_name, config)
    for path, (A, B) in factors.items():
        layer = lm.model.get_submodule(path)
        layer.lora_A[adapter_name].weight.data = A
        layer.lora_B[adapter_name].weight.data = B
    lm._set_trainable()


def _combine(layer: LoraLinear, present, combination_type: str, svd_rank: int | None):
    """(A, B) of the combined adapter for one layer, with scaling 1."""
    if combination_type == "cat":
        A = xp.concat([w * layer.scaling[a] * layer.lora_A[a].weight.data for a, w in present])
        B = xp.concat([layer.lora_B[a].weight.data for a, _ in present], axis=1)
        return A, B
    if combination_type == "linear":
        root = {a: (w * layer.scaling[a]) ** 0.5 for a, w in present}  # split w·s over A and B
        A = sum(root[a] * layer.lora_A[a].weight.data for a, _ in present)
        B = sum(root[a] * layer.lora_B[a].weight.data for a, _ in present)
        return A, B
    delta = sum(w * layer.delta_weight(a) for a, w in present)  # Σ w_i ΔW_i, (out, in)
    k = svd_rank or max(layer.r[a] for a, _ in present)
    U, S, Vh = xp.linalg.svd(delta, full_matrices=False)
    return Vh[:k, :], U[:, :k] * S[None, :k]  # A = V_kᵀ (k, in), B = U_k Σ_k (out, k)
