"""Answers to lesson 03's exercises, in the form the checks grade (`lessons/checks/test_03.py`).

`lessons/solutions/03_lora_update.py` runs them and explains what they show.
"""
import math

import numpy as np

from minilora import Tensor
from minilora.lora import LoraLinear
from minilora.nn import Linear, Module, Parameter
from minilora.optim import SGD


class MyLoraLinear(Module):
    """h = W0 x + b + s · B A x with s = alpha / r, around a frozen ``base_layer`` (Section 4.1)."""

    def __init__(self, base_layer: Linear, r: int, lora_alpha: float, seed: int = 0):
        super().__init__()
        self.base_layer = base_layer
        self.r, self.lora_alpha = r, lora_alpha
        k, d = base_layer.in_features, base_layer.out_features
        dtype = str(base_layer.weight.numpy().dtype)
        self.scaling = lora_alpha / r
        bound = 1 / math.sqrt(k)  # Kaiming-uniform, as a Linear(k, r) draws its weight
        self.A = Parameter(np.random.default_rng(seed).uniform(-bound, bound, (r, k)), dtype=dtype)
        self.B = Parameter(np.zeros((d, r)), dtype=dtype)  # B = 0: the layer starts as W0
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        if self.merged:  # W0 + s B A is in the base weight already
            return self.base_layer(x)
        return self.base_layer(x) + ((x @ self.A.T) @ self.B.T) * self.scaling  # (N, k) -> (N, r) -> (N, d)

    def delta_weight(self) -> np.ndarray:
        return self.scaling * (self.B.numpy() @ self.A.numpy())  # (d, r) @ (r, k) -> (d, k)

    def merge(self) -> None:
        if self.merged:
            raise ValueError("MyLoraLinear.merge(): already merged; unmerge() first")
        self.base_layer.weight.data = self.base_layer.weight.data + self.delta_weight()
        self.merged = True

    def unmerge(self) -> None:
        if not self.merged:
            raise ValueError("MyLoraLinear.unmerge(): nothing is merged")
        self.base_layer.weight.data = self.base_layer.weight.data - self.delta_weight()
        self.merged = False


def first_step(init_lora_weights, d: int = 12, k: int = 20, r: int = 4, seed: int = 0):
    """Exercise 1: (max |layer(x) − base(x)|, max |dL/dA|) of a fresh LoraLinear at step 1."""
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((7, k)), dtype="float32")  # (N, k)
    U = rng.standard_normal((7, d)).astype(np.float32)  # (N, d): dL/dh
    base = Linear(k, d)
    base.requires_grad_(False)
    reference = base(x).numpy()  # before wrapping: PiSSA rewrites base.weight
    layer = LoraLinear(base, r=r, lora_alpha=8, init_lora_weights=init_lora_weights)
    out = layer(x)
    out.backward(U)
    return (float(np.abs(out.numpy() - reference).max()),
            float(np.abs(layer.lora_A["default"].weight.grad).max()))


def fit_target(r: int, use_rslora: bool, steps: int = 50, seed: int = 0):
    """Exercise 2: (‖ΔW‖_F, loss) after `steps` of SGD(lr=0.5) fitting Y = X Tᵀ from W0 = 0."""
    rng = np.random.default_rng(seed)
    k = d = 64
    X = Tensor(rng.standard_normal((256, k)), dtype="float32")  # (N, k)
    T = (rng.standard_normal((d, k)) / np.sqrt(k)).astype(np.float32)  # (d, k): the target map
    Y = X.numpy() @ T.T  # (N, d)
    base = Linear(k, d, bias=False)
    base.weight.data[:] = 0  # W0 = 0: the adapter must learn all of T
    base.requires_grad_(False)
    layer = LoraLinear(base, r=r, lora_alpha=8, use_rslora=use_rslora)
    optimizer = SGD(layer.parameters(), lr=0.5)
    for _ in range(steps):
        loss = ((layer(X) - Y) ** 2.0).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(np.linalg.norm(layer.delta_weight())), loss.item()


def cat_factors(A1, B1, s1, A2, B2, s2):
    """Exercise 3: one adapter (A, B), scaling 1, with B A = s1 B1 A1 + s2 B2 A2 (PEFT's "cat")."""
    A = np.concatenate([s1 * A1, s2 * A2], axis=0)  # (r1 + r2, k): the rows stacked
    B = np.concatenate([B1, B2], axis=1)  # (d, r1 + r2): the columns side by side
    return A, B
