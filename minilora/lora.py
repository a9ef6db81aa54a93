"""LoRA on a whole model: injection, trainable parameters, merging, many adapters on one base.

    lm = get_lora_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))

replaces each targeted ``Linear`` by a :class:`LoraLinear` *in place*, freezes every base weight
and returns a :class:`LoraModel` that manages the adapters (PEFT's ``get_peft_model``). One base
model can carry many named adapters (a domain, a task, a user) and switch between them; a merged
model switches by subtracting B A and adding B' A' (Section 4.2, "no additional latency").
"""
from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager

from . import backend
from .lora_layer import LoraConfig, LoraLinear, lora_scaling, matches_target
from .nn import Linear, Module
from .validation import fail

__all__ = ["LoraConfig", "LoraLinear", "LoraModel", "get_lora_model", "find_targets",
           "lora_scaling"]


def find_targets(model: Module, config: LoraConfig) -> list[str]:
    """Paths of the Linear layers ``config.target_modules`` selects; raises if a name matches none.

    A list entry matches a module whose path equals it or ends with ``.entry``; a string is a
    regex over the whole path; ``"all-linear"`` is every Linear except the output layer lm_head.
    """
    linears, wrapped = [], ()
    for n, m in model.named_modules():
        if wrapped and n.startswith(wrapped):  # the insides of a LoraLinear are not targets
            continue
        if isinstance(m, LoraLinear):
            wrapped = wrapped + (n + ".",)
        if isinstance(m, (Linear, LoraLinear)):
            linears.append(n)
    available = sorted({n.split(".")[-1] for n in linears})
    targets = config.target_modules
    if not isinstance(targets, str):
        unmatched = [t for t in targets if not any(matches_target(n, [t]) for n in linears)]
        if unmatched:
            raise ValueError(f"target_modules {unmatched} match no Linear layer of the model; "
                             f"Linear names: {available}")
    chosen = [n for n in linears if matches_target(n, targets)]
    if not chosen:
        raise ValueError(f"target_modules {targets!r} match no Linear layer; Linear names: "
                         f"{available}")
    return chosen


def _parent(model: Module, path: str) -> tuple[Module, str]:
    head, _, leaf = path.rpartition(".")
    return model.get_submodule(head), leaf


