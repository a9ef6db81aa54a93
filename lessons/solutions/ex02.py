"""Answers to lesson 02's exercises, in the form the checks grade (`lessons/checks/test_02.py`).

`lessons/solutions/02_transformer.py` runs them and explains what they show.
"""
import math

import numpy as np

import minilora.functional as F
from minilora import Tensor
from minilora.train import IGNORE_INDEX


def attention_entropy(scores, scale):
    """Exercise 1: mean entropy (nats) of softmax(scores · scale) over the last axis."""
    p = F.softmax(Tensor(scores * scale)).numpy()  # (..., T)
    return float(-(p * np.log(p + 1e-30)).sum(axis=-1).mean())


def attention_by_hand(attn, h):
    """Exercise 2: `attn(h)` of a CausalSelfAttention from its q, k, v and o projections."""
    B, T, _ = h.shape
    H = attn.n_head
    split = lambda t: t.reshape(B, T, H, -1).transpose(1, 2)  # (B, T, C) -> (B, H, T, d)
    q, k, v = split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h))
    M = np.triu(np.full((T, T), -np.inf), k=1)  # (T, T): -inf above the diagonal
    weights = F.softmax(q @ k.mT / math.sqrt(q.shape[-1]) + M, dim=-1)  # (B, H, T, T)
    heads = weights @ v  # (B, H, T, T) @ (B, H, T, d) -> (B, H, T, d)
    joined = heads.transpose(1, 2).reshape(B, T, -1)  # (B, T, H, d) -> (B, T, C)
    return attn.o_proj(joined)  # (B, T, C)


def sort_batch(rng, n, V=16, L=8):
    """Exercise 3: n sequences [x, SEP, sorted(x)] as (inputs, targets), each (n, 2L), SEP = V;
    only the sorted half is scored (IGNORE_INDEX elsewhere)."""
    x = rng.integers(0, V, (n, L))  # (n, L)
    seq = np.concatenate([x, np.full((n, 1), V), np.sort(x, axis=1)], axis=1)  # (n, 2L + 1)
    inputs, targets = seq[:, :-1], seq[:, 1:].copy()
    targets[:, :L] = IGNORE_INDEX
    return inputs, targets
