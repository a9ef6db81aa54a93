"""Intruder dimensions, found and scaled down (Shuttleworth et al. 2024, "LoRA vs Full
Fine-tuning: An Illusion of Equivalence"; PEFT's ``reduce_intruder_dimension``).

A LoRA-trained weight W = W0 + ΔW, with W = U diag(σ) Vᵀ, has *intruder dimensions*: among
its top_k left singular vectors u_i, those with

    max_j |⟨u_i, u⁰_j⟩| < ε        over every left singular vector u⁰_j of W0

(``analysis.intruder_dimensions`` counts them). Shuttleworth et al. change their singular values
after fine-tuning and find that they carry the forgetting; scaling them down,

    W' = W + (λ − 1) Σ_{i ∈ I} σ_i u_i v_iᵀ        I: the intruders among the top_k, λ ∈ [0, 1]

(σ_i → λ σ_i; every other singular triplet of W stays as it was), recovers pre-training
behaviour at a small cost to the new task. λ = 1 changes nothing; λ = 0 removes them.

PEFT ships it as ``reduce_intruder_dimension`` in ``src/peft/tuners/lora/intruders.py``
(huggingface/peft; read for this module): defaults ``top_k=10``, ``threshold_epsilon=0.5``,
``mitigation_lambda=0.75``; intruders found and scaled on the merged W (not on ΔW alone: its
comment says that recovers more of the base's knowledge); the result stored as a new adapter,
ΔW' = W' − W0 refactored to the old rank r by a truncated SVD. Its docstring calls λ "the
portion subtracted"; its code, like the paper, keeps the portion λ (subtracts 1 − λ), and so
does this module. :func:`reduce_intruders` works on weight matrices,
:func:`reduce_intruder_dimension` on a LoraModel. Layout is PyTorch's: W0 and W are (out, in).
"""
from __future__ import annotations

from dataclasses import replace

from .analysis import max_cosines
from .backend import xp
from .validation import check_int, check_real


def _check_arguments(where: str, top_k, threshold_epsilon, mitigation_lambda=None) -> tuple:
    """top_k >= 1 (more than min(out, in) examines all), ε ∈ (0, 1], λ ∈ [0, 1]."""
    checked = (check_int(f"{where}: top_k", top_k, low=1),
               check_real(f"{where}: threshold_epsilon", threshold_epsilon, low=0.0, high=1.0,
                          low_open=True))
    if mitigation_lambda is None:
        return checked
    return checked + (check_real(f"{where}: mitigation_lambda", mitigation_lambda,
                                 low=0.0, high=1.0),)


def _check_weights(W0, W, where: str) -> None:
    for name, M in (("W0", W0), ("W", W)):
        if not hasattr(M, "shape") or len(M.shape) != 2 or 0 in M.shape:
            raise ValueError(f"{where}: {name} must be a non-empty matrix (out, in), got "
                             f"{tuple(M.shape) if hasattr(M, 'shape') else type(M).__name__}")
        if not bool(xp.all(xp.isfinite(M))):
            raise ValueError(f"{where}: {name} has NaN or infinite entries")
    if tuple(W0.shape) != tuple(W.shape):
        raise ValueError(f"{where}: W0 {tuple(W0.shape)} and W {tuple(W.shape)} must have one "
                         f"shape (W = W0 + ΔW)")


def _intruder_mask(W0, U, top_k: int, threshold_epsilon: float):
    """1.0 for each singular index i < top_k of W whose u_i has no partner in W0 (|cos| < ε),
    else 0.0: an (n,) array over all n = min(out, in) singular indices."""
    k = min(top_k, U.shape[1])
    intruder = max_cosines(U[:, :k], W0) < threshold_epsilon  # (k,)
    unexamined = xp.zeros((U.shape[1] - k,), dtype=U.dtype)  # ranks k .. n − 1
    return xp.concat([xp.astype(intruder, U.dtype), unexamined])  # (n,)


def _scaled(W0, W, top_k, threshold_epsilon, mitigation_lambda):
    """(W', number of intruders) with W' = W + (λ − 1) U diag(σ ⊙ m) Vᵀ, m the intruder mask."""
    U, S, Vh = xp.linalg.svd(W, full_matrices=False)  # (out, n), (n,), (n, in)
    mask = _intruder_mask(W0, U, top_k, threshold_epsilon)  # (n,)
    intruders = xp.matmul(U * (S * mask)[None, :], Vh)  # Σ_{i ∈ I} σ_i u_i v_iᵀ, (out, in)
    return W + (mitigation_lambda - 1.0) * intruders, int(xp.sum(mask))


def intruder_indices(W0, W, top_k: int = 10, threshold_epsilon: float = 0.5) -> list[int]:
    """The indices i < top_k (largest singular value first) of W's intruder dimensions.

    W0 comes first here, as in W = W0 + ΔW (``analysis.intruder_dimensions``, which counts
    them, takes the fine-tuned W first).
    """
    top_k, threshold_epsilon = _check_arguments("intruder_indices", top_k, threshold_epsilon)
    _check_weights(W0, W, "intruder_indices")
    U = xp.linalg.svd(W, full_matrices=False)[0]  # (out, n)
    mask = _intruder_mask(W0, U, top_k, threshold_epsilon)
    return [i for i in range(mask.shape[0]) if float(mask[i]) == 1.0]


