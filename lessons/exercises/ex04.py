"""Lesson 04's exercises: write your answers here, then grade them.

    pytest lessons/checks/test_04.py

Replace each ``raise NotImplementedError`` with your code. Worked answers:
``lessons/solutions/ex04.py``.
"""
import numpy as np  # noqa: F401 (you will need it)


def tall_identity(layer):
    """Exercise 1: prepare a fresh ``LoraLinear`` ``layer`` on a tall weight (d > k, r = k) so
    that training it with SGD is exactly full fine-tuning: set ``layer.lora_A["default"]`` and
    ``layer.lora_B["default"]`` (their ``.weight.data`` and ``.weight.requires_grad``), in the
    base weight's dtype. Which one is the frozen identity now, and which one trains from zero?"""
    raise NotImplementedError("exercise 04.1: write tall_identity (lessons/exercises/ex04.py)")


def AtA_diagonal(r, k):
    """Exercise 2: the expected diagonal entry of AᵀA at LoRA's usual start, A (r, k) with
    entries uniform in [−1/√k, 1/√k], as a formula in r and k."""
    raise NotImplementedError("exercise 04.2: write AtA_diagonal")


def rank_needed(delta, tolerance=0.1):
    """Exercise 3: the smallest rank r whose best rank-r approximation of the matrix ``delta``
    has a Frobenius error below ``tolerance`` × ‖delta‖_F (Eckart–Young)."""
    raise NotImplementedError("exercise 04.3: write rank_needed")
