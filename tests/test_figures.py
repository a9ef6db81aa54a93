"""``minilora figures --quick`` makes every figure with its data, the same data every time.

Two quick runs into fresh folders, one with two worker processes and one in this process: the
data files (and FINDINGS.md, written from them) must match byte for byte: runs are seeded by
their keys, not by order or worker. Both runs use the same BLAS kernel; across kernels the
bytes differ (environment.json says which kernel made a folder).
"""
import pytest

from minilora.cli import main
from minilora.experiments.figures import EXPERIMENTS, TIMINGS, VARIANTS

pytestmark = [pytest.mark.lesson06, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_quick_runs(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    outs = [tmp_path_factory.mktemp("figures-jobs2"), tmp_path_factory.mktemp("figures-jobs1")]
    mp = pytest.MonkeyPatch()
    mp.setenv("MINILORA_CACHE", str(cache))
    try:
        for out, jobs in zip(outs, (2, 1)):
            assert main(["figures", "--quick", "--out", str(out), "--jobs", str(jobs),
                         "--no-progress"]) == 0
    finally:
        mp.undo()
    return outs


def test_every_figure_and_its_data_file_is_made(two_quick_runs):
    out = two_quick_runs[0]
    for name, module in EXPERIMENTS.items():
        for stem in module.FIGURES:
            assert (out / f"{stem}.png").stat().st_size > 10_000, (name, stem)
            assert (out / f"{stem}.json").stat().st_size > 0, (name, stem)
    for name in [*VARIANTS, *TIMINGS]:  # the "after LoRA" figures, latency: the name is the stem
        assert (out / f"{name}.png").stat().st_size > 10_000, name
        assert (out / f"{name}.json").stat().st_size > 0, name
    for png in out.glob("*.png"):
        assert png.with_suffix(".json").exists() or png.with_suffix(".csv").exists(), png


def test_two_runs_give_identical_data_files(two_quick_runs):
    """Every data file but the timings' (latency.json/.csv: measurements of this machine)."""
    first, second = two_quick_runs
    data = sorted(p.name for p in first.iterdir() if p.suffix in (".json", ".csv", ".md"))
    assert "FINDINGS.md" in data and "environment.json" in data
    assert data == sorted(p.name for p in second.iterdir()
                          if p.suffix in (".json", ".csv", ".md"))
    timed = {f"{name}{suffix}" for name in TIMINGS for suffix in (".json", ".csv")}
    assert timed <= set(data)
    for name in sorted(set(data) - timed):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
