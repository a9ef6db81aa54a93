"""Lesson 02's exercises: write your answers here, then grade them.

    pytest lessons/checks/test_02.py

Replace each ``raise NotImplementedError`` with your code. Worked answers:
``lessons/solutions/ex02.py``.
"""
import math  # noqa: F401 (you will need these)

import numpy as np  # noqa: F401

import minilora.functional as F  # noqa: F401
from minilora import Tensor  # noqa: F401
from minilora.train import IGNORE_INDEX  # noqa: F401


def attention_entropy(scores, scale):
    """Exercise 1: the mean entropy, in nats, of the attention weights softmax(scores · scale)
    taken over the last axis of the NumPy array ``scores`` (e.g. (n, T) query-key products)."""
    raise NotImplementedError("exercise 02.1: write attention_entropy (lessons/exercises/ex02.py)")


def attention_by_hand(attn, h):
    """Exercise 2: reproduce ``attn(h)`` for a ``CausalSelfAttention`` ``attn`` (``attn.n_head``
    heads, ``attn.q_proj``, ``k_proj``, ``v_proj``, ``o_proj``) and a Tensor h (B, T, C): split
    the heads, causal softmax(q kᵀ / √d), times v, join the heads, ``o_proj``."""
    raise NotImplementedError("exercise 02.2: write attention_by_hand")


def sort_batch(rng, n, V=16, L=8):
    """Exercise 3: n sequences [x, SEP, sorted(x)] with x of L tokens drawn by
    ``rng.integers(0, V, (n, L))`` and SEP = V, as (inputs, targets), each (n, 2L): targets is
    the sequence shifted by one, with IGNORE_INDEX where the model reads x."""
    raise NotImplementedError("exercise 02.3: write sort_batch")
