"""What every check file shares: load the answers to grade, and compare with a helpful message.

The checks grade ``lessons/exercises/exNN.py`` (your answers) unless ``MINILORA_ANSWERS``
names another folder: CI runs them on ``lessons/solutions/`` too, where the worked answers
live under the same names (``MINILORA_ANSWERS=lessons/solutions pytest lessons/checks``).
"""
import importlib.util
import os
from pathlib import Path

import numpy as np

LESSONS = Path(__file__).resolve().parents[1]
ANSWERS = Path(os.environ.get("MINILORA_ANSWERS", LESSONS / "exercises")).resolve()


def answers(lesson: str):
    """The module ``exNN.py`` of the answers folder, imported from its path (no side effects)."""
    path = ANSWERS / f"ex{lesson}.py"
    if not path.exists():
        raise FileNotFoundError(f"no answers file {path}: the checks of lesson {lesson} grade "
                                f"the functions you write there")
    spec = importlib.util.spec_from_file_location(f"ex{lesson}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(condition, message: str, hint: str) -> None:
    """Fail with ``message`` (what was expected, what came out) and a hint, unless it holds."""
    if not condition:
        raise AssertionError(f"{message}\nHint: {hint}")


def check_close(got, expected, what: str, hint: str, atol: float = 1e-6, rtol: float = 1e-5):
    """``got`` equals ``expected`` (arrays or numbers) to the tolerances, else say where not."""
    got = np.asarray(got.numpy() if hasattr(got, "numpy") else got, dtype=float)
    expected = np.asarray(expected.numpy() if hasattr(expected, "numpy") else expected, dtype=float)
    check(got.shape == expected.shape,
          f"{what}: expected shape {expected.shape}, got shape {got.shape}", hint)
    gap = np.abs(got - expected)
    bad = gap > atol + rtol * np.abs(expected)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, gap, -1)), gap.shape)
        where = f" at index {tuple(int(j) for j in i)}" if gap.ndim else ""
        check(False, f"{what}: expected {expected[i]:.6g}{where}, got {got[i]:.6g} "
                     f"({int(bad.sum())} of {bad.size} entries differ, largest gap "
                     f"{gap.max():.3g})", hint)
