"""Modules and layers, named and laid out as in ``torch.nn``.

A :class:`Module` finds its parameters and sub-modules from its attributes, so
``named_parameters()`` yields dotted paths such as ``layers.0.attn.q_proj.weight``: the names
LoRA's ``target_modules`` match and that adapter files store.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Iterator

from . import backend
from . import functional as F
from .backend import xp
from .tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module registers as one of its weights; requires grad by default."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True, dtype=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)


class Module:
    """Base class: set Parameters and Modules as attributes; define ``forward``."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               f"before assigning {name!r}")
        if isinstance(value, Parameter):  # re-assigning a name keeps its place in the order
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- the tree ----------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        yield from self._modules.items()

    def children(self) -> Iterator["Module"]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "", recurse: bool = True
                         ) -> Iterator[tuple[str, Parameter]]:
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        seen = set()
        for path, module in modules:
            for name, param in module._parameters.items():
                if id(param) not in seen:  # a shared weight is listed once
                    seen.add(id(param))
                    yield (f"{path}.{name}" if path else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def get_submodule(self, target: str) -> "Module":
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} "
                                     f"(looking up {target!r})")
            module = module._modules[part]
        return module

    def apply(self, fn) -> "Module":
        for module in self.modules():
            fn(module)
        return self

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, object]":
        """Parameter arrays by dotted name (references, as PyTorch's ``state_dict``)."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy arrays into the parameters; every key, shape, dtype and value is checked first.

        Nothing is changed unless everything fits (a failed load leaves the model as it was).
        """
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        staged = []
        for name, value in state_dict.items():
            if name not in own:
                continue
            param = own[name]
            value = value.data if isinstance(value, Tensor) else value
            if tuple(value.shape) != param.shape:
                raise ValueError(f"load_state_dict: {name!r} has shape {tuple(value.shape)} in the "
                                 f"state dict but {param.shape} in the model")
            if backend.dtype_name(value.dtype) != backend.dtype_name(param.dtype):  # any namespace
                raise TypeError(f"load_state_dict: {name!r} is {value.dtype} in the state dict "
                                f"but {param.dtype} in the model")
            value = backend.from_numpy(value) if type(value).__module__ == "numpy" else value
            if not bool(xp.all(xp.isfinite(value))):
                raise ValueError(f"load_state_dict: {name!r} contains NaN or infinite values")
            staged.append((param, value))
        for param, value in staged:
            param.data = xp.asarray(value, copy=True)

    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.grad = None

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for param in self.parameters():
            param.requires_grad = requires_grad
        return self

    def to(self, dtype: str) -> "Module":
        """Cast every parameter in place, e.g. ``model.to("float64")`` for gradient checks."""
        for param in self.parameters():
            param.data = xp.astype(param.data, backend.dtype(dtype))
            param.grad = None
        return self

    def double(self) -> "Module":
        return self.to("float64")

    def float(self) -> "Module":
        return self.to("float32")

    def num_parameters(self, only_trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    # -- printing, as PyTorch's module tree ----------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ")
                 for name, child in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ")" if not lines else head + "\n  " + "\n  ".join(lines) + "\n)"


class Linear(Module):
    """y = x Wᵀ + b; ``weight`` (out_features, in_features), PyTorch's default init:
    W, b ~ U(−1/√in_features, 1/√in_features) (Kaiming-uniform with a = √5)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 generator: backend.Generator | None = None, dtype: str | None = None):
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear needs positive sizes, got ({in_features}, {out_features})")
        self.in_features, self.out_features = in_features, out_features
        gen = generator or backend.default_generator()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(gen.uniform((out_features, in_features), -bound, bound, dtype))
        self.bias = Parameter(gen.uniform((out_features,), -bound, bound, dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table ``weight`` (num_embeddings, embedding_dim), initialized N(0, 1)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *,
                 generator: backend.Generator | None = None, dtype: str | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        gen = generator or backend.default_generator()
        self.weight = Parameter(gen.normal((num_embeddings, embedding_dim), dtype=dtype))

    def forward(self, indices) -> Tensor:
        return F.embedding(indices, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalize the last axis, then scale by ``weight`` (ones) and shift by ``bias`` (zeros)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5, bias: bool = True, *,
                 dtype: str | None = None):
        super().__init__()
        self.normalized_shape, self.eps = normalized_shape, eps
        self.weight = Parameter(xp.ones((normalized_shape,), dtype=backend.dtype(dtype)))
        self.bias = Parameter(xp.zeros((normalized_shape,), dtype=backend.dtype(dtype))) \
            if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"({self.normalized_shape},), eps={self.eps}"


class Dropout(Module):
    """Dropout with probability ``p`` while training; the identity in ``eval()`` mode."""

    def __init__(self, p: float = 0.5, *, generator: backend.Generator | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p, self.generator = p, generator

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ModuleList(Module):
    """A list of modules registered under "0", "1", ... (``layers.0.attn.q_proj``)."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> "ModuleList":
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleDict(Module):
    """Modules by name (LoRA keeps one ``lora_A`` per adapter: ``lora_A["default"]``)."""

    def __init__(self, modules: dict | None = None):
        super().__init__()
        for name, module in (modules or {}).items():
            self[name] = module

    def __setitem__(self, name: str, module: Module) -> None:
        setattr(self, name, module)

    def __getitem__(self, name: str) -> Module:
        return self._modules[name]

    def __delitem__(self, name: str) -> None:
        delattr(self, name)

    def __contains__(self, name: str) -> bool:
        return name in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()


class Sequential(ModuleList):
    """Modules applied one after another."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def forward(self, x):
        for module in self:
            x = module(x)
        return x
