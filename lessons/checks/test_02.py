"""Checks for lesson 02: attention's entropy, one attention block by hand, the sorting task.

Run: `pytest lessons/checks/test_02.py` (your answers in lessons/exercises/ex02.py).
"""
import numpy as np

from grading import answers, check, check_close
from minilora import Tensor, no_grad
from minilora.model import GPT, GPTConfig
from minilora.train import IGNORE_INDEX

ex = answers("02")


def test_exercise_1_entropy():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((200, 16)) * 8  # (n, T): q.k for d = 64 has std 8
    for scale in (1 / 8, 1.0):
        z = scores * scale
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        expected = -(p * np.log(p)).sum(axis=1).mean()
        check_close(ex.attention_entropy(scores, scale), expected, f"entropy at scale {scale}",
                    "H(p) = -sum_i p_i log p_i per row (natural log), then the mean", atol=1e-6)
    uniform = ex.attention_entropy(np.zeros((3, 16)), 1.0)
    check_close(uniform, np.log(16), "entropy of equal scores", "uniform weights: log T nats",
                atol=1e-6)


def test_exercise_2_attention_by_hand():
    model = GPT(GPTConfig(vocab_size=17, block_size=16, n_layer=1, n_head=4, n_embd=32), seed=1)
    block = model.layers[0]
    h = Tensor(np.random.default_rng(2).standard_normal((3, 16, 32)), dtype="float32")
    with no_grad():
        expected = block.attn(h).numpy()
        got = ex.attention_by_hand(block.attn, h)
    check_close(got, expected, "your attention vs block.attn(h)",
                "(B, T, C) -> (B, H, T, d) per head; scale by 1/sqrt(d) with d = C / H; mask "
                "the future with -inf before the softmax; join the heads before o_proj", atol=1e-5)


def test_exercise_3_sort_batch():
    inputs, targets = ex.sort_batch(np.random.default_rng(3), 5)
    check(inputs.shape == (5, 16) and targets.shape == (5, 16),
          f"expected inputs and targets of shape (5, 16), got {inputs.shape}, {targets.shape}",
          "a sequence is 2L + 1 tokens; inputs drop the last, targets the first")
    x = np.random.default_rng(3).integers(0, 16, (5, 8))
    check(np.array_equal(inputs[:, :8], x) and np.all(inputs[:, 8] == 16),
          "inputs must start with x (rng.integers(0, V, (n, L))) and then SEP = V",
          "draw x first, with the rng you were given")
    check(np.all(targets[:, :8] == IGNORE_INDEX) and np.array_equal(targets[:, 8:],
                                                                     np.sort(x, axis=1)),
          f"targets: expected IGNORE_INDEX where x and SEP are predicted, then sorted(x); got "
          f"{targets[0]}", "targets = sequence[1:], its first L entries set to IGNORE_INDEX")
