"""Lesson 03's exercises: write your answers here, then grade them.

    pytest lessons/checks/test_03.py        # all of lesson 03's checks
    pytest lessons/checks/test_03.py -k merge   # one of them

Each function says what to compute; replace its ``raise NotImplementedError`` with your code.
Worked answers are in ``lessons/solutions/ex03.py`` (try first).
"""
import math  # noqa: F401 (you will need these)

import numpy as np  # noqa: F401

from minilora import Tensor  # noqa: F401
from minilora.lora import LoraLinear  # noqa: F401
from minilora.nn import Linear, Module, Parameter  # noqa: F401
from minilora.optim import SGD  # noqa: F401


class MyLoraLinear(Module):
    """Your LoRA layer: h = W0 x + b + s · B A x with s = alpha / r (Section 4.1, lesson 03 §1).

    - ``self.base_layer`` is the frozen ``Linear`` (W0 of shape (d, k), bias b of shape (d,));
    - ``self.scaling``: s = lora_alpha / r;
    - ``self.A``: a ``Parameter`` (r, k), drawn uniformly from [−1/√k, 1/√k] with
      ``np.random.default_rng(seed)`` (what a ``Linear(k, r)`` draws);
    - ``self.B``: a ``Parameter`` (d, r), all zeros, so the layer starts exactly as the base;
    - both in the base weight's dtype (``str(base_layer.weight.numpy().dtype)``);
    - ``self.merged``: False until ``merge()``.
    """

    def __init__(self, base_layer: Linear, r: int, lora_alpha: float, seed: int = 0):
        super().__init__()
        self.base_layer = base_layer
        self.r, self.lora_alpha = r, lora_alpha
        raise NotImplementedError("exercise 03.0: set self.scaling, self.A, self.B and "
                                  "self.merged in MyLoraLinear.__init__ (lessons/exercises/ex03.py)")

    def forward(self, x: Tensor) -> Tensor:
        """(N, k) -> (N, d): base_layer(x) plus s · (x Aᵀ) Bᵀ; only base_layer(x) once merged."""
        raise NotImplementedError("exercise 03.0: write MyLoraLinear.forward")

    def delta_weight(self) -> np.ndarray:
        """ΔW = s · B A as a NumPy array (d, k)."""
        raise NotImplementedError("exercise 03.0: write MyLoraLinear.delta_weight")

    def merge(self) -> None:
        """W ← W0 + ΔW in ``base_layer.weight.data``; a second merge raises ValueError."""
        raise NotImplementedError("exercise 03.0: write MyLoraLinear.merge")

    def unmerge(self) -> None:
        """W ← W − ΔW, back to W0; unmerge without a merge raises ValueError."""
        raise NotImplementedError("exercise 03.0: write MyLoraLinear.unmerge")


def first_step(init_lora_weights, d: int = 12, k: int = 20, r: int = 4, seed: int = 0):
    """Exercise 1: build ``LoraLinear(base, r=r, lora_alpha=8, init_lora_weights=...)`` around a
    fresh ``Linear(k, d)`` (frozen), run x (7, k) through it and backward an upstream gradient
    U (7, d) (both from ``np.random.default_rng(seed)``, float32). Return the pair
    (max |layer(x) − base(x)|, max |dL/dA|), with base(x) computed *before* wrapping."""
    raise NotImplementedError("exercise 03.1: write first_step")


def fit_target(r: int, use_rslora: bool, steps: int = 50, seed: int = 0):
    """Exercise 2: a ``LoraLinear`` (lora_alpha=8) on a zero, bias-free ``Linear(64, 64)``, trained
    with ``SGD(lr=0.5)`` on the mean squared error to Y = X Tᵀ (X (256, 64) standard normal,
    T (64, 64) standard normal / 8). Return (‖ΔW‖_F, final loss) after ``steps`` steps."""
    raise NotImplementedError("exercise 03.2: write fit_target")


def cat_factors(A1, B1, s1, A2, B2, s2):
    """Exercise 3: factors (A, B) of one adapter with scaling 1 whose B A equals
    s1 B1 A1 + s2 B2 A2, of rank r1 + r2 (PEFT's ``combination_type="cat"``)."""
    raise NotImplementedError("exercise 03.3: write cat_factors")
