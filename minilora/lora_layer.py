"""The LoRA update (Hu et al. 2021, Section 4.1) as a layer that wraps a frozen ``Linear``.

    h = W0 x + ΔW x = W0 x + scaling · B A x,   W0 ∈ R^{out×in}, B ∈ R^{out×r}, A ∈ R^{r×in}

``scaling = lora_alpha / r`` (or ``lora_alpha / √r`` with ``use_rslora``, Kalajdzievski 2023).
B starts at zero, so the adapted model starts out exactly equal to the base model. Unmerged,
the layer computes ``B (A x)``: two thin products, never the (out × in) matrix ``B A``. Merged,
``W = W0 + scaling · B A`` is stored and the layer costs what the base layer costs.

Names and layout follow PEFT (``lora_A``, ``lora_B``, ``scaling``, ``base_layer``, adapters by name,
``merge()``/``unmerge()``), so what is learned here reads the same in PEFT's source.
Variants extend the layer without the layer knowing them, as in PEFT's
``tuners/lora/variants.py``: a :class:`LoraVariant` is called through four hooks (init,
forward, merge, unmerge), and registers itself in :data:`VARIANTS` under the flag that asks for
it (``use_dora``: minilora/variants/dora.py); an init computed from W0 (PiSSA's) registers
in :data:`INITS`. The base may be any Linear, a 4-bit one included
(minilora/variants/linear4bit.py keeps its own rules).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from . import backend
from . import functional as F
from .backend import kernels, xp
from .nn import Dropout, Linear, Module, ModuleDict
from .tensor import Tensor
from .validation import (check_bool, check_choice, check_int, check_pattern, check_real,
                         check_targets)

INIT_CHOICES = (True, False, "gaussian")  # and the names in INITS
INITS: dict = {}  # init_lora_weights name -> f(W0, r, scaling) giving A, B and the new W0; each
# init's module adds itself ("pissa": minilora/variants/pissa.py)


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
                                              self.init_lora_weights, (*INIT_CHOICES, *INITS))
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


def matches_target(path: str, targets) -> bool:
    """Whether the module at ``path`` is one that ``targets`` names, by PEFT's rule: a list of
    names selects a path equal to a name or ending with ``.name``; a single string is a regex
    over the whole path; ``"all-linear"`` selects all but the output layer ``lm_head``.
    Injection, accounting and quantization all select modules with this one function.
    """
    if targets == "all-linear":
        return path.split(".")[-1] != "lm_head"
    if isinstance(targets, str):
        return re.fullmatch(targets, path) is not None
    return any(path == t or path.endswith("." + t) for t in targets)


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


def lora_scaling(r: int, lora_alpha: float, use_rslora: bool = False) -> float:
    """alpha / r (the paper), or alpha / √r (rsLoRA: keeps the update's size stable in r)."""
    return lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r


class LoraVariant:
    """The hooks through which a variant of LoRA replaces the plain adapter's steps, one
    adapter at a time (PEFT's ``LoraVariant``). ``layer`` is the :class:`LoraLinear`, ``name``
    the adapter's name."""

    def init(self, layer: "LoraLinear", name: str) -> None:
        """Called once the adapter's A and B exist."""
        raise NotImplementedError

    def forward(self, layer: "LoraLinear", name: str, x: Tensor, result: Tensor) -> Tensor:
        """``result`` (the layer's output so far) plus this adapter's part, for input x."""
        raise NotImplementedError

    def merged_weight(self, layer: "LoraLinear", name: str, W):
        """The weight W with this adapter merged into it."""
        raise NotImplementedError

    def unmerged_weight(self, layer: "LoraLinear", name: str, W):
        """The inverse of :meth:`merged_weight`."""
        raise NotImplementedError


VARIANTS: dict[str, type[LoraVariant]] = {}  # flag (``use_dora``) -> the variant it asks for;
# each variant's module adds itself (``import minilora`` imports them all)


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
        self.lora_magnitude_vector = ModuleDict()  # a variant's trainable vectors (DoRA's m)
        self.lora_variant: dict[str, LoraVariant] = {}  # adapters of a variant, by name
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
        "pissa": A, B from the top-r singular triplets of W0; W0 keeps only the residual
        (an init in :data:`INITS`, minilora/variants/pissa.py).
        False: A and B both random (ΔW ≠ 0 from the start; for debugging and tests).
        ``use_dora``: the DoRA variant (:data:`VARIANTS`) adds its magnitude vector.
        """
        if adapter_name in self.lora_A:
            raise ValueError(f"adapter {adapter_name!r} already exists in this layer")
        LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,  # same checks
                   init_lora_weights=init_lora_weights)
        scaling = lora_scaling(r, lora_alpha, use_rslora)
        init = INITS.get(init_lora_weights)  # an init computed from W0 itself (PiSSA)
        factors = init(self.base_layer.weight.data, r, scaling) if init else None  # may refuse r
        gen = generator or backend.default_generator()
        dtype = backend.dtype_name(self.base_layer.weight.dtype)
        A = Linear(self.in_features, r, bias=False, generator=gen, dtype=dtype)  # U(±1/√in)
        B = Linear(r, self.out_features, bias=False, generator=gen, dtype=dtype)  # U(±1/√r)
        if init_lora_weights == "gaussian":
            A.weight.data = gen.normal(A.weight.shape, std=1.0 / r, dtype=dtype)
        if init_lora_weights in (True, "gaussian"):
            B.weight.data = xp.zeros_like(B.weight.data)
        elif factors is not None:
            A.weight.data, B.weight.data, self.base_layer.weight.data = factors
        self.lora_A[adapter_name], self.lora_B[adapter_name] = A, B
        self.lora_dropout[adapter_name] = Dropout(lora_dropout, generator=gen)
        self.r[adapter_name], self.lora_alpha[adapter_name] = r, lora_alpha
        self.scaling[adapter_name] = scaling
        if use_dora:
            self.lora_variant[adapter_name] = VARIANTS["use_dora"]()
            self.lora_variant[adapter_name].init(self, adapter_name)

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name in self.merged_adapters:
            raise ValueError(f"adapter {adapter_name!r} is merged; unmerge() before deleting it")
        for table in (self.lora_A, self.lora_B, self.lora_dropout):
            del table[adapter_name]
        if adapter_name in self.lora_magnitude_vector:
            del self.lora_magnitude_vector[adapter_name]
        for table in (self.r, self.lora_alpha, self.scaling):
            del table[adapter_name]
        self.lora_variant.pop(adapter_name, None)
        self.active_adapters = [a for a in self.active_adapters if a != adapter_name]

    def forward(self, x: Tensor) -> Tensor:
        """h = base_layer(x) + Σ lora_B(lora_A(dropout(x)) · scaling) over the active adapters.

        The thin (N, r) intermediate is scaled rather than the (N, out) result: the same ΔW x.
        """
        if "lora_linear" in kernels and (name := self._fusable()):  # the fast path: one op
            return F.lora_linear(x, self.base_layer.weight, self.base_layer.bias,
                                 self.lora_A[name].weight, self.lora_B[name].weight,
                                 self.scaling[name])
        result = self.base_layer(x)  # W0 x + b (W0 already includes any merged ΔW)
        if self.disable_adapters:
            if self.merged:
                raise RuntimeError("adapters are merged into the base weight; unmerge() before "
                                   "running the base model alone")
            return result
        for name in self.active_adapters:
            if name in self.merged_adapters:
                continue
            if name in self.lora_variant:  # DoRA, say: the variant adds its own part
                result = self.lora_variant[name].forward(self, name, x, result)
                continue
            x_in = self.lora_dropout[name](x)  # x itself when dropout is off
            result = result + self.lora_B[name](self.lora_A[name](x_in) * self.scaling[name])
        return result

    def _fusable(self) -> str | None:
        """The one pending adapter if it is plain, on a plain Linear, dropout off: then
        ``F.lora_linear`` computes the same h."""
        pending = [n for n in self.active_adapters if n not in self.merged_adapters]
        if self.disable_adapters or len(pending) != 1 or type(self.base_layer) is not Linear:
            return None
        dropout = self.lora_dropout[pending[0]]
        plain = pending[0] not in self.lora_variant
        return pending[0] if plain and (dropout.p == 0 or not dropout.training) else None

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
        W = self.base_layer.weight.data
        for name in names:
            W = self.lora_variant[name].merged_weight(self, name, W) if name in self.lora_variant \
                else W + self.delta_weight(name)
        if safe_merge and not bool(xp.all(xp.isfinite(W))):
            raise ValueError(f"safe_merge: merging {names} gives NaN or infinite weights; "
                             f"the layer is unchanged")
        self.base_layer.weight.data = W
        self.merged_adapters.extend(names)

    def unmerge(self) -> None:
        """W ← W − Σ ΔW over the merged adapters (the inverse of merge(), to round-off)."""
        if not self.merged:
            raise ValueError("unmerge(): no adapter is merged into this layer")
        self.base_layer.weight.data = self.unmerged_weight()
        self.merged_adapters = []

    def unmerged_weight(self):
        """W0: the base weight with the merged adapters taken out, last first (nothing changes)."""
        W = self.base_layer.weight.data
        for name in reversed(self.merged_adapters):
            W = self.lora_variant[name].unmerged_weight(self, name, W) \
                if name in self.lora_variant else W - self.delta_weight(name)
        return W

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: r={self.r[n]}, scaling={self.scaling[n]:g}"
                         + (f", {type(self.lora_variant[n]).__name__}" if n in self.lora_variant else "") for n in self.r)
