"""Sweeps on a real Dask cluster: ``--scheduler`` gives the same data files, byte for byte.

Needs the cluster extra (``pip install -e ".[cluster]"``: Dask's distributed); skipped without it.
"""
import pytest

distributed = pytest.importorskip("distributed", reason="cluster runs need the cluster extra: "
                                                        "pip install -e '.[cluster]'")

from minilora.cli import main  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.lesson06, pytest.mark.slow]

EXPERIMENTS = ["curves", "variants"]  # a sweep experiment and a variant one: both kinds of run


def data_files(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".json", ".csv")}


def test_a_local_cluster_writes_the_bytes_a_local_run_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILORA_CACHE", str(tmp_path / "cache"))  # the workers inherit it
    for name in EXPERIMENTS:
        assert main([name, "--quick", "--no-progress", "--jobs", "2",
                     "--out", str(tmp_path / "local")]) == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        for name in EXPERIMENTS:
            assert main([name, "--quick", "--no-progress", "--scheduler", cluster.scheduler_address,
                         "--out", str(tmp_path / "cluster")]) == 0
        ran = set(cluster.scheduler.task_prefixes)  # the runs happened there, not here
    assert {"run_one", "run_variant"} <= ran, ran
    local, remote = data_files(tmp_path / "local"), data_files(tmp_path / "cluster")
    assert local and list(local) == list(remote)
    for name in local:
        assert local[name] == remote[name], f"{name} differs between a local run and the cluster"


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="cannot reach the scheduler"):
        main(["memory", "--quick", "--no-progress", "--scheduler", "tcp://127.0.0.1:1",
              "--out", str(tmp_path)])
