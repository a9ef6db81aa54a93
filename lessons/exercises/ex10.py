"""Lesson 10's exercises: write your answers here, then grade them.

    pytest lessons/checks/test_10.py

Replace the ``raise NotImplementedError`` with your code. Worked answers:
``lessons/solutions/ex10.py``. (Exercise 2's answer is what you observe; exercise 3 needs a
GPU: both are in ``lessons/solutions/10_backends.py``.)
"""
import numpy as np  # noqa: F401 (you will need these)

from minilora import backend  # noqa: F401


def bincount_rows(ids, rows, n):
    """Exercise 1: sum the rows of ``rows`` (m, C) into ``n`` buckets, table[ids[i]] += rows[i],
    and return the (n, C) table, as an array of the active namespace (``backend.xp``): it must
    give the same numbers on NumPy and on ``array_api_strict``, so no ``np.add.at``."""
    raise NotImplementedError("exercise 10.1: write bincount_rows (lessons/exercises/ex10.py)")
