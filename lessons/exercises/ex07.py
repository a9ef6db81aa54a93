"""Lesson 07's exercises: write your answers here, then grade them.

    pytest lessons/checks/test_07.py

Replace each ``raise NotImplementedError`` with your code (``analysis.subspace_similarity``
is φ of Eq. 4). Worked answers: ``lessons/solutions/ex07.py``.
"""
import numpy as np  # noqa: F401 (you will need these)

from minilora import analysis  # noqa: F401


def phi_after_mixing(A, R):
    """Exercise 1: the pair (φ(A, RA, r, r), φ(A, RA, 1, 1)) for A (r, k) and an invertible
    R (r, r). Before you run it: which of the two must be 1, and why?"""
    raise NotImplementedError("exercise 07.1: write phi_after_mixing (lessons/exercises/ex07.py)")


def output_phi(B1, B2, i, j):
    """Exercise 2: φ between the output subspaces of two adapters: the top-i left singular
    vectors of B1 (out, r1) against the top-j of B2 (out, r2)."""
    raise NotImplementedError("exercise 07.2: write output_phi")


def top_energy(delta_W, r):
    """Exercise 3: the share of ‖ΔW‖_F² held by ΔW's top r singular values (a number in [0, 1])."""
    raise NotImplementedError("exercise 07.3: write top_energy")
