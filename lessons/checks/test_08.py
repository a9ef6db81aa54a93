"""Checks for lesson 08: the rank of the change a permutation asks for.

Run: `pytest lessons/checks/test_08.py` (your answers in lessons/exercises/ex08.py).
"""
import numpy as np

from grading import answers, check

ex = answers("08")


def cycles(pi):
    seen, count = set(), 0
    for start in range(len(pi)):
        if start not in seen:
            count += 1
            i = start
            while i not in seen:
                seen.add(i)
                i = pi[i]
    return count


def test_exercise_1_rank_of_change():
    n = 64
    rng = np.random.default_rng(0)
    cases = {"one 64-cycle": np.roll(np.arange(n), 1), "32 swaps": np.arange(n) ^ 1,
             "identity": np.arange(n), "random": rng.permutation(n), "another": rng.permutation(n)}
    for name, pi in cases.items():
        expected = n - cycles(pi)
        got = ex.rank_of_change(pi)
        check(got == expected, f"{name}: expected rank(P - I) = {expected}, got {got}",
              "P has a 1 at (pi[i], i); np.linalg.matrix_rank(P - np.eye(n)). (It equals n minus "
              "the number of cycles of pi.)")


def test_exercise_1_derangement_range():
    for n in (6, 64):
        got = tuple(ex.derangement_rank_range(n))
        check(got == (n // 2, n - 1), f"n = {n}: expected (smallest, largest) = "
              f"{(n // 2, n - 1)}, got {got}", "rank(P - I) = n - #cycles; without fixed points "
              "every cycle has length >= 2, so there are at most n/2 cycles, and at least one")
