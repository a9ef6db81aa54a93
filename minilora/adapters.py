"""Loading a saved adapter into any model: a LoraModel gets it beside its adapters, a plain model
gets LoRA layers first (``get_lora_model``), PEFT's ``PeftModel.from_pretrained``.

The files themselves (their layout, saving, and every check made before a model is touched)
are adapter_files.py's; this chapter only adds the injection, which lives one floor up in lora.py.
"""
from __future__ import annotations

import os

from .adapter_files import (CONFIG_NAME, PREFIX, WEIGHTS_NAME, base_signature, fill,  # noqa: F401
                            read_adapter_config, read_checked, save_adapter)
from .lora import LoraModel, get_lora_model
from .nn import Module

__all__ = ["load_adapter", "save_adapter", "read_adapter_config", "base_signature",
           "CONFIG_NAME", "WEIGHTS_NAME", "PREFIX"]


def load_adapter(model: Module, directory: str | os.PathLike, adapter_name: str = "default",
                 is_trainable: bool = False, check_base: bool = True) -> LoraModel:
    """Load an adapter into ``model`` (a plain model or a LoraModel) and return the LoraModel.

    Everything is checked before the model is touched (``adapter_files.read_checked``): the
    config, that every expected key is present and no other, each shape and dtype, finite
    values, and (``check_base``) that the base weights are the ones the adapter was trained on.
    The loaded adapter becomes active; its weights train only if ``is_trainable``. Saved biases
    replace the model's (shared by every adapter, as in PEFT). A PiSSA adapter turns each
    targeted W0 into its residual, which changes the outputs of adapters already there (PEFT
    warns of the same; so does this).
    """
    if isinstance(model, LoraModel):
        model.load_adapter(directory, adapter_name, is_trainable, check_base)
        return model
    config, paths, weights, biases = read_checked(model, directory, adapter_name,
                                                  is_trainable, check_base)
    lora_model = get_lora_model(model, config, adapter_name)  # validated: now change the model
    return fill(lora_model, config, paths, weights, biases, adapter_name, is_trainable)
