"""Checks for lesson 12: the effective rank, intruder mitigation by hand, a bracketed optimum.

Run: `pytest lessons/checks/test_12.py` (your answers in lessons/exercises/ex12.py).
"""
import numpy as np

from grading import answers, check, check_close
from minilora import analysis
from minilora.intruders import reduce_intruders

ex = answers("12")


def test_exercise_1_effective_rank():
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    V, _ = np.linalg.qr(rng.standard_normal((24, 24)))
    cases = {"sigma_i = 0.8^i": 0.8 ** np.arange(24), "all equal": np.ones(24),
             "rank 3": np.r_[np.ones(3), np.zeros(21)], "one direction": np.r_[5.0, np.zeros(23)]}
    for name, sigma in cases.items():
        delta = U[:, :24] @ np.diag(sigma) @ V.T  # (32, 24)
        for energy in (0.5, 0.9, 0.99):
            want = analysis.effective_rank(delta, energy)
            got = ex.effective_rank(delta, energy)
            check(got == want, f"{name}, energy {energy}: expected {want}, got {got}",
                  "square the singular values, add them up from the largest, and count until "
                  "the running sum reaches energy × the total")
    check(ex.effective_rank(np.zeros((4, 3))) == 0, "a zero ΔW: expected 0",
          "a zero matrix has no energy to hold: return 0 before dividing by it")


def test_exercise_2_scale_intruders():
    rng = np.random.default_rng(1)
    W0 = rng.standard_normal((16, 12))
    A, B = rng.standard_normal((2, 12)), rng.standard_normal((16, 2))
    W = W0 + 3.0 * B @ A  # a strong rank-2 update: new directions among the top ones
    for lam in (0.0, 0.75, 1.0):
        for k, eps in ((10, 0.5), (3, 0.9), (12, 0.3)):
            want = reduce_intruders(W0, W, top_k=k, threshold_epsilon=eps, mitigation_lambda=lam)
            got = ex.scale_intruders(W0, W, mitigation_lambda=lam, top_k=k, threshold=eps)
            check_close(got, want, f"W' at λ = {lam}, top_k = {k}, threshold = {eps}",
                        "intruders: among the top_k left singular vectors u_i of W, those whose "
                        "largest |u_iᵀ u0_j| over W0's left singular vectors is below the "
                        "threshold; scale only their σ_i by λ and rebuild U diag(σ) Vᵀ",
                        atol=1e-9, rtol=1e-9)


def test_exercise_3_best_learning_rate():
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    cases = [([2.0, 1.5, 1.2, 1.4, 2.5], (1e-3, True)), ([1.0, 1.1, 1.3, 1.6, 2.0], (1e-4, False)),
             ([3.0, 2.5, 2.0, 1.7, 1.6], (1e-2, False)), ([2.0, 1.0, 1.5, 1.1, 1.2], (3e-4, True))]
    for losses, want in cases:
        got = ex.best_learning_rate(lrs, losses)
        check(tuple(got) == want, f"losses {losses}: expected {want}, got {got}",
              "the best rate is the one with the lowest loss; it is bracketed only if it is "
              "neither the first nor the last of the grid")
