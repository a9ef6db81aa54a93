"""Synthetic tasks, the pretraining cache and the sweep runner (tasks.py, experiments/)."""
import json
from dataclasses import replace

import numpy as np
import pytest

from minilora import tasks
from minilora.experiments import pretrain as pre
from minilora.experiments.runs import RunSpec, process_pool, run_specs
from minilora.model import GPTConfig
from minilora.train import IGNORE_INDEX

pytestmark = pytest.mark.lesson06

TINY = pre.PretrainConfig(model=GPTConfig(vocab_size=tasks.VOCAB_SIZE,
                                          block_size=tasks.BLOCK_SIZE, n_layer=1, n_head=2,
                                          n_embd=16), steps=3, batch_size=4, warmup=1,
                          eval_size=8)


def test_tasks_define_y_as_documented():
    x = np.array([[1, 2, 3, 4, 5, 6, 7, 8]] * 2)
    flags = np.array([tasks.F0, tasks.F1])
    rev = x[:, ::-1]
    np.testing.assert_array_equal(tasks.answers("copyrev", x, flags), [x[0], rev[1]])
    np.testing.assert_array_equal(tasks.answers("rev", x, flags), rev)
    np.testing.assert_array_equal(tasks.answers("perm", x, flags), tasks.PI[[x[0], rev[1]]])
    with pytest.raises(ValueError, match="unknown task"):
        tasks.answers("sort", x, flags)


def test_pi_is_a_derangement_of_high_rank():
    assert sorted(tasks.PI) == list(range(tasks.N_CONTENT))
    assert not np.any(tasks.PI == np.arange(tasks.N_CONTENT))
    P = np.eye(tasks.N_CONTENT)[tasks.PI]
    assert np.linalg.matrix_rank(P - np.eye(tasks.N_CONTENT)) > tasks.N_CONTENT - 10


def test_targets_cover_y_only_and_batches_are_keyed():
    inputs, targets = tasks.batch("perm", 5, seed=3, step=7)
    assert inputs.shape == targets.shape == (5, 2 * tasks.SEQ_LEN + 1)
    assert np.all(targets[:, :tasks.SEQ_LEN + 1] == IGNORE_INDEX)
    assert np.all((targets[:, tasks.SEQ_LEN + 1:] >= 0) & (targets[:, tasks.SEQ_LEN + 1:] < 64))
    assert np.all(inputs[:, tasks.SEQ_LEN + 1] == tasks.SEP)
    again = tasks.batch("perm", 5, seed=3, step=7)
    np.testing.assert_array_equal(inputs, again[0])
    assert not np.array_equal(inputs, tasks.batch("perm", 5, seed=3, step=8)[0])
    # the same sources and flags for every task: only the answers differ
    np.testing.assert_array_equal(inputs[:, :tasks.SEQ_LEN + 2],
                                  tasks.batch("rev", 5, seed=3, step=7)[0][:, :tasks.SEQ_LEN + 2])


def test_eval_set_is_disjoint_stream_from_training():
    ev = tasks.eval_set("rev", 8, seed=0, batch_size=4)
    assert len(ev) == 2
    assert not np.array_equal(ev[0][0], tasks.batch("rev", 4, seed=0, step=0)[0])


def test_pretrain_cache_roundtrip_and_invalidation(tmp_path):
    model, info = pre.load_or_pretrain(TINY, tmp_path)
    weights, meta = pre.paths(TINY, tmp_path)
    assert weights.exists() and meta.exists() and not list(tmp_path.glob(".*tmp"))
    assert json.loads(meta.read_text())["digest"] == TINY.digest()
    stamp = weights.stat().st_mtime_ns
    again, info2 = pre.load_or_pretrain(TINY, tmp_path)  # read, not retrained
    assert weights.stat().st_mtime_ns == stamp and info2["sha256"] == info["sha256"]
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    weights.write_bytes(weights.read_bytes()[:-4] + b"oops")  # a damaged file is not trusted
    _, info3 = pre.load_or_pretrain(TINY, tmp_path)
    assert info3["sha256"] == info["sha256"]
    assert replace(TINY, steps=4).digest() != TINY.digest()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MINILORA_CACHE", str(tmp_path))
    assert pre.cache_dir() == tmp_path
    monkeypatch.delenv("MINILORA_CACHE")
    assert pre.cache_dir().name == ".minilora-cache"


