"""Answers to lesson 04's exercises, in the form the checks grade (`lessons/checks/test_04.py`).

`lessons/solutions/04_equivalence.py` runs them and explains what they show.
"""
import numpy as np


def tall_identity(layer):
    """Exercise 1: a LoraLinear on a tall (d > k) weight at r = k becomes full fine-tuning:
    A = I (k, k) frozen, B = 0 (d, k) trained, so ΔW = s B and dL/dB = s G."""
    d, k = layer.out_features, layer.in_features
    dtype = layer.base_layer.weight.numpy().dtype
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    A.data = np.eye(k, dtype=dtype)  # (k, k), frozen
    A.requires_grad = False
    B.data = np.zeros((d, k), dtype=dtype)  # (d, k), trained from zero


def AtA_diagonal(r, k):
    """Exercise 2: E[(AᵀA)_jj] at LoRA's init, A (r, k) uniform in ±1/√k: r times the
    variance 1/(3k) of one entry."""
    return r / (3 * k)


def rank_needed(delta, tolerance=0.1):
    """Exercise 3: the smallest r whose best rank-r approximation of ``delta`` (Eckart–Young:
    keep the top r singular values) has a relative Frobenius error below ``tolerance``."""
    s = np.linalg.svd(delta, compute_uv=False)
    tails = np.sqrt(np.cumsum((s ** 2)[::-1])[::-1])  # tails[r] = sqrt(sum_{i >= r} s_i^2)
    relative = np.append(tails[1:], 0.0) / np.linalg.norm(delta)  # error of rank 1, 2, ..., n
    return int(np.argmax(relative < tolerance)) + 1
