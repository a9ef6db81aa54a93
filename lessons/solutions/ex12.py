"""Answers to lesson 12's exercises, in the form the checks grade (`lessons/checks/test_12.py`).

`lessons/solutions/12_after_the_paper.py` runs them and explains what they show.
"""
import numpy as np


def effective_rank(delta, energy=0.9):
    """Exercise 1: the fewest singular values holding ``energy`` of ‖ΔW‖_F² = Σ σ_i²."""
    s2 = np.linalg.svd(np.asarray(delta, dtype=float), compute_uv=False) ** 2  # descending
    if s2.sum() == 0:
        return 0
    return int(np.searchsorted(np.cumsum(s2), energy * s2.sum() * (1 - 1e-12)) + 1)


def scale_intruders(W0, W, mitigation_lambda=0.75, top_k=10, threshold=0.5):
    """Exercise 2: W' = W + (λ − 1) Σ_{i ∈ I} σ_i u_i v_iᵀ over the intruders I among the top_k."""
    U, S, Vt = np.linalg.svd(W, full_matrices=False)  # (out, n), (n,), (n, in)
    U0 = np.linalg.svd(W0, full_matrices=False)[0]  # (out, n)
    k = min(top_k, len(S))
    partner = np.max(np.abs(U[:, :k].T @ U0), axis=1)  # (k,): the best |cos| of each u_i in W0
    scale = np.ones_like(S)
    scale[:k][partner < threshold] = mitigation_lambda
    return (U * (S * scale)) @ Vt  # (out, n) @ (n, in)


def best_learning_rate(lrs, losses):
    """Exercise 3: the lowest-loss rate, and whether worse rates lie on both sides of it."""
    i = int(np.argmin(losses))
    return lrs[i], 0 < i < len(lrs) - 1
