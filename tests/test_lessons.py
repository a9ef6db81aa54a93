"""Every lesson and every solution runs top to bottom in fast mode, so a lesson can never rot.

Each script runs in its own interpreter, as a student runs it (``python lessons/01_autograd.py``),
with ``MINILORA_FAST=1`` (smaller sizes, fewer steps) and matplotlib's file-only backend. The
lessons end with their own self-checks (asserts), so exit code 0 means they passed.
"""
import json
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


# The graded exercises: lessons/checks/test_NN.py grade lessons/exercises/exNN.py (what a
# student writes); the same checks must pass on the worked answers in lessons/solutions/ and
# fail, every one, on the unanswered skeletons (a check an empty answer passes grades nothing).
CHECKS = sorted((ROOT / "lessons" / "checks").glob("test_[0-9][0-9].py"))


def _run_checks(check_file, answers):
    """Each check's outcome ("passed", "failed", "skipped") by name, from pytest's JUnit report."""
    import xml.etree.ElementTree as ET
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp) / "report.xml"
        env = {**os.environ, "MINILORA_FAST": "1", "MPLBACKEND": "Agg", "MINILORA_ANSWERS": str(answers),
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, "-m", "pytest", str(check_file), "-q", "-p",
                                 "no:cacheprovider", f"--junitxml={report}"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
        assert report.exists(), f"{check_file.name} did not run:\n{result.stdout[-3000:]}"
        outcomes = {}
        for case in ET.parse(report).iter("testcase"):
            kinds = [child.tag for child in case]
            outcomes[case.get("name")] = ("failed" if {"failure", "error"} & set(kinds)
                                          else "skipped" if "skipped" in kinds else "passed")
        return outcomes, result.stdout


def _committed_skeletons(tmp_path):
    """lessons/exercises as committed (git HEAD), so a student's own answers do not count here."""
    folder = ROOT / "lessons" / "exercises"
    try:
        names = subprocess.run(["git", "ls-files", "lessons/exercises"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.split()
        for name in names:
            text = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout
            (tmp_path / pathlib.Path(name).name).write_text(text)
        return tmp_path if names else folder
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the files as they are
        return folder


def _check_param(path):
    mark = getattr(pytest.mark, f"lesson{path.name[5:7]}")  # test_03.py grades lesson 03
    return pytest.param(path, marks=mark, id=path.name)


@pytest.mark.parametrize("check_file", [_check_param(p) for p in CHECKS])
def test_checks_pass_on_the_solutions(check_file):
    outcomes, output = _run_checks(check_file, ROOT / "lessons" / "solutions")
    assert outcomes, f"{check_file.name} collected no checks:\n{output[-3000:]}"
    failed = sorted(name for name, outcome in outcomes.items() if outcome != "passed")
    assert not failed, f"checks that the worked answers do not pass: {failed}\n{output[-4000:]}"


@pytest.mark.parametrize("check_file", [_check_param(p) for p in CHECKS])
def test_checks_fail_on_the_unanswered_skeletons(check_file, tmp_path):
    outcomes, output = _run_checks(check_file, _committed_skeletons(tmp_path))
    assert outcomes, f"{check_file.name} collected no checks:\n{output[-3000:]}"
    passed = sorted(name for name, outcome in outcomes.items() if outcome != "failed")
    assert not passed, f"checks that an unanswered skeleton does not fail: {passed}"


def test_every_lesson_with_checks_has_a_skeleton_and_worked_answers():
    assert CHECKS, "no checks found in lessons/checks/"
    for check_file in CHECKS:
        lesson = check_file.stem[5:]
        for folder in ("exercises", "solutions"):
            assert (ROOT / "lessons" / folder / f"ex{lesson}.py").exists(), \
                f"{check_file.name} grades lessons/{folder}/ex{lesson}.py, which is missing"


def test_a_wrong_answer_fails_with_what_was_expected_and_a_hint(tmp_path):
    """A plausible mistake (the scaling alpha instead of alpha / r) gets a message that helps."""
    worked = (ROOT / "lessons" / "solutions" / "ex03.py").read_text()
    wrong = worked.replace("self.scaling = lora_alpha / r", "self.scaling = lora_alpha")
    assert wrong != worked
    (tmp_path / "ex03.py").write_text(wrong)
    outcomes, output = _run_checks(ROOT / "lessons" / "checks" / "test_03.py", tmp_path)
    assert outcomes["test_scaling_and_shapes"] == "failed"
    assert outcomes["test_starts_as_the_base_layer"] == "passed"  # only what is wrong fails
    assert "expected alpha / r = 2.0, got 4" in output and "Hint:" in output


def test_the_readme_times_table_is_times_json():
    """lessons/README.md's times are the numbers lessons/measure_times.py wrote, not typed in."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("measure_times", ROOT / "lessons" / "measure_times.py")
    measure_times = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(measure_times)
    data = json.loads(measure_times.TIMES.read_text())
    assert {row["lesson"] for row in data["lessons"].values()} == {p.name for p in LESSONS}, \
        "lessons/times.json does not cover every lesson: python lessons/measure_times.py --write-readme"
    text = measure_times.README.read_text()
    block = text[text.index(measure_times.BEGIN):text.index(measure_times.END) + len(measure_times.END)]
    assert block == measure_times.table(data), \
        "lessons/README.md's times table differs from lessons/times.json: " \
        "python lessons/measure_times.py --readme-only"
