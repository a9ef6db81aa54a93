"""QLoRA's base model: Linear layers whose frozen weights are stored in 4 bits.

    model = quantize_model(GPT(cfg), BitsAndBytesConfig(load_in_4bit=True,
                           bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True))
    lm = get_lora_model(model, LoraConfig(r=8, target_modules="all-linear"))   # QLoRA

transformers' ``from_pretrained(..., quantization_config=...)`` does the first line while it
loads; PEFT's ``get_peft_model`` the second. A :class:`Linear4bit` *is a* Linear (as in
bitsandbytes), so LoRA finds and wraps it like any other; only its weight differs.

Its weight, a :class:`Params4bit`, holds packed codes and block constants, never a
full-precision W. Reading ``.data`` dequantizes (``quantize.dequantize_4bit``); ``F.linear``
reads it once in forward (y = x Wᵀ) and once more in backward (dx = g W), so no float copy of
W outlives the operation: that is QLoRA's memory saving. Assigning ``.data`` quantizes what is
assigned, as assigning a float64 array to a float32 one rounds it: a merge into a 4-bit base
therefore re-rounds W0 + ΔW, and says so with a warning.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from .. import backend
from .. import functional as F
from ..backend import xp
from ..lora_layer import LoraLinear, matches_target
from ..nn import Linear, Module, Parameter
from .quantize import QUANT_TYPES, bits_per_parameter, dequantize_4bit, quantize_4bit, \
    storage_bytes
from ..tensor import Tensor


class Params4bit(Parameter):
    """A frozen weight stored in 4 bits (bitsandbytes' name): ``packed`` codes + ``quant_state``.

    ``.data`` is the dequantized weight (bitsandbytes keeps the packed bytes there instead);
    ``.shape`` and ``.dtype`` are the full-precision weight's. It never requires grad.
    """

    __slots__ = ("packed", "quant_state", "blocksize", "quant_type", "compress_statistics")

    def __init__(self, data, blocksize: int = 64, quant_type: str = "nf4",
                 compress_statistics: bool = True):
        if quant_type not in QUANT_TYPES:
            raise ValueError(f"unknown quant_type {quant_type!r}; choose from {QUANT_TYPES}")
        self.blocksize, self.quant_type = blocksize, quant_type
        self.compress_statistics = compress_statistics
        self.packed = self.quant_state = None
        self.grad, self._parents, self._backward, self._op = None, (), None, ""
        self.data = data.data if isinstance(data, Tensor) else data

    @property
    def data(self):
        return dequantize_4bit(self.packed, self.quant_state)

    @data.setter
    def data(self, W) -> None:
        if self.quant_state is not None:
            if tuple(W.shape) != self.quant_state.shape:
                raise ValueError(f"Params4bit: cannot assign shape {tuple(W.shape)} to a weight "
                                 f"of shape {self.quant_state.shape}")
            if bool(xp.all(W == xp.astype(self.data, W.dtype))):
                # Its own values back (Module.to casts this way): keep the codes, change only
                # the compute dtype, so a cast never re-rounds the constants.
                self.quant_state.dtype = W.dtype
                return
            # A 4-bit weight can only hold 4-bit values (as PEFT's bitsandbytes layers): say
            # so, rather than let exactness be assumed after a merge or unmerge
            warnings.warn("assigning to a 4-bit weight (a merge() or unmerge() into a 4-bit "
                          "base layer, say) re-quantizes it: the result differs from the exact "
                          "one by the 4-bit rounding error (up to half a code gap times each "
                          "block's absmax), and unmerge() cannot restore the original codes "
                          "exactly", UserWarning, stacklevel=4)
        self.packed, self.quant_state = quantize_4bit(W, self.blocksize, self.compress_statistics,
                                                      self.quant_type)

    @property
    def requires_grad(self) -> bool:
        return False

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value:
            raise ValueError("a 4-bit weight is frozen: QLoRA trains adapters on top of it "
                             "(get_lora_model), never the quantized weight itself")

    shape = property(lambda self: self.quant_state.shape)
    dtype = property(lambda self: self.quant_state.dtype)
    ndim = property(lambda self: len(self.quant_state.shape))

    def storage_bytes(self) -> int:
        return storage_bytes(self.packed, self.quant_state)

    def bits_per_parameter(self) -> float:
        return bits_per_parameter(self.packed, self.quant_state)

    def __repr__(self) -> str:
        dq = ", double quant" if self.quant_state.nested else ""
        return (f"Params4bit(shape={self.shape}, {self.quant_type}{dq}, "
                f"{self.bits_per_parameter():.3f} bits/param)")


class Linear4bit(Linear):
    """y = x dequant(W)ᵀ + b with W frozen in 4 bits; the bias stays in full precision.

    Build one from a trained layer with :meth:`from_linear` (what ``quantize_model`` does).
    Defaults are bitsandbytes': ``quant_type="fp4"``, ``compress_statistics=True``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 compress_statistics: bool = True, quant_type: str = "fp4", blocksize: int = 64,
                 *, generator: backend.Generator | None = None, dtype: str | None = None):
        super().__init__(in_features, out_features, bias, generator=generator, dtype=dtype)
        self.weight = Params4bit(self.weight.data, blocksize, quant_type, compress_statistics)

    @classmethod
    def from_linear(cls, linear: Linear, quant_type: str = "nf4",
                    compress_statistics: bool = True, blocksize: int = 64) -> "Linear4bit":
        """A 4-bit copy of ``linear``: its weight quantized, its bias shared."""
        layer = cls.__new__(cls)
        Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight = Params4bit(linear.weight.data, blocksize, quant_type, compress_statistics)
        layer.bias = linear.bias
        return layer

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)  # reading weight.data dequantizes

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.weight!r}"


