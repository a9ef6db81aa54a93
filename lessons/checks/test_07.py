"""Checks for lesson 07: φ is about subspaces, φ on the output side, the energy of the top r.

Run: `pytest lessons/checks/test_07.py` (your answers in lessons/exercises/ex07.py).
"""
import numpy as np

from grading import answers, check, check_close

ex = answers("07")
rng = np.random.default_rng(0)


def principal_phi(M1, M2, i, j):
    """φ by hand: ‖U1ᵀ U2‖_F² / min(i, j) for the top right singular vectors of the rows."""
    V1 = np.linalg.svd(M1, full_matrices=False)[2][:i].T  # (k, i)
    V2 = np.linalg.svd(M2, full_matrices=False)[2][:j].T  # (k, j)
    return np.sum((V1.T @ V2) ** 2) / min(i, j)


def test_exercise_1_subspaces_not_matrices():
    A = rng.standard_normal((4, 32)) * np.array([[4.0], [2.0], [1.0], [0.5]])  # (r, k)
    R = np.diag([0.1, 1.0, 1.0, 10.0])  # reweights the rows: the order of directions changes
    full, top = ex.phi_after_mixing(A, R)
    check_close(full, 1.0, "φ(A, RA, r, r)", "RA has the same row space as A: all r directions "
                "together span the same subspace", atol=1e-9)
    check_close(top, principal_phi(A, R @ A, 1, 1), "φ(A, RA, 1, 1)",
                "compare only the top right singular vector of each", atol=1e-9)
    check(top < 0.5, f"with this R the top direction moves: expected φ(1, 1) < 0.5, got {top:.3f}",
          "R changes which direction has the largest singular value")


def test_exercise_2_output_side():
    B1 = rng.standard_normal((32, 3))  # (out, r)
    B2 = np.c_[B1 @ rng.standard_normal((3, 3)), rng.standard_normal((32, 2))]  # (out, 5)
    check_close(ex.output_phi(B1, B2, 3, 5), 1.0, "φ of B1's 3 columns against B2's 5",
                "B2's columns contain B1's column space: every output direction is shared",
                atol=1e-9)
    for i, j in ((1, 1), (2, 4)):
        check_close(ex.output_phi(B1, B2, i, j), principal_phi(B1.T, B2.T, i, j),
                    f"φ(B1, B2, {i}, {j})", "the columns of B are the rows of Bᵀ: pass B1.T, "
                    "B2.T to analysis.subspace_similarity", atol=1e-9)


def test_exercise_3_top_energy():
    U, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    V, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    sigma = np.array([4.0, 2.0, 1.0] + [0.0] * 13)
    dW = U @ np.diag(sigma) @ V.T
    check_close(ex.top_energy(dW, 1), 16 / 21, "top-1 energy of singular values (4, 2, 1)",
                "squared singular values: 16 of 16 + 4 + 1", atol=1e-9)
    check_close(ex.top_energy(dW, 3), 1.0, "top-3 energy of a rank-3 ΔW", "all of it",
                atol=1e-9)
