"""Managing the adapters of a LoraModel, as PEFT does: switching, deleting, disabling,
combining, saving and loading them, counting parameters, and checking that a new one fits.

None of this is LoRA itself (that is lora_layer.py and lora.py: inject, freeze, train, merge);
it is what makes one base model with many named adapters convenient. :class:`LoraModel`
inherits these methods from :class:`AdapterManagement`, so they keep PEFT's names.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

from . import backend
from .adapter_files import fill, read_checked, save_adapter
from .validation import fail


def check_adapter_fits(model, targets: list[str], config) -> None:
    """Refuse (before anything changes) ranks PiSSA cannot take and A, B larger than this
    machine's memory; warn about ranks above min(in, out), which add parameters only."""
    needed, too_wide = 0, []
    for path in targets:
        layer = model.get_submodule(path)
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
        warnings.warn(message, stacklevel=3)


def _itemsize(layer) -> int:
    """Bytes per element of A and B, which take the base weight's dtype."""
    base = getattr(layer, "base_layer", layer)
    return {"float16": 2, "bfloat16": 2, "float32": 4}.get(backend.dtype_name(base.weight.dtype), 8)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no estimate, no limit
        return 2**63


class AdapterManagement:
    """PEFT's adapter methods for :class:`~minilora.lora.LoraModel`, which provides
    ``model``, ``peft_config``, ``lora_layers()`` and ``_set_trainable()``."""

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

    # -- files (PEFT's method names; the code lives in adapter_files.py) ---------------------
    def save_pretrained(self, directory, adapter_name: str | None = None):
        """Write one adapter as ``adapter_config.json`` + ``adapter_model.safetensors``."""
        if adapter_name is None and not self.active_adapters:
            raise ValueError(f"save_pretrained: no active adapter to save (adapters: "
                             f"{list(self.peft_config)}); pass adapter_name")
        return save_adapter(self, directory, adapter_name or self.active_adapters[0])

    def load_adapter(self, directory, adapter_name: str, is_trainable: bool = False,
                     check_base: bool = True) -> None:
        """Load a saved adapter beside the existing ones and make it active (every check made
        before anything changes: ``adapter_files.read_checked``)."""
        config, paths, weights, biases = read_checked(self, directory, adapter_name,
                                                      is_trainable, check_base)
        self.add_adapter(adapter_name, config)
        fill(self, config, paths, weights, biases, adapter_name, is_trainable)

    # -- accounting --------------------------------------------------------------------------
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, all) parameter counts, adapters included in "all" as PEFT counts them."""
        return self.model.num_parameters(only_trainable=True), self.model.num_parameters()

    def print_trainable_parameters(self) -> None:
        """PEFT's line: ``trainable params: 12,288 || all params: 1,234,567 || trainable%: 0.9953``."""
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
              f"trainable%: {100 * trainable / total:.4f}")
