"""The LoRA update (Hu et al. 2021, Section 4.1) as a layer that wraps a frozen ``Linear``.

    h = W0 x + ΔW x = W0 x + scaling · B A x,   W0 ∈ R^{out×in}, B ∈ R^{out×r}, A ∈ R^{r×in}

``scaling = lora_alpha / r`` (or ``lora_alpha / √r`` with ``use_rslora``, Kalajdzievski 2023).
B starts at zero, so the adapted model starts out exactly equal to the base model. Unmerged,
the layer computes ``B (A x)``: two thin products, never the (out × in) matrix ``B A``. Merged,
``W = W0 + scaling · B A`` is stored and the layer costs what the base layer costs.

Names and layout follow PEFT (``lora_A``, ``lora_B``, ``scaling``, ``base_layer``, adapters by name,
``merge()``/``unmerge()``), so what is learned here reads the same in PEFT's source.
``use_dora`` adds DoRA's magnitude vector (dora.py); the base may be a 4-bit ``Linear4bit``
(QLoRA, linear4bit.py).
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import asdict, dataclass, field

from . import backend
from . import functional as F
from .backend import xp
from .dora import DoraLinearLayer
from .linear4bit import Linear4bit
from .nn import Dropout, Linear, Module, ModuleDict
from .tensor import Tensor
from .validation import (check_bool, check_choice, check_int, check_pattern, check_real,
                         check_targets)

INIT_CHOICES = (True, False, "gaussian", "pissa")


@dataclass
class LoraConfig:
    """What to adapt and how; field names and defaults are PEFT's ``LoraConfig``."""

    r: int = 8  # rank of the update ΔW = B A
    lora_alpha: float = 8  # scaling = lora_alpha / r (lora_alpha / √r with use_rslora)
    target_modules: list[str] | str | None = None  # names, a regex, or "all-linear"; None: q_proj, v_proj
    lora_dropout: float = 0.0  # dropout on the LoRA branch's input only
    use_rslora: bool = False  # rank-stabilized scaling lora_alpha / √r
    init_lora_weights: bool | str = True  # True: Kaiming-uniform A; "gaussian"; "pissa"; False: B ≠ 0
    bias: str = "none"  # which biases train: "none", "all", or "lora_only" (of adapted layers)
    rank_pattern: dict = field(default_factory=dict)  # regex of module name -> its own r
    alpha_pattern: dict = field(default_factory=dict)  # regex of module name -> its own lora_alpha
    use_dora: bool = False  # DoRA: also train a magnitude per output row (dora.py)

    def __post_init__(self):
        """Check every field (type and range) before the config is used; all or nothing."""
        where = "LoraConfig."
        self.r = check_int(where + "r", self.r, low=1)
        self.lora_alpha = check_real(where + "lora_alpha", self.lora_alpha, low=0, low_open=True)
        self.target_modules = check_targets(where + "target_modules", self.target_modules)
        self.lora_dropout = check_real(where + "lora_dropout", self.lora_dropout, 0.0, 1.0,
                                       high_open=True)
        self.use_rslora = check_bool(where + "use_rslora", self.use_rslora)
        self.use_dora = check_bool(where + "use_dora", self.use_dora)
        self.init_lora_weights = check_choice(where + "init_lora_weights",
                                              self.init_lora_weights, INIT_CHOICES)
        self.bias = check_choice(where + "bias", self.bias, ("none", "all", "lora_only"))
        self.rank_pattern = check_pattern(where + "rank_pattern", self.rank_pattern,
                                          lambda at, v: check_int(at, v, low=1))
        self.alpha_pattern = check_pattern(where + "alpha_pattern", self.alpha_pattern,
                                           lambda at, v: check_real(at, v, low=0, low_open=True))

    def rank_for(self, module_name: str) -> int:
        return _pattern_value(self.rank_pattern, module_name, self.r)

    def alpha_for(self, module_name: str) -> float:
        return _pattern_value(self.alpha_pattern, module_name, self.lora_alpha)

    def to_dict(self) -> dict:
        return asdict(self)


