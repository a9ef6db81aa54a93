"""Answers to lesson 07's exercises, in the form the checks grade (`lessons/checks/test_07.py`).

`lessons/solutions/07_subspace.py` runs them on trained adapters and explains what they show.
"""
import numpy as np

from minilora import analysis


def phi_after_mixing(A, R):
    """Exercise 1: (φ(A, RA, r, r), φ(A, RA, 1, 1)) for A (r, k) and an invertible R (r, r)."""
    r = A.shape[0]
    return (analysis.subspace_similarity(A, R @ A, r, r),
            analysis.subspace_similarity(A, R @ A, 1, 1))


def output_phi(B1, B2, i, j):
    """Exercise 2: φ between the top-i and top-j left singular vectors of B1 and B2 (out, r):
    the output directions two adapters write into."""
    return analysis.subspace_similarity(B1.T, B2.T, i, j)  # rows of Bᵀ are the columns of B


def top_energy(delta_W, r):
    """Exercise 3: the share of ‖ΔW‖_F² that its top r singular values hold."""
    sigma = np.linalg.svd(delta_W, compute_uv=False)
    return float(np.sum(sigma[:r] ** 2) / np.sum(sigma ** 2))
