"""LoRA on a whole model: injection, trainable parameters, merging, many adapters on one base.

    lm = get_lora_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))

replaces each targeted ``Linear`` by a :class:`LoraLinear` *in place*, freezes every base weight
and returns a :class:`LoraModel` that manages the adapters (PEFT's ``get_peft_model``). One base
model can carry many named adapters (a domain, a task, a user) and switch between them; a merged
model switches by subtracting B A and adding B' A' (Section 4.2, "no additional latency").
Switching, deleting, combining, saving and counting them are PEFT's conveniences, which
:class:`LoraModel` inherits from adapter_management.py; this file is the LoRA itself.
"""
from __future__ import annotations

from . import backend
from .adapter_management import AdapterManagement, check_adapter_fits
from .lora_layer import LoraConfig, LoraLinear, find_targets, lora_scaling
from .nn import Module
from .validation import fail

__all__ = ["LoraConfig", "LoraLinear", "LoraModel", "get_lora_model", "find_targets",
           "lora_scaling"]


def _parent(model: Module, path: str) -> tuple[Module, str]:
    head, _, leaf = path.rpartition(".")
    return model.get_submodule(head), leaf


class LoraModel(AdapterManagement, Module):
    """A model whose targeted Linears carry LoRA adapters (``self.model`` is the wrapped model).

    Calling it calls the model. Only the active adapter's A and B require grad.
    """

    def __init__(self, model: Module, config: LoraConfig, adapter_name: str = "default",
                 seed: int = 0):
        super().__init__()
        self.model = model
        self.peft_config: dict[str, LoraConfig] = {}
        self.active_adapter = adapter_name
        self.add_adapter(adapter_name, config, seed)
        self.set_adapter(adapter_name)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def lora_layers(self) -> list[tuple[str, LoraLinear]]:
        """(path, layer) for every LoraLinear, in model order."""
        return [(n, m) for n, m in self.model.named_modules() if isinstance(m, LoraLinear)]

    # -- adapters ----------------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, config: LoraConfig, seed: int = 0) -> None:
        """Add a new adapter (inactive until ``set_adapter``); wraps newly targeted Linears.

        All or nothing: every check (names, ranks, the memory A and B need) comes first, and
        a failure while wrapping puts back every layer as it was.
        """
        if not isinstance(adapter_name, str) or not adapter_name:
            fail("add_adapter: adapter_name", adapter_name, "a non-empty string", TypeError)
        if not isinstance(config, LoraConfig):
            fail("add_adapter: config", config, "a LoraConfig", TypeError)
        if adapter_name in self.peft_config:
            raise ValueError(f"adapter {adapter_name!r} already exists; adapters: "
                             f"{list(self.peft_config)}")
        if any(layer.merged for _, layer in self.lora_layers()):
            raise ValueError("add_adapter: unmerge the merged adapters first")
        targets = find_targets(self.model, config)  # raises before anything changes
        check_adapter_fits(self.model, targets, config)  # ranks and memory
        gen = backend.Generator(seed)
        originals = {path: self.model.get_submodule(path) for path in targets}
        try:
            for path in targets:
                layer = self.model.get_submodule(path)
                if not isinstance(layer, LoraLinear):
                    parent, leaf = _parent(self.model, path)
                    layer = LoraLinear(layer, adapter_name=None)
                    setattr(parent, leaf, layer)
                layer.update_layer(adapter_name, config.rank_for(path), config.alpha_for(path),
                                   config.lora_dropout, config.init_lora_weights,
                                   config.use_rslora, generator=gen, use_dora=config.use_dora)
        except BaseException:  # MemoryError, KeyboardInterrupt: undo the layers done so far
            for path, original in originals.items():
                parent, leaf = _parent(self.model, path)
                setattr(parent, leaf, original)
                if isinstance(original, LoraLinear) and adapter_name in original.lora_A:
                    original.delete_adapter(adapter_name)
            raise
        self.peft_config[adapter_name] = config
        self._set_trainable()

    def _set_trainable(self) -> None:
        """Freeze the base; train the active adapters' A and B, DoRA's magnitude m (and
        biases, per config.bias)."""
        for p in self.model.parameters():
            p.requires_grad = False
        active = self.active_adapters
        for _, layer in self.lora_layers():
            for name in active:
                if name in layer.lora_A:
                    layer.lora_A[name].weight.requires_grad = True
                    layer.lora_B[name].weight.requires_grad = True
                    if name in layer.lora_magnitude_vector:
                        layer.lora_magnitude_vector[name].weight.requires_grad = True
                    if self.peft_config[name].bias == "lora_only" and layer.base_layer.bias is not None:
                        layer.base_layer.bias.requires_grad = True
        if any(self.peft_config[n].bias == "all" for n in active):
            for name, p in self.model.named_parameters():
                if name.endswith("bias"):
                    p.requires_grad = True

    # -- merging -----------------------------------------------------------------------------
    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        """Merge into every layer, all or nothing: a failure leaves every layer as it was."""
        layers = [layer for _, layer in self.lora_layers()]
        names = list(adapter_names or self.active_adapters)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise ValueError(f"merge_adapter: unknown adapter(s) {unknown}; adapters: "
                             f"{list(self.peft_config)}")
        if any(n in layer.merged_adapters for layer in layers for n in names):
            raise ValueError(f"merge_adapter: {names} already merged; unmerge_adapter() first")
        before = [layer.base_layer.weight.data for layer in layers]
        try:
            for layer in layers:
                present = [n for n in names if n in layer.lora_A]
                if present:
                    layer.merge(safe_merge, present)
        except ValueError:
            for layer, W in zip(layers, before):
                layer.base_layer.weight.data = W
                layer.merged_adapters = [n for n in layer.merged_adapters if n not in names]
            raise

    def unmerge_adapter(self) -> None:
        layers = [layer for _, layer in self.lora_layers() if layer.merged]
        if not layers:
            raise ValueError("unmerge_adapter(): no adapter is merged")
        for layer in layers:
            layer.unmerge()

    def _replace_layers(self, merge: bool, safe_merge: bool = False) -> Module:
        if merge:
            if not any(layer.merged for _, layer in self.lora_layers()):
                self.merge_adapter(safe_merge=safe_merge)
        elif any(layer.merged for _, layer in self.lora_layers()):
            raise ValueError("unload(): adapters are merged into the weights; unmerge_adapter() "
                             "first, or call merge_and_unload()")
        for path, layer in self.lora_layers():
            parent, leaf = _parent(self.model, path)
            setattr(parent, leaf, layer.base_layer)
        self.peft_config = {}
        return self.model

    def merge_and_unload(self, safe_merge: bool = False) -> Module:
        """Merge the active adapters and return the model with plain Linears (W = W0 + ΔW)."""
        return self._replace_layers(merge=True, safe_merge=safe_merge)

    def unload(self) -> Module:
        """Return the model with plain Linears and the adapters dropped (W = W0)."""
        return self._replace_layers(merge=False)


def get_lora_model(model: Module, config: LoraConfig, adapter_name: str = "default",
                   seed: int = 0) -> LoraModel:
    """Inject LoRA into ``model`` in place and return the managing :class:`LoraModel`.

    The target names are checked before anything changes: a name that matches no Linear raises
    ``ValueError`` listing the names that exist. ``seed`` draws A (and, for init False, B).
    """
    return LoraModel(model, config, adapter_name, seed)
