"""Every lesson and every solution runs top to bottom in fast mode, so a lesson can never rot.

Each script runs in its own interpreter, as a student runs it (``python lessons/01_autograd.py``),
with ``MINILORA_FAST=1`` (smaller sizes, fewer steps) and matplotlib's file-only backend. The
lessons end with their own self-checks (asserts), so exit code 0 means they passed.
"""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.py"))
SOLUTIONS = sorted((ROOT / "lessons" / "solutions").glob("[0-9][0-9]_*.py"))


def _param(path: pathlib.Path):
    mark = getattr(pytest.mark, f"lesson{path.name[:2]}")  # the markers follow the lessons
    return pytest.param(path, marks=mark, id=str(path.relative_to(ROOT / "lessons")))


@pytest.mark.parametrize("script", [_param(p) for p in LESSONS + SOLUTIONS])
def test_runs_in_fast_mode(script):
    env = {**os.environ, "MINILORA_FAST": "1", "MPLBACKEND": "Agg",
           # one BLAS thread: on a busy CI machine, threads that wait for cores are much
           # slower than one thread that has a core
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, \
        f"{script.name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def test_every_lesson_has_a_header_exercises_and_a_solution():
    assert LESSONS, "no lessons found"
    solutions = {p.name for p in SOLUTIONS}
    for lesson in LESSONS:
        text = lesson.read_text()
        assert text.startswith("# %% [markdown]\n# # Lesson"), lesson.name
        for required in ("**What you'll learn**", "**Prerequisites**", "**Time**",
                         "## Self-checks", "## Exercises"):
            assert required in text, f"{lesson.name} lacks {required!r}"
        assert lesson.name in solutions, f"{lesson.name} has no lessons/solutions/{lesson.name}"