def reduce_intruders(W0, W, top_k: int = 10, threshold_epsilon: float = 0.5,
                     mitigation_lambda: float = 0.75):
    """W' = W + (λ − 1) Σ_{i ∈ I} σ_i u_i v_iᵀ: the intruder singular values of W scaled by λ.

    W0 is the pre-trained weight, W the fine-tuned (merged) one; returns a new (out, in) array.
    λ = 1 returns W's values exactly (W + 0); W itself is never changed.
    """
    where = "reduce_intruders"
    top_k, threshold_epsilon, mitigation_lambda = _check_arguments(
        where, top_k, threshold_epsilon, mitigation_lambda)
    _check_weights(W0, W, where)
    return _scaled(W0, W, top_k, threshold_epsilon, mitigation_lambda)[0]


def _rank_r_factors(delta, r: int):
    """(A (r, in), B (out, r)) with B A the best rank-r approximation of delta (Eckart-Young);
    √σ on each side, as PEFT does, so that neither factor dwarfs the other."""
    U, S, Vh = xp.linalg.svd(delta, full_matrices=False)  # (out, n), (n,), (n, in)
    root = xp.sqrt(S[:r])  # (r,)
    return root[:, None] * Vh[:r, :], U[:, :r] * root[None, :]


def reduce_intruder_dimension(peft_model, old_adapter_name: str = "default",
                              new_adapter_name: str = "intruder_reduced", top_k: int = 10,
                              threshold_epsilon: float = 0.5, mitigation_lambda: float = 0.75,
                              logging_sink=print) -> dict[str, int]:
    """PEFT's intruder mitigation on a LoraModel: adds the adapter ``new_adapter_name`` and makes
    it the active one (the only state that changes; ``set_adapter(old_adapter_name)`` goes back).

    Per layer with the old adapter: W = W0 + ΔW, W' = :func:`reduce_intruders` (W0, W), and the
    new adapter's A, B are the rank-r factors of (W' − W0) / scaling (r and scaling the old
    adapter's), so its merged weight is the best rank-r approximation of W' (equal to W' when
    W' − W0 has rank <= r). A layer without intruders gets copies of the old A and B. Returns the
    number of intruders per layer path; ``logging_sink`` gets PEFT's lines (None: silent).
    Every check and every layer's factors come first, then the adapter is added.
    """
    where = "reduce_intruder_dimension"
    top_k, threshold_epsilon, mitigation_lambda = _check_arguments(
        where, top_k, threshold_epsilon, mitigation_lambda)
    if old_adapter_name not in peft_model.peft_config:
        raise ValueError(f"{where}: old_adapter_name {old_adapter_name!r} is not an adapter; "
                         f"adapters: {list(peft_model.peft_config)}")
    if new_adapter_name in peft_model.peft_config:
        raise ValueError(f"{where}: new_adapter_name {new_adapter_name!r} already exists")
    config = peft_model.peft_config[old_adapter_name]
    if config.use_dora:
        raise ValueError(f"{where}: {old_adapter_name!r} is a DoRA adapter; its magnitude "
                         f"rescales W0 + ΔW as a whole, so W' − W0 is not its ΔW")
    layers = [(path, layer) for path, layer in peft_model.lora_layers()
              if old_adapter_name in layer.lora_A]
    if any(layer.merged for _, layer in layers):
        raise ValueError(f"{where}: unmerge the merged adapters first (W0 must be the base)")
    log = logging_sink or (lambda *args: None)
    factors, counts = {}, {}
    for path, layer in layers:
        A = layer.lora_A[old_adapter_name].weight.data  # (r, in)
        B = layer.lora_B[old_adapter_name].weight.data  # (out, r)
        W0 = layer.base_layer.weight.data  # (out, in)
        W_reduced, counts[path] = _scaled(W0, W0 + layer.delta_weight(old_adapter_name), top_k,
                                          threshold_epsilon, mitigation_lambda)
        if counts[path] == 0:
            log(f"{path}: No intruders")
            factors[path] = (xp.asarray(A, copy=True), xp.asarray(B, copy=True))
            continue
        log(f"{path}: Intruders: {counts[path]}")
        delta = (W_reduced - W0) / layer.scaling[old_adapter_name]  # unscaled ΔW', (out, in)
        factors[path] = _rank_r_factors(delta, layer.r[old_adapter_name])
    # The weights are set below, not drawn: init True keeps add_adapter off W0 (PiSSA changes it).
    peft_model.add_adapter(new_adapter_name, replace(config, init_lora_weights=True))
    for path, (A, B) in factors.items():
        layer = peft_model.model.get_submodule(path)
        layer.lora_A[new_adapter_name].weight.data = A
        layer.lora_B[new_adapter_name].weight.data = B
    log(f"Enabling new adapter {new_adapter_name}")
    peft_model.set_adapter(new_adapter_name)
    return counts
