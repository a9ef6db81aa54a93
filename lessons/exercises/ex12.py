"""Lesson 12's exercises: write your answers here, then grade them.

    pytest lessons/checks/test_12.py

Replace each ``raise NotImplementedError`` with your code. Worked answers:
``lessons/solutions/ex12.py``.
"""
import numpy as np  # noqa: F401 (you will need it)


def effective_rank(delta, energy=0.9):
    """Exercise 1: the number k of ΔW's largest singular values that hold ``energy`` of its
    energy ‖ΔW‖_F² = Σ σ_i²: the smallest k with σ_1² + … + σ_k² ≥ energy · Σ σ_i²
    (Biderman et al. 2024). ``delta`` is a NumPy matrix; return an int (0 for a zero matrix)."""
    raise NotImplementedError("exercise 12.1: write effective_rank (lessons/exercises/ex12.py)")


def scale_intruders(W0, W, mitigation_lambda=0.75, top_k=10, threshold=0.5):
    """Exercise 2: intruder mitigation by hand (Shuttleworth et al. 2024, PEFT's
    ``reduce_intruder_dimension``). With W = U diag(σ) Vᵀ (the fine-tuned weight) and U0 the
    left singular vectors of W0: the intruders are the i among the top_k whose u_i has no
    partner in W0, max_j |u_iᵀ u0_j| < threshold. Return W' = W with each intruder's σ_i
    scaled by λ = ``mitigation_lambda`` (every other singular triplet unchanged)."""
    raise NotImplementedError("exercise 12.2: write scale_intruders")


def best_learning_rate(lrs, losses):
    """Exercise 3: from a sweep (``lrs`` increasing, ``losses`` the held-out loss at each),
    return ``(best_lr, bracketed)``: the rate with the lowest loss, and whether a worse rate
    lies on both sides of it (False when the best sits at an edge of the grid: the sweep must
    grow past that edge before the optimum means anything)."""
    raise NotImplementedError("exercise 12.3: write best_learning_rate")
