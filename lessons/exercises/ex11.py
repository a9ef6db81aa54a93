"""Lesson 11's exercise: write your answer here, then grade it.

    pytest lessons/checks/test_11.py

Replace the ``raise NotImplementedError`` with your code. Worked answer:
``lessons/solutions/ex11.py``.
"""
import numpy as np  # noqa: F401 (you will need it)

from minilora import Tensor  # noqa: F401 (Tensor._make(data, parents, backward, name) makes an op)


def my_lora_linear(x, weight, bias, lora_A, lora_B, scaling):
    """Exercise 1: the fused LoRA op, h = x W0ᵀ + b + scaling · (x Aᵀ) Bᵀ, forward and backward.

    ``x`` (..., in), ``weight`` W0 (out, in), ``bias`` (out,) or None, ``lora_A`` (r, in),
    ``lora_B`` (out, r): Tensors; ``scaling`` a float. Return one Tensor made with
    ``Tensor._make(h, parents, backward, "lora_linear")``, as every op in
    ``minilora/functional.py`` is written, where ``parents`` is ``(x, weight, bias, lora_A,
    lora_B)`` without the bias when it is None, and ``backward(g)`` returns one gradient per
    parent in that order (None for a parent that does not need one).

    Fused means: keep only the (N, r) bottleneck u = x Aᵀ for the backward, never an (N, out)
    array besides h itself. With gu = scaling · g B: dx = g W0 + gu A, dW0 = gᵀ x,
    db = Σ g, dA = guᵀ x, dB = scaling · gᵀ u. It must equal ``F.lora_linear`` with the fast
    path off (the composition of three Linears) to rounding, for any leading axes of x.
    """
    raise NotImplementedError("exercise 11.1: write my_lora_linear (lessons/exercises/ex11.py)")
