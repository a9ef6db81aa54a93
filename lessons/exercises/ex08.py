"""Lesson 08's exercises: write your answers here, then grade them.

    pytest lessons/checks/test_08.py

Replace each ``raise NotImplementedError`` with your code. Worked answers:
``lessons/solutions/ex08.py``. (Exercises 2 and 3 are experiments on trained runs: their
answers are what you observe, in ``lessons/solutions/08_limits.py``.)
"""
import numpy as np  # noqa: F401 (you will need it)


def rank_of_change(pi):
    """Exercise 1: rank(P − I), where P is the permutation matrix of the integer array ``pi``
    (token i is written as pi[i]: P e_i = e_pi[i])."""
    raise NotImplementedError("exercise 08.1: write rank_of_change (lessons/exercises/ex08.py)")


def derangement_rank_range(n):
    """Exercise 1: the (smallest, largest) rank(P − I) a derangement of n tokens can have
    (n even; a derangement moves every token). Reason it out, then test it with rank_of_change."""
    raise NotImplementedError("exercise 08.1: write derangement_rank_range")
