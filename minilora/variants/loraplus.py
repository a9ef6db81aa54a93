"""LoRA+ (Hayou et al. 2024): train B with a larger learning rate than A.

At LoRA's usual init (A random, B = 0) the two factors play different roles: for wide layers,
updates of A and B of the same size cannot both be efficient, and the analysis in the paper
gives lr_B / lr_A of order the layer width. In practice a fixed ratio (16 is the paper's and
PEFT's suggestion) speeds up fine-tuning at no cost:

    optimizer = create_loraplus_optimizer(lm, AdamW, lr=2e-4, loraplus_lr_ratio=16)

is ``AdamW(loraplus_param_groups(lm, lr=2e-4, loraplus_lr_ratio=16))``: two parameter groups,
the B matrices at ``lr · loraplus_lr_ratio`` and every other trainable parameter at ``lr``.
Names follow PEFT's ``peft.optimizers.create_loraplus_optimizer``. B matrices are found by
identity (each LoRA layer's ``lora_B``), never by parsing parameter names; PEFT also gives
every 1-D trainable parameter (biases, DoRA's magnitudes) B's rate, here they keep ``lr``.
"""
from __future__ import annotations

from ..lora_layer import LoraLinear
from ..nn import Module


def loraplus_param_groups(model: Module, lr: float, loraplus_lr_ratio: float = 16.0) -> list[dict]:
    """Optimizer parameter groups: ``lora_B`` weights at ``lr · ratio``, the rest at ``lr``.

    Only parameters that require grad are listed; together the groups cover each exactly once.
    """
    if lr <= 0 or loraplus_lr_ratio <= 0:
        raise ValueError(f"loraplus: lr and loraplus_lr_ratio must be positive, got "
                         f"{lr} and {loraplus_lr_ratio}")
    B_ids = {id(B.weight) for m in model.modules() if isinstance(m, LoraLinear)
             for B in m.lora_B._modules.values()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    group_B = [p for p in trainable if id(p) in B_ids]
    group_A = [p for p in trainable if id(p) not in B_ids]  # lora_A, DoRA's m, trained biases
    if not group_B:
        raise ValueError("loraplus: the model has no trainable lora_B weight (is it a LoRA model "
                         "with an active adapter?)")
    return [{"params": group_A, "lr": lr, "name": "lora_A and others"},
            {"params": group_B, "lr": lr * loraplus_lr_ratio, "name": "lora_B"}]


def create_loraplus_optimizer(model: Module, optimizer_cls, *, lr: float,
                              loraplus_lr_ratio: float = 16.0, **kwargs):
    """``optimizer_cls`` (e.g. ``AdamW``) over :func:`loraplus_param_groups`; ``kwargs`` go to it."""
    return optimizer_cls(loraplus_param_groups(model, lr, loraplus_lr_ratio), lr=lr, **kwargs)
