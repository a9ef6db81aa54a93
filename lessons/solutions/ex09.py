"""Answers to lesson 09's exercises, in the form the checks grade (`lessons/checks/test_09.py`).

`lessons/solutions/09_variants.py` runs them and explains what they show.
"""
import numpy as np

from minilora.variants import quantize


def fp4_values():
    """Exercise 1: the distinct values of E2M1's 16 bit patterns, divided by the largest (6),
    sorted: magnitude 2^(e−1)(1 + m/2) for e > 0, m/2 for e = 0."""
    values = set()
    for sign in (1, -1):
        for e in range(4):
            for m in (0, 1):
                magnitude = 2.0 ** (e - 1) * (1 + m / 2) if e else m / 2
                values.add(sign * magnitude / 6)
    return sorted(values)


def nf4_tradeoff(W, blocksize):
    """Exercise 2: (relative Frobenius error, bits per parameter) of NF4 with double
    quantization at this block size."""
    packed, state = quantize.quantize_4bit(W, blocksize, True, "nf4")
    W_hat = np.asarray(quantize.dequantize_4bit(packed, state))
    return (float(np.linalg.norm(W - W_hat) / np.linalg.norm(W)),
            quantize.bits_per_parameter(packed, state))