class LoraModel(Module):
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
        needed, too_wide = 0, []
        for path in targets:
            layer = self.model.get_submodule(path)
            r, full = config.rank_for(path), min(layer.in_features, layer.out_features)
            if r > full and config.init_lora_weights == "pissa":
                raise ValueError(f"{path}: init_lora_weights='pissa' needs r <= min(in, out)="
                                 f"{full} (W0 has only that many singular vectors), got r={r}")
            if r > full:
                too_wide.append(f"{path}: r={r} exceeds min(in, out)={full}; it adds parameters "
                                f"but no expressivity")
            needed += r * (layer.in_features + layer.out_features) * _itemsize(layer)
        if needed > _physical_memory():
            raise ValueError(f"add_adapter: LoraConfig.r={config.r} (rank_pattern "
                             f"{config.rank_pattern}) needs {needed / 2**30:.3g} GiB for A and B, "
                             f"more than this machine's {_physical_memory() / 2**30:.3g} GiB")
        for message in too_wide:
            warnings.warn(message, stacklevel=2)
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

    def set_adapter(self, adapter_name: str | list[str]) -> None:
        """Make ``adapter_name`` (or several) the active adapter(s): used in forward, trainable."""
        names = [adapter_name] if isinstance(adapter_name, str) else adapter_name
        if not isinstance(names, (list, tuple)) or not names \
                or not all(isinstance(n, str) for n in names):
            fail("set_adapter: adapter_name", adapter_name, f"an adapter name or a non-empty "
                 f"list of them; adapters: {list(self.peft_config)}", TypeError)
        names = list(names)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise ValueError(f"unknown adapter(s) {unknown}; adapters: {list(self.peft_config)}")
        for _, layer in self.lora_layers():
            layer.active_adapters = [n for n in names if n in layer.lora_A]
        self.active_adapter = adapter_name
        self._set_trainable()

    @property
    def active_adapters(self) -> list[str]:
        return [self.active_adapter] if isinstance(self.active_adapter, str) \
            else list(self.active_adapter)

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name not in self.peft_config:
            raise ValueError(f"unknown adapter {adapter_name!r}; adapters: {list(self.peft_config)}")
        layers = [layer for _, layer in self.lora_layers() if adapter_name in layer.lora_A]
        if any(adapter_name in layer.merged_adapters for layer in layers):
            raise ValueError(f"adapter {adapter_name!r} is merged; unmerge_adapter() first")
        for layer in layers:
            layer.delete_adapter(adapter_name)
        del self.peft_config[adapter_name]
        remaining = [n for n in self.active_adapters if n != adapter_name]
        if not remaining and self.peft_config:  # as PEFT: the first of the others, by name
            remaining = sorted(self.peft_config)[:1]
            warnings.warn(f"adapter {adapter_name!r} was active and is deleted; the active "
                          f"adapter is now {remaining[0]!r}", stacklevel=2)
        if remaining:
            self.set_adapter(remaining[0] if len(remaining) == 1 else remaining)
        else:
            self.active_adapter = []
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

    @contextmanager
    def disable_adapter(self):
        """Run the base model alone inside the ``with`` block (adapters must be unmerged)."""
        layers = [layer for _, layer in self.lora_layers()]
        if any(layer.merged for layer in layers):
            raise RuntimeError("disable_adapter: adapters are merged; unmerge_adapter() first")
        for layer in layers:
            layer.disable_adapters = True
        try:
            yield self
        finally:
            for layer in layers:
                layer.disable_adapters = False

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

    # -- combining adapters ------------------------------------------------------------------
    def add_weighted_adapter(self, adapters: list[str], weights: list[float], adapter_name: str,
                             combination_type: str = "svd", svd_rank: int | None = None) -> None:
        """A new adapter from existing ones (PEFT's ``add_weighted_adapter``), scaling 1:

        "cat": A = [w_i s_i A_i] stacked, B = [B_i] side by side: ΔW = Σ w_i ΔW_i exactly,
               rank Σ r_i.
        "linear": A = Σ √(w_i s_i) A_i, B = Σ √(w_i s_i) B_i (same r; PEFT's current
               formula): cheap, but B A then has cross terms B_i A_j, so it is Σ w_i ΔW_i
               only for a single adapter.
        "svd": the best rank-k factorization (Eckart–Young) of Σ w_i ΔW_i per layer,
               k = svd_rank or max r_i.
        """
        from .combine import add_weighted_adapter  # the recipes, in a chapter of their own
        add_weighted_adapter(self, adapters, weights, adapter_name, combination_type, svd_rank)

    # -- files (PEFT's method names; the code lives in adapters.py, which builds on this one) --
    def save_pretrained(self, directory, adapter_name: str | None = None):
        """Write one adapter as ``adapter_config.json`` + ``adapter_model.safetensors``."""
        from .adapters import save_adapter
        if adapter_name is None and not self.active_adapters:
            raise ValueError(f"save_pretrained: no active adapter to save (adapters: "
                             f"{list(self.peft_config)}); pass adapter_name")
        return save_adapter(self, directory, adapter_name or self.active_adapters[0])

    def load_adapter(self, directory, adapter_name: str, is_trainable: bool = False) -> None:
        """Load a saved adapter beside the existing ones and make it active."""
        from .adapters import load_adapter
        load_adapter(self, directory, adapter_name, is_trainable)

    # -- accounting --------------------------------------------------------------------------
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, all) parameter counts, adapters included in "all" as PEFT counts them."""
        return self.model.num_parameters(only_trainable=True), self.model.num_parameters()

    def print_trainable_parameters(self) -> None:
        """PEFT's line: ``trainable params: 12,288 || all params: 1,234,567 || trainable%: 0.9953``."""
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
              f"trainable%: {100 * trainable / total:.4f}")


def _itemsize(layer) -> int:
    """Bytes per element of A and B, which take the base weight's dtype."""
    base = getattr(layer, "base_layer", layer)
    return {"float16": 2, "bfloat16": 2, "float32": 4}.get(backend.dtype_name(base.weight.dtype), 8)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no estimate, no limit
        return 2**63


def get_lora_model(model: Module, config: LoraConfig, adapter_name: str = "default",
                   seed: int = 0) -> LoraModel:
    """Inject LoRA into ``model`` in place and return the managing :class:`LoraModel`.

    The target names are checked before anything changes: a name that matches no Linear raises
    ``ValueError`` listing the names that exist. ``seed`` draws A (and, for init False, B).
    """
    return LoraModel(model, config, adapter_name, seed)
