"""The catalogue of laws (docs/laws.md) and minilora.testing, the module the laws are written with.

The page is generated from the tests' own markers and docstrings; these tests make sure it
cannot drift from them, that ``pytest -m law`` selects exactly what it lists, that the worked
example it shows runs as written (and fails when its formula is broken), and that
minilora.testing stays an optional extra.
"""
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings

from minilora.adapters import load_adapter
from minilora.testing import adapter_pairs, assert_bits_equal, catalogue, examples, saved_adapters

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "laws.md"


def test_the_page_is_what_the_generator_writes():
    assert DOC.read_text(encoding="utf-8") == catalogue.build(DOC, ROOT / "tests"), \
        "docs/laws.md is out of date: run python -m minilora.testing.catalogue"
    assert catalogue.main(["--check"]) == 0


def test_pytest_m_law_selects_exactly_the_catalogued_laws():
    laws, _ = catalogue.collect(ROOT / "tests")
    listed = {f"{law.path}::{law.test}" for law in laws}
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "law",
                             "-p", "no:cacheprovider", "tests"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    selected = {line.split("[")[0] for line in result.stdout.splitlines() if "::" in line}
    assert selected == listed
    assert all(1 <= law.lesson <= 10 and law.statement and law.source for law in laws)


@pytest.mark.parametrize("doc, message", [
    ('"""A statement without a source."""', "Source"),
    ('"""Source: a source without a statement."""', "statement"),
    (None, "Source"),
])
def test_a_law_without_statement_or_source_is_refused(tmp_path, doc, message):
    body = f"    {doc}\n" if doc else ""
    (tmp_path / "test_x.py").write_text(
        "import pytest\nfrom hypothesis import given, strategies as st\n\n\n"
        f"@pytest.mark.law(lesson=3)\n@given(st.integers())\ndef test_y(n):\n{body}    pass\n")
    with pytest.raises(ValueError, match=message):
        catalogue.collect(tmp_path)


def test_a_law_needs_a_lesson_and_drawn_inputs(tmp_path):
    (tmp_path / "test_x.py").write_text(
        'import pytest\n\n\n@pytest.mark.law(lesson=11)\ndef test_y():\n    """S.\n\n'
        '    Source: s."""\n')
    with pytest.raises(ValueError, match="lesson=N"):
        catalogue.collect(tmp_path)
    (tmp_path / "test_x.py").write_text(
        'import pytest\n\n\n@pytest.mark.law(lesson=1)\ndef test_y():\n    """S.\n\n'
        '    Source: s."""\n')
    with pytest.raises(ValueError, match="@given"):
        catalogue.collect(tmp_path)


def _worked_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "docs/laws.md should show one worked example"
    return blocks[0]


def _run(source: str) -> None:
    namespace = {}
    exec(compile(source, str(DOC), "exec"), namespace)
    laws = [fn for name, fn in namespace.items() if name.startswith("test_")]
    assert len(laws) == 1
    laws[0]()  # hypothesis runs the examples


def test_the_worked_example_in_the_docs_runs_as_written():
    _run(_worked_example())


def test_the_worked_example_fails_when_its_formula_is_wrong():
    source = _worked_example()
    assert "-eta * s**2 * G" in source
    with pytest.raises(AssertionError):
        _run(source.replace("-eta * s**2 * G", "-eta * s * G"))  # s instead of s²


def test_examples_follow_the_loaded_profile():
    current = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    try:
        settings.load_profile("ci")
        assert examples(6).max_examples == 6
        settings.load_profile("thorough")
        assert examples(6).max_examples == 60 and settings.default.max_examples == 250
        assert settings.default.deadline is None
    finally:
        settings.load_profile(current)


def test_minilora_testing_without_hypothesis_names_the_extra_and_minilora_does_not_need_it():
    code = ("import sys\nsys.modules['hypothesis'] = None  # as if it were not installed\n"
            "import minilora, minilora.lora, minilora.model\n"
            "try:\n    import minilora.testing\nexcept ImportError as err:\n    print(err)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install 'minilora[test]'" in result.stdout and "hypothesis" in result.stdout


@pytest.mark.filterwarnings("ignore:.*exceeds min")  # r > min(m, n) on skinny layers: allowed
@examples(5)
@given(pair=adapter_pairs())
def test_adapter_pairs_on_disk_load_back_bit_for_bit(pair):
    """Each adapter of a drawn pair, saved and loaded into a fresh base, computes what it did."""
    with saved_adapters(pair.model) as folders:
        for name, folder in folders.items():
            pair.model.set_adapter(name)
            expected = pair.model(pair.x).data
            loaded = load_adapter(pair.build(), folder, name)
            assert_bits_equal(loaded(pair.x).data, expected)
            assert np.any(loaded.lora_layers()[0][1].delta_weight(name))  # ΔW ≠ 0: a real test
