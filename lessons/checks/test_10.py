"""Checks for lesson 10: a scatter-add that runs on any array namespace.

Run: `pytest lessons/checks/test_10.py` (your answers in lessons/exercises/ex10.py).
"""
import array_api_strict as strict
import numpy as np

from grading import answers, check, check_close
from minilora import backend

ex = answers("10")
ids_host, rows_host = np.array([0, 3, 0, 1, 3]), np.arange(10.0).reshape(5, 2)
expected = np.array([[4.0, 6.0], [6.0, 7.0], [0.0, 0.0], [10.0, 12.0]])  # rows 0+2, 3, -, 1+4


def test_exercise_1_on_numpy():
    check_close(ex.bincount_rows(ids_host, rows_host, 4), expected, "the table on NumPy",
                "table[ids[i]] += rows[i]; an id used twice adds both rows")


def test_exercise_1_on_the_strict_namespace():
    backend.use(strict)
    try:
        xp = backend.xp
        out = ex.bincount_rows(xp.asarray(ids_host), xp.asarray(rows_host), 4)
        is_strict = type(out).__module__.startswith("array_api_strict")
        mixed = np.asarray(backend.to_numpy(out + xp.asarray(rows_host[:4])))  # must not raise
    except (TypeError, ValueError) as err:
        check(False, f"on array_api_strict your function raised or returned a NumPy array: {err}",
              "np.add.at converts to NumPy; use backend.scatter_add, which needs only the standard")
    finally:
        backend.use("numpy")
    check(is_strict, f"expected an array_api_strict array, got {type(out).__module__}",
          "build the table with backend functions (backend.scatter_add), not NumPy's")
    check_close(mixed, expected + rows_host[:4], "the table on array_api_strict",
                "the same numbers on both namespaces")