def _pattern_value(patterns: dict, name: str, default):
    """PEFT's rule (``get_pattern_key``): the first key that, as a whole regex, matches the end
    of the module's name after a dot (or all of it). The group keeps an alternation whole:
    ``"q_proj|v_proj"`` matches both, not ``q_proj`` anywhere or a name ending in ``v_proj``."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def lora_scaling(r: int, lora_alpha: float, use_rslora: bool = False) -> float:
    """alpha / r (the paper), or alpha / √r (rsLoRA: keeps the update's size stable in r)."""
    return lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r


def pissa_factors(W0, r: int, scaling: float):
    """PiSSA (Meng et al. 2024): A, B from W0's top-r singular triplets, and the residual base.

    W0 = U diag(S) Vh; A = √(S_r/s) Vh_r, B = U_r √(S_r/s), so s·B A is W0's best rank-r part
    and W0 − s·B A (what the frozen base keeps) is the rest.
    """
    U, S, Vh = xp.linalg.svd(W0, full_matrices=False)
    root = xp.sqrt(S[:r] / scaling)  # split √(S/scaling) between B and A
    A = root[:, None] * Vh[:r, :]  # (r, in)
    B = U[:, :r] * root[None, :]  # (out, r)
    return A, B, W0 - scaling * xp.matmul(B, A)


class LoraLinear(Module):
    """A frozen ``base_layer`` plus named low-rank adapters: y = base(x) + Σ scaling · B(A(x))."""

    def __init__(self, base_layer: Linear, adapter_name: str | None = "default", r: int = 8,
                 lora_alpha: float = 8, lora_dropout: float = 0.0, init_lora_weights=True,
                 use_rslora: bool = False, generator: backend.Generator | None = None,
                 use_dora: bool = False):
        """Wrap ``base_layer`` and add a first, active adapter (``adapter_name=None``: none yet)."""
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.lora_A, self.lora_B, self.lora_dropout = ModuleDict(), ModuleDict(), ModuleDict()
        self.lora_magnitude_vector = ModuleDict()  # DoRA adapters only: m per output row
        self._dora_norms: dict = {}  # ‖W + ΔW‖_row used by merge(), which unmerge() divides back
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disable_adapters = False
        if adapter_name is not None:
            self.update_layer(adapter_name, r, lora_alpha, lora_dropout, init_lora_weights,
                              use_rslora, generator, use_dora)
            self.active_adapters = [adapter_name]

    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                     init_lora_weights=True, use_rslora: bool = False,
                     generator: backend.Generator | None = None, use_dora: bool = False) -> None:
        """Add adapter ``adapter_name``: A (r, in), B (out, r), initialized as asked.

        True: A ~ U(−1/√in, 1/√in) (Kaiming-uniform, a = √5, as loralib and PEFT), B = 0.
        "gaussian": A ~ N(0, 1/r²) (the paper's Gaussian; PEFT's std), B = 0.
        "pissa": A, B from the top-r singular triplets of W0; W0 keeps only the residual.
        False: A and B both random (ΔW ≠ 0 from the start; for debugging and tests).
        ``use_dora``: a magnitude m = ‖W0 + s·B A‖_row too, so the layer still starts unchanged.
        """
        if adapter_name in self.lora_A:
            raise ValueError(f"adapter {adapter_name!r} already exists in this layer")
        LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,  # same checks
                   init_lora_weights=init_lora_weights)
        if init_lora_weights == "pissa" and r > min(self.in_features, self.out_features):
            raise ValueError(f"init_lora_weights='pissa' needs r <= min(in, out)="
                             f"{min(self.in_features, self.out_features)}, got r={r}")
        gen = generator or backend.default_generator()
        dtype = backend.dtype_name(self.base_layer.weight.dtype)
        A = Linear(self.in_features, r, bias=False, generator=gen, dtype=dtype)  # U(±1/√in)
        B = Linear(r, self.out_features, bias=False, generator=gen, dtype=dtype)  # U(±1/√r)
        scaling = lora_scaling(r, lora_alpha, use_rslora)
        if init_lora_weights == "gaussian":
            A.weight.data = gen.normal(A.weight.shape, std=1.0 / r, dtype=dtype)
        if init_lora_weights in (True, "gaussian"):
            B.weight.data = xp.zeros_like(B.weight.data)
        elif init_lora_weights == "pissa":
            A.weight.data, B.weight.data, self.base_layer.weight.data = pissa_factors(
                self.base_layer.weight.data, r, scaling)
        self.lora_A[adapter_name], self.lora_B[adapter_name] = A, B
        if use_dora:
            magnitude = DoraLinearLayer(self.out_features, dtype)
            magnitude.update_layer(self.base_layer, A, B, scaling)
            self.lora_magnitude_vector[adapter_name] = magnitude
        self.lora_dropout[adapter_name] = Dropout(lora_dropout, generator=gen)
        self.r[adapter_name], self.lora_alpha[adapter_name] = r, lora_alpha
        self.scaling[adapter_name] = scaling

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name in self.merged_adapters:
            raise ValueError(f"adapter {adapter_name!r} is merged; unmerge() before deleting it")
        for table in (self.lora_A, self.lora_B, self.lora_dropout):
            del table[adapter_name]
        if adapter_name in self.lora_magnitude_vector:
            del self.lora_magnitude_vector[adapter_name]
        for table in (self.r, self.lora_alpha, self.scaling):
            del table[adapter_name]
        self.active_adapters = [a for a in self.active_adapters if a != adapter_name]

    def forward(self, x: Tensor) -> Tensor:
        pending = [n for n in self.active_adapters if n not in self.merged_adapters]
        if len(pending) == 1 and self._fusable(pending[0]):
            # The common case as one fused op: same h, but it keeps the (N, r) bottleneck
            # instead of three (N, out) arrays (less memory, faster).
            name = pending[0]
            return F.lora_linear(x, self.base_layer.weight, self.base_layer.bias,
                                 self.lora_A[name].weight, self.lora_B[name].weight,
                                 self.scaling[name])
        result = base_out = self.base_layer(x)  # W0 x + b (W0 already includes any merged ΔW)
        if self.disable_adapters:
            if self.merged:
                raise RuntimeError("adapters are merged into the base weight; unmerge() before "
                                   "running the base model alone")
            return result
        for name in self.active_adapters:
            if name in self.merged_adapters:
                continue
            A, B = self.lora_A[name], self.lora_B[name]
            x_in = self.lora_dropout[name](x)  # x itself when dropout is off
            if name in self.lora_magnitude_vector:  # DoRA needs W0 x without the bias
                bias = self.base_layer.bias
                W0x = F.linear(x_in, self.base_layer.weight) if x_in is not x \
                    else base_out if bias is None else base_out - bias
                result = result + self.lora_magnitude_vector[name](
                    x_in, lora_A=A, lora_B=B, scaling=self.scaling[name],
                    base_layer=self.base_layer, base_result=W0x)
                continue
            # Scale the thin (N, r) intermediate rather than the (N, out) result: same ΔW x,
            # fewer multiplications.
            result = result + B(A(x_in) * self.scaling[name])
        return result

    def _fusable(self, name: str) -> bool:
        """One plain adapter on a plain Linear, dropout off: ``F.lora_linear`` gives the same h."""
        dropout = self.lora_dropout[name]
        return (not self.disable_adapters and type(self.base_layer) is Linear
                and name not in self.lora_magnitude_vector
                and (dropout.p == 0 or not dropout.training))

    def delta_weight(self, adapter_name: str | None = None):
        """ΔW = scaling · B A, an (out, in) array: the matrix the adapter adds to W0.

        For a DoRA adapter this is the low-rank part only, as in PEFT; merging also rescales
        the rows of W0 + ΔW to the magnitude m.
        """
        name = adapter_name or self.active_adapters[0]
        B, A = self.lora_B[name].weight.data, self.lora_A[name].weight.data
        return self.scaling[name] * xp.matmul(B, A)  # (out, r) @ (r, in) -> (out, in)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """W ← W0 + Σ ΔW over the active (or named) adapters: zero added inference latency.

        ``safe_merge`` computes the merged weight first and refuses non-finite values, leaving
        the layer untouched.
        """
        names = list(adapter_names or self.active_adapters)
        for name in names:
            if name not in self.lora_A:
                raise ValueError(f"no adapter named {name!r}; this layer has {list(self.lora_A)}")
            if name in self.merged_adapters:
                raise ValueError(f"adapter {name!r} is already merged; unmerge() first")
        W, norms = self.base_layer.weight.data, {}
        for name in names:
            if name in self.lora_magnitude_vector:  # DoRA: W ← m ⊙ (W + ΔW) / ‖W + ΔW‖_row
                W, norms[name] = self.lora_magnitude_vector[name].merged_weight(
                    W, self.delta_weight(name))
            else:
                W = W + self.delta_weight(name)
        if safe_merge and not bool(xp.all(xp.isfinite(W))):
            raise ValueError(f"safe_merge: merging {names} gives NaN or infinite weights; "
                             f"the layer is unchanged")
        self._warn_if_4bit("merge")
        self.base_layer.weight.data = W
        self._dora_norms.update(norms)
        self.merged_adapters.extend(names)

    def unmerge(self) -> None:
        """W ← W − Σ ΔW over the merged adapters (the inverse of merge(), to round-off)."""
        if not self.merged:
            raise ValueError("unmerge(): no adapter is merged into this layer")
        W = self.unmerged_weight()
        self._warn_if_4bit("unmerge")
        self.base_layer.weight.data = W
        self.merged_adapters = []

    def unmerged_weight(self):
        """W0: the base weight with the merged adapters taken out, last first (nothing changes)."""
        W = self.base_layer.weight.data
        for name in reversed(self.merged_adapters):
            if name in self.lora_magnitude_vector:
                W = self.lora_magnitude_vector[name].unmerged_weight(
                    W, self.delta_weight(name), self._dora_norms[name])
            else:
                W = W - self.delta_weight(name)
        return W

    def _warn_if_4bit(self, what: str) -> None:
        # A 4-bit weight can only hold 4-bit values: assigning W rounds it (linear4bit.py), as
        # PEFT does for bitsandbytes layers. Say so, rather than let exactness be assumed.
        if isinstance(self.base_layer, Linear4bit):
            warnings.warn(f"{what}() on a 4-bit base layer re-quantizes the weight: the result "
                          f"differs from the exact one by the 4-bit rounding error (up to half a "
                          f"code gap times each block's absmax), and unmerge() cannot restore the "
                          f"original codes exactly", UserWarning, stacklevel=3)

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: r={self.r[n]}, scaling={self.scaling[n]:g}"
                         + (", dora" if n in self.lora_magnitude_vector else "") for n in self.r)