@dataclass
class BitsAndBytesConfig:
    """How ``quantize_model`` stores a model's Linears; field names are transformers'."""

    load_in_4bit: bool = False  # store the Linear weights in 4 bits (QLoRA's base model)
    bnb_4bit_quant_type: str = "fp4"  # "nf4" (QLoRA), "fp4" (E2M1), "int4" (uniform; minilora only)
    bnb_4bit_use_double_quant: bool = False  # quantize the absmax constants too (8 bits, block 256)
    bnb_4bit_blocksize: int = 64  # elements per absmax block (bitsandbytes' argument)
    llm_int8_skip_modules: list[str] = field(default_factory=lambda: ["lm_head"])  # kept in full precision

    def __post_init__(self):
        if self.bnb_4bit_quant_type not in QUANT_TYPES:
            raise ValueError(f"BitsAndBytesConfig: bnb_4bit_quant_type must be one of "
                             f"{QUANT_TYPES}, got {self.bnb_4bit_quant_type!r}")
        if self.bnb_4bit_blocksize <= 0 or self.bnb_4bit_blocksize % 2:
            raise ValueError(f"BitsAndBytesConfig: bnb_4bit_blocksize must be a positive even "
                             f"number, got {self.bnb_4bit_blocksize}")


def quantize_model(model: Module, config: BitsAndBytesConfig) -> Module:
    """Replace every Linear (except ``llm_int8_skip_modules``) by a Linear4bit, in place.

    Quantize the plain base model, then add LoRA: a model that already carries adapters is
    refused (their merged or residual weights would be rounded without notice).
    """
    if not config.load_in_4bit:
        raise ValueError("quantize_model: only 4-bit storage is implemented; pass "
                         "BitsAndBytesConfig(load_in_4bit=True, ...)")
    if any(isinstance(m, LoraLinear) for m in model.modules()):
        raise ValueError("quantize_model: the model already has LoRA layers; quantize the base "
                         "model first, then call get_lora_model (as QLoRA does)")
    targets = [path for path, m in model.named_modules()
               if path and isinstance(m, Linear) and not isinstance(m, Linear4bit)
               and not matches_target(path, config.llm_int8_skip_modules)]
    for path in targets:
        head, _, leaf = path.rpartition(".")
        parent = model.get_submodule(head)
        setattr(parent, leaf, Linear4bit.from_linear(
            getattr(parent, leaf), config.bnb_4bit_quant_type,
            config.bnb_4bit_use_double_quant, config.bnb_4bit_blocksize))
    return model


def weight_bytes(model: Module) -> int:
    """Bytes of the model's weights as stored: a 4-bit weight counts its codes and constants."""
    total = 0
    for p in model.parameters():
        if isinstance(p, Params4bit):
            total += p.storage_bytes()
        else:
            info = xp.finfo(p.dtype) if xp.isdtype(p.dtype, "real floating") else xp.iinfo(p.dtype)
            total += p.numel() * info.bits // 8
    return total
