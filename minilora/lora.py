"""LoRA on a whole model: injection, trainable parameters, merging, many adapters on one base.

    lm = get_lora_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))

replaces each targeted ``Linear`` by a :class:`LoraLinear` *in place*, freezes every base weight
and returns a :class:`LoraModel` that manages the adapters (PEFT's ``get_peft_model``). One base
model can carry many named adapters (a domain, a task, a user) and switch between them; a merged
model switches by subtracting B A and adding B' A' (Section 4.2, "no additional latency").
"""
from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from dataclasses import replace

from . import backend
from .backend import xp
from .lora_layer import LoraConfig, LoraLinear, lora_scaling, matches_target
from .nn import Linear, Module

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
        """Add a new adapter (inactive until ``set_adapter``); wraps newly targeted Linears."""
        if adapter_name in self.peft_config:
            raise ValueError(f"adapter {adapter_name!r} already exists; adapters: "
                             f"{list(self.peft_config)}")
        if any(layer.merged for _, layer in self.lora_layers()):
            raise ValueError("add_adapter: unmerge the merged adapters first")
        targets = find_targets(self.model, config)  # raises before anything changes
        for path in targets:
            layer = self.model.get_submodule(path)
            r, full = config.rank_for(path), min(layer.in_features, layer.out_features)
            if r > full and config.init_lora_weights == "pissa":
                raise ValueError(f"{path}: init_lora_weights='pissa' needs r <= min(in, out)="
                                 f"{full} (W0 has only that many singular vectors), got r={r}")
            if r > full:
                warnings.warn(f"{path}: r={r} exceeds min(in, out)={full}; it adds parameters "
                              f"but no expressivity", stacklevel=2)
        gen = backend.Generator(seed)
        for path in targets:
            layer = self.model.get_submodule(path)
            if not isinstance(layer, LoraLinear):
                parent, leaf = _parent(self.model, path)
                layer = LoraLinear(layer, adapter_name=None)
                setattr(parent, leaf, layer)
            layer.update_layer(adapter_name, config.rank_for(path), config.alpha_for(path),
                               config.lora_dropout, config.init_lora_weights, config.use_rslora,
                               generator=gen, use_dora=config.use_dora)
        self.peft_config[adapter_name] = config
        self._set_trainable()

    def set_adapter(self, adapter_name: str | list[str]) -> None:
        """Make ``adapter_name`` (or several) the active adapter(s): used in forward, trainable."""
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
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
        self.active_adapter = remaining[0] if len(remaining) == 1 else remaining
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
        unknown = [a for a in adapters if a not in self.peft_config]
        if unknown or len(adapters) != len(weights) or not adapters:
            raise ValueError(f"add_weighted_adapter: adapters {adapters} (unknown: {unknown}) and "
                             f"weights {weights} must be known and of equal length")
        if adapter_name in self.peft_config:
            raise ValueError(f"adapter {adapter_name!r} already exists")
        if combination_type not in ("cat", "linear", "svd"):
            raise ValueError(f"combination_type must be 'cat', 'linear' or 'svd', "
                             f"got {combination_type!r}")
        ranks = {self.peft_config[a].r for a in adapters}
        if combination_type == "linear" and (len(ranks) > 1 or any(
                self.peft_config[a].rank_pattern for a in adapters)):
            raise ValueError(f"combination_type='linear' needs adapters of one rank, got {ranks}")
        if any(self.peft_config[a].use_dora for a in adapters):
            raise ValueError("add_weighted_adapter: DoRA adapters cannot be combined: their "
                             "magnitude rescales W0 + ΔW as a whole, not a sum of ΔW's")
        if combination_type == "linear" and any(w < 0 for w in weights):
            raise ValueError(f"combination_type='linear' takes √w of each weight, so weights "
                             f"must be >= 0, got {weights}; 'cat' and 'svd' take any sign")
        factors = {}
        for path, layer in self.lora_layers():
            present = [(a, w) for a, w in zip(adapters, weights) if a in layer.lora_A]
            if present:
                factors[path] = _combine(layer, present, combination_type, svd_rank)
        new_r = {path: A.shape[0] for path, (A, _) in factors.items()}
        base = self.peft_config[adapters[0]]
        config = replace(base, r=max(new_r.values()), lora_alpha=max(new_r.values()),
                         use_rslora=False,  # scaling alpha / r = 1 (rsLoRA would give √r)
                         target_modules=sorted(factors), init_lora_weights=True,
                         rank_pattern={re.escape(p): r for p, r in new_r.items()},
                         alpha_pattern={re.escape(p): r for p, r in new_r.items()})
        self.add_adapter(adapter_name, config)
        for path, (A, B) in factors.items():
            layer = self.model.get_submodule(path)
            layer.lora_A[adapter_name].weight.data = A
            layer.lora_B[adapter_name].weight.data = B
        self._set_trainable()

    # -- files (PEFT's method names; the code lives in adapters.py, which builds on this one) --
    def save_pretrained(self, directory, adapter_name: str | None = None):
        """Write one adapter as ``adapter_config.json`` + ``adapter_model.safetensors``."""
        from .adapters import save_adapter
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


def get_lora_model(model: Module, config: LoraConfig, adapter_name: str = "default",
                   seed: int = 0) -> LoraModel:
    """Inject LoRA into ``model`` in place and return the managing :class:`LoraModel`.

    The target names are checked before anything changes: a name that matches no Linear raises
    ``ValueError`` listing the names that exist. ``seed`` draws A (and, for init False, B).
    """
    return LoraModel(model, config, adapter_name, seed)