def test_each_run_draws_its_own_init():
    a = RunSpec(TINY, "rev", "lora", ("q_proj",), 8, 0, 2, 1e-2)
    assert a.init_seed() != replace(a, r=64).init_seed() != replace(a, seed=1).init_seed()
    assert a.key() == replace(a, eval_every=1).key()  # observing does not change the run


def test_results_do_not_depend_on_the_executor(tmp_path):
    specs = [RunSpec(TINY, task, "lora", ("q_proj", "v_proj"), r, seed, 3, 1e-2, batch_size=4,
                     eval_size=8) for task in ("rev", "perm") for r in (1, 2) for seed in (0, 1)]
    specs.append(RunSpec(TINY, "perm", "full", steps=3, lr=3e-3, batch_size=4, eval_size=8))
    here = run_specs(specs, None, str(tmp_path), progress=False)
    # processes, not threads: no_grad() is a process-wide switch in the engine
    with process_pool(2) as pool:
        pooled = run_specs(list(reversed(specs)), pool, str(tmp_path), progress=False)[::-1]
    for a, b in zip(here, pooled):
        assert a["key"] == b["key"] and a["accuracy"] == b["accuracy"]
        assert a["train_loss"] == b["train_loss"]
        for path in a["weights"]:
            for name, value in a["weights"][path].items():
                np.testing.assert_array_equal(value, b["weights"][path][name])


def test_an_out_folder_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch):
    from minilora.cli import main

    monkeypatch.setenv("MINILORA_CACHE", str(tmp_path / "cache"))
    blocker = tmp_path / "figures"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(SystemExit, match="is a file, not a folder"):
            main(["figures", "--quick", "--out", str(out), "--no-progress"])
    assert not (tmp_path / "cache").exists()  # refused before pretraining started
    assert blocker.read_text() == "not a folder"


def test_the_tuning_grid_grows_past_an_edge_winner_until_it_is_bracketed():
    from minilora.experiments.common import (choose_lrs, extend_grids, first_grids,
                                             tuning_spec)
    from minilora.experiments.config import QUICK

    grids = first_grids(QUICK)
    assert grids and all(task == "perm" and label in QUICK.tasks["perm"].tuned_rows
                         for task, label, _ in grids)

    def fake(peak):  # validation accuracy peaks at lr = peak; one cell at chance everywhere
        results = {}
        for (task, label, r), grid in grids.items():
            for lr in grid:
                for seed in QUICK.tuning_seeds:
                    acc = 0.01 if r == 1 else 0.9 - abs(lr - peak) * 10
                    results[tuning_spec(QUICK, task, label, r, lr, seed).key()] = \
                        {"accuracy": acc, "loss": 1 - acc}
        return results

    for _ in range(3):  # the best rate is 4e-2, beyond the first grid's top
        chosen, table = choose_lrs(QUICK, grids, fake(4e-2))
        grids = extend_grids(QUICK, grids, chosen)
    learned = {cell: c for cell, c in chosen.items() if cell[2] != 1}
    assert all(c["lr"] == 4e-2 and not c["edge"] and c["learns"] for c in learned.values())
    stuck = [c for cell, c in chosen.items() if cell[2] == 1]
    assert stuck and all(not c["learns"] for c in stuck)  # nothing learns: no growth
    assert all(grids[cell] == [1e-2, 2e-2] for cell in grids if cell[2] == 1)
    assert {row["lr"] for row in table} >= {1e-2, 2e-2, 4e-2, 8e-2}
