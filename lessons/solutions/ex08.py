"""Answers to lesson 08's exercises, in the form the checks grade (`lessons/checks/test_08.py`).

`lessons/solutions/08_limits.py` runs them and explains what they show.
"""
import numpy as np


def rank_of_change(pi):
    """Exercise 1: rank(P − I) for the permutation matrix P of ``pi`` (P e_i = e_pi(i))."""
    n = len(pi)
    P = np.zeros((n, n))
    P[pi, np.arange(n)] = 1
    return int(np.linalg.matrix_rank(P - np.eye(n)))


def derangement_rank_range(n):
    """Exercise 1: (smallest, largest) rank(P − I) over derangements of n tokens (n even):
    rank = n − #cycles, and a derangement has between 1 and n/2 cycles."""
    return n - n // 2, n - 1
