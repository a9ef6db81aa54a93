"""Text equals data: the README's findings blocks and figures/FINDINGS.md are what the committed
data files give (``minilora findings --write-readme`` regenerates them; nothing is rerun)."""
from pathlib import Path

import pytest

from minilora.cli import main
from minilora.experiments import findings
from minilora.experiments.figures import findings_registry

pytestmark = pytest.mark.lesson06

ROOT = Path(__file__).resolve().parents[1]
FIGURES, README = ROOT / "figures", ROOT / "README.md"
ALL = {**findings_registry(), **findings_registry(timings=True)}  # the README states both kinds


def test_readme_blocks_equal_what_the_committed_data_gives():
    text = README.read_text()
    blocks = findings.readme_blocks(text)
    assert {"rank-ablation", "curves"} <= set(blocks), sorted(blocks)
    generated = findings.readme_blocks(findings.render_readme(text, findings.sections(FIGURES, ALL)))
    for name, body in blocks.items():
        assert body == generated[name], (
            f"README block {name!r} differs from figures/ data: run "
            f"`minilora findings --write-readme`")


def test_findings_md_equals_what_the_committed_data_gives():
    expected = findings.findings_markdown(findings.sections(FIGURES, findings_registry()))
    assert (FIGURES / "FINDINGS.md").read_text() == expected


def test_a_block_is_rewritten_and_a_block_without_data_is_refused(tmp_path):
    found = {"demo": "new text\n"}
    text = "intro\n<!-- findings:demo -->\nold text\n<!-- /findings:demo -->\nrest\n"
    assert findings.render_readme(text, found) == \
        "intro\n<!-- findings:demo -->\nnew text\n<!-- /findings:demo -->\nrest\n"
    with pytest.raises(ValueError, match="other"):
        findings.render_readme(text.replace("demo", "other"), found)


def test_the_check_command_fails_on_a_stale_block(tmp_path, capsys):
    readme = tmp_path / "README.md"
    stale = README.read_text().replace("<!-- findings:rank-ablation -->\n",
                                       "<!-- findings:rank-ablation -->\nstale line\n", 1)
    readme.write_text(stale)
    assert main(["findings", "--out", str(FIGURES), "--readme", str(readme), "--check"]) == 1
    assert "block rank-ablation" in capsys.readouterr().out
    readme.write_text(README.read_text())
    assert main(["findings", "--out", str(FIGURES), "--readme", str(readme), "--check"]) == 0


def test_fmt_writes_table_numbers():
    assert findings.fmt(0.9976) == ".998" and findings.fmt(0.99996) == "1.0"
    assert findings.fmt(0.02, 4) == ".0200"
