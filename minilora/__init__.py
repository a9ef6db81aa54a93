"""minilora: LoRA (Hu et al. 2021) from scratch, on a small NumPy autograd engine.

Read the package in this order: backend, tensor, ops, functional, gradcheck, nn, model, optim,
train, then lora_layer and lora. Beside them, skippable on a first reading: validation,
lr_scheduler, backend_cupy, adapter_management (PEFT's adapter conveniences, which LoraModel
inherits). What builds on them: variants/ (QLoRA, DoRA, LoRA+, PiSSA), experiments/, bench/;
fast/ holds the fast path, off unless ``minilora.fast.enable()``.
"""
__version__ = "0.1.0"

from . import ops  # noqa: F401  (registers the operators as Tensor methods)
from . import variants  # noqa: F401  (registers DoRA with the LoRA layer's use_dora)
from .backend import Generator, manual_seed
from .ops import cat, stack
from .tensor import Tensor, is_grad_enabled, no_grad, unbroadcast

__all__ = ["Tensor", "no_grad", "is_grad_enabled", "unbroadcast", "cat", "stack",
           "Generator", "manual_seed", "__version__"]
