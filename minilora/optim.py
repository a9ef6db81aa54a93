"""Optimizers (SGD, AdamW), with PyTorch's arguments and semantics (schedules: lr_scheduler.py).

An optimizer holds only the parameters that require grad, so a LoRA model's optimizer state
is the size of its adapters, not of the base model: ``state_bytes()`` measures that.
State is allocated lazily, at a parameter's first update.
"""
from __future__ import annotations

import math

from .backend import kernels, xp
from .lr_scheduler import (LambdaLR, get_cosine_schedule_with_warmup,  # noqa: F401
                           get_linear_schedule_with_warmup)  # re-exported: import them from here
from .tensor import no_grad


class Optimizer:
    """Parameter groups (``[{"params": [...], "lr": ...}, ...]``) and per-parameter state."""

    def __init__(self, params, defaults: dict):
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        for group in groups:
            group = {**defaults, **group}
            group["params"] = [p for p in group["params"] if p.requires_grad]
            group.setdefault("initial_lr", group["lr"])
            self.param_groups.append(group)
        if not any(g["params"] for g in self.param_groups):
            raise ValueError(f"{type(self).__name__} got no parameter that requires grad "
                             f"(is every weight frozen?)")
        self.state: dict[int, dict] = {}

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def _trainable(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield group, p, self.state.setdefault(id(p), {})

    def state_bytes(self) -> int:
        """Bytes held in optimizer state (momentum buffers, Adam's moments)."""
        return sum(a.size * a.dtype.itemsize for s in self.state.values()
                   for a in s.values() if hasattr(a, "dtype"))

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """p ← p − lr · (g + wd · p), with momentum buffer b ← μ b + g when ``momentum`` > 0."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum, weight_decay must be >= 0, got "
                             f"{lr}, {momentum}, {weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def step(self) -> None:
        with no_grad():
            for group, p, state in self._trainable():
                g = p.grad
                if group["weight_decay"]:
                    g = g + group["weight_decay"] * p.data
                if group["momentum"]:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = xp.asarray(g, copy=True)
                    else:
                        state["momentum_buffer"] *= group["momentum"]
                        state["momentum_buffer"] += g
                    g = state["momentum_buffer"]
                p.data -= group["lr"] * g


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``:

        p ← p (1 − lr·wd);  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²
        p ← p − lr · (m / (1−β1ᵗ)) / (√(v / (1−β2ᵗ)) + eps)
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"AdamW: invalid lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def step(self) -> None:
        with no_grad():
            trainable = list(self._trainable())
            if "adamw_step" in kernels:  # the fast path shares the parameters among threads
                return kernels["adamw_step"](self._update, trainable)
            for item in trainable:
                self._update(item)

    @staticmethod
    def _update(item) -> None:
        group, p, state = item
        (b1, b2), lr, g = group["betas"], group["lr"], p.grad
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if group["weight_decay"]:
            p.data *= 1 - lr * group["weight_decay"]
        m *= b1  # m ← β1 m + (1−β1) g, in place: the moments are the optimizer's memory
        m += (1 - b1) * g
        v *= b2  # v ← β2 v + (1−β2) g²
        v += (1 - b2) * (g * g)
        denom = xp.sqrt(v) * (1 / math.sqrt(1 - b2 ** t)) + group["eps"]  # √v̂ + eps
        p.data -= m / denom * (lr / (1 - b1 ** t))  # lr · m̂ / (√v̂ + eps)
