"""Checks for lesson 09: FP4 by hand, NF4's block size trade-off.

Run: `pytest lessons/checks/test_09.py` (your answers in lessons/exercises/ex09.py).
"""
import numpy as np

from grading import answers, check, check_close
from minilora.variants import quantize

ex = answers("09")


def test_exercise_1_fp4_by_hand():
    got = list(ex.fp4_values())
    expected = quantize.create_fp4_map()
    check(len(got) == 15, f"expected 15 distinct values, got {len(got)}",
          "+0 and -0 are the same number: 16 patterns, 15 values")
    check_close(got, expected, "the E2M1 values / 6, sorted",
                "e = 0 is subnormal (m/2: 0 or 0.5); e > 0 gives 2^(e-1)(1 + m/2); divide by 6",
                atol=1e-12)


def test_exercise_2_block_size():
    W = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    rows = {b: ex.nf4_tradeoff(W, b) for b in (16, 64, 256)}
    packed, state = quantize.quantize_4bit(W, 64, True, "nf4")
    W_hat = np.asarray(quantize.dequantize_4bit(packed, state))
    check_close(rows[64][0], np.linalg.norm(W - W_hat) / np.linalg.norm(W),
                "relative error at block size 64", "‖W − dequantize(quantize(W))‖_F / ‖W‖_F, "
                "with double quantization on", atol=1e-6)
    check_close(rows[64][1], quantize.bits_per_parameter(packed, state),
                "bits per parameter at block size 64",
                "4 bits per code plus each block's constant (8 bits with double quantization)",
                atol=1e-9)
    check(rows[16][0] < rows[64][0] < rows[256][0] and rows[16][1] > rows[64][1] > rows[256][1],
          f"expected smaller blocks to have less error and more bits, got {rows}",
          "quantize with the block size you were given")
