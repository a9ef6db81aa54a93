"""The answer to lesson 11's exercise, in the form the checks grade (`lessons/checks/test_11.py`).

`lessons/solutions/11_fast.py` runs it and explains it.
"""
import numpy as np

from minilora import Tensor


def my_lora_linear(x, weight, bias, lora_A, lora_B, scaling):
    """Exercise 1: h = x W0ᵀ + b + scaling · (x Aᵀ) Bᵀ as one op that keeps only u = x Aᵀ.

    Backward, with gu = scaling · g B (N, r): dx = g W0 + gu A, dW0 = gᵀ x, db = Σ g,
    dA = guᵀ x, dB = scaling · gᵀ u.
    """
    x2 = np.reshape(x.data, (-1, x.shape[-1]))  # (N, in), N = all leading axes
    u = x2 @ lora_A.data.T  # (N, in) @ (in, r) -> (N, r): the only array kept for the backward
    h = x2 @ weight.data.T  # (N, in) @ (in, out) -> (N, out)
    if bias is not None:
        h += bias.data  # in place on our own product: no second (N, out) array
    h += (u * scaling) @ lora_B.data.T  # (N, r) @ (r, out): scale the thin side

    def backward(g):
        g2 = np.reshape(g, (-1, g.shape[-1]))  # (N, out)
        gu = (g2 @ lora_B.data) * scaling  # (N, out) @ (out, r) -> (N, r)
        gx = np.reshape(g2 @ weight.data + gu @ lora_A.data, x.shape) \
            if x.requires_grad else None  # (N, out) @ (out, in) + (N, r) @ (r, in)
        gW = g2.T @ x2 if weight.requires_grad else None  # (out, N) @ (N, in): skipped if frozen
        gA = gu.T @ x2 if lora_A.requires_grad else None  # (r, N) @ (N, in) -> (r, in)
        gB = (g2.T @ u) * scaling if lora_B.requires_grad else None  # (out, N) @ (N, r)
        if bias is None:
            return gx, gW, gA, gB
        gb = np.sum(g2, axis=0) if bias.requires_grad else None  # (out,)
        return gx, gW, gb, gA, gB

    parents = (x, weight) + (() if bias is None else (bias,)) + (lora_A, lora_B)
    return Tensor._make(np.reshape(h, x.shape[:-1] + (weight.shape[0],)), parents, backward,
                        "lora_linear")
