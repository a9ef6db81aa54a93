"""Lesson 09's exercises: write your answers here, then grade them.

    pytest lessons/checks/test_09.py

Replace each ``raise NotImplementedError`` with your code. Worked answers:
``lessons/solutions/ex09.py``. (Exercise 3 is an experiment on the quantized model: its answer
is what you observe, in ``lessons/solutions/09_variants.py``.)
"""
import numpy as np  # noqa: F401 (you will need these)

from minilora.variants import quantize  # noqa: F401


def fp4_values():
    """Exercise 1: by hand, the sorted list of distinct values of the 16 E2M1 bit patterns
    (1 sign bit, 2 exponent bits with bias 1, 1 mantissa bit), divided by the largest
    magnitude so that they lie in [−1, 1]."""
    raise NotImplementedError("exercise 09.1: write fp4_values (lessons/exercises/ex09.py)")


def nf4_tradeoff(W, blocksize):
    """Exercise 2: for the float32 matrix W, the pair (relative Frobenius error of
    dequantize(quantize(W)), bits per parameter) of NF4 with double quantization at this block
    size (``quantize.quantize_4bit``, ``dequantize_4bit``, ``bits_per_parameter``)."""
    raise NotImplementedError("exercise 09.2: write nf4_tradeoff")
