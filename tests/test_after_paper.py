"""After the paper: learning vs forgetting and intruder mitigation (experiments/forgetting.py,
experiments/mitigation.py), and the observation-only ``RunSpec.also_eval`` they need; the
quick runs of the learning-rate sweep and capacity too (their other tests: test_lr_capacity.py).

Two quick runs of the group's experiments, one with two worker processes and one with one,
must write the same data files byte for byte (one BLAS
kernel); their findings are computed from the data (changing a number changes the text).
"""
import json
from dataclasses import replace

import pytest

from minilora import backend, tasks
from minilora.cli import main
from minilora.experiments import capacity, forgetting, lr_sweep, mitigation
from minilora.experiments.config import QUICK
from minilora.experiments.figures import run_experiments
from minilora.experiments import pretrain as pre
from minilora.experiments.runs import RunSpec, held_out_scores, run_one, run_specs
from minilora.model import GPT, GPTConfig

TINY = pre.PretrainConfig(model=GPTConfig(vocab_size=tasks.VOCAB_SIZE,
                                          block_size=tasks.BLOCK_SIZE, n_layer=1, n_head=2,
                                          n_embd=16), steps=3, batch_size=4, warmup=1,
                          eval_size=8)
NAMES = ("forgetting", "mitigation", "lr-sweep", "capacity")


@pytest.mark.lesson06
def test_also_eval_only_observes_and_leaves_every_key_as_it_was():
    a = RunSpec(TINY, "perm", "lora", ("q_proj",), 8, 0, 2, 1e-2)
    b = replace(a, also_eval=("copyrev",))
    assert a.key() == b.key() and a.init_seed() == b.init_seed()
    assert "also_eval" not in json.loads(a.key())  # keys made before the field are unchanged
    for bad in (["copyrev"], ("copy",), ("kv0",), (3,)):
        with pytest.raises(ValueError, match="also_eval"):
            replace(a, also_eval=bad)


@pytest.mark.lesson06
def test_one_run_per_key_observes_all_that_its_specs_ask(tmp_path):
    spec = RunSpec(TINY, "rev", "lora", ("q_proj",), 2, 0, 4, 1e-2, batch_size=4, eval_size=8)
    curve, held_out = replace(spec, eval_every=2), replace(spec, also_eval=("copyrev",))
    results: dict = {}
    out = run_specs([curve, held_out, spec], None, str(tmp_path), progress=False,
                    results=results)
    assert len(results) == 1 and out[0] is out[1] is out[2]
    assert [e["step"] for e in out[0]["curve"]] == [2, 4]
    assert set(out[0]["also_eval"]) == {"copyrev"}
    alone = run_one(spec, str(tmp_path))  # observing changed nothing of the run itself
    assert alone["accuracy"] == out[0]["accuracy"] and alone["train_loss"] == out[0]["train_loss"]


@pytest.mark.lesson06
def test_held_out_scores_split_by_flag():
    model = GPT(TINY.model, seed=0)
    rev, copyrev = (held_out_scores(model, task, 64, 0) for task in ("rev", "copyrev"))
    # rev asks copyrev's F1 answers of the same inputs: the F1 halves are the same sequences
    assert rev["F1"] == copyrev["F1"]
    assert rev["F0"] != copyrev["F0"]
    n0 = sum(int((backend.to_numpy(inputs)[:, 0] == tasks.F0).sum())
             for inputs, _ in tasks.eval_set("rev", 64))  # F0's sequences of the 64
    mixed = (rev["F0"]["accuracy"] * n0 + rev["F1"]["accuracy"] * (64 - n0)) / 64
    assert abs(mixed - rev["all"]["accuracy"]) < 1e-12


@pytest.mark.lesson06
def test_each_has_a_subcommand_and_runs_in_the_after_paper_group():
    from minilora.experiments.commands import EXPERIMENT_HELP
    from minilora.experiments.figures import AFTER_PAPER

    for name in NAMES:
        assert name in EXPERIMENT_HELP and name in AFTER_PAPER
    with pytest.raises(SystemExit):  # the subcommand exists and parses its options
        main([NAMES[0], "--help"])


@pytest.mark.lesson08
def test_full_fine_tunings_curve_is_read_between_its_cells():
    d = {"base": {"perm": {"learning": 0.0}}, "full_lrs": [1, 2], "runs": [
        {"task": "perm", "method": "full", "lr": lr, "learning": x, "forgetting": y,
         "effective_rank": {"q_proj": 1}} for lr, x, y in ((1, 0.5, 0.2), (2, 1.0, 0.8))]}
    assert forgetting.full_curve(d, "perm") == [(0.0, 0.0), (0.5, 0.2), (1.0, 0.8)]
    assert forgetting.against_full(d, "perm", 0.25) == pytest.approx((0.1, 0.1))
    assert forgetting.against_full(d, "perm", 0.75) == pytest.approx((0.5, 0.5))
    assert forgetting.against_full(d, "perm", 0.995) == (0.8, 0.8)  # within TIE of a cell
    assert forgetting.against_full(d, "perm", -0.1) is None
    d["runs"].append({**d["runs"][1], "lr": 3, "forgetting": 0.9})  # a tie at the ceiling
    d["full_lrs"].append(3)
    assert forgetting.against_full(d, "perm", 1.0) == (0.8, 0.9)
    assert forgetting.best_full(d, "perm") == ("full", 2)  # as much learned, less forgotten


@pytest.fixture(scope="module")
def two_quick_runs(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    outs = [tmp_path_factory.mktemp("after-jobs2"), tmp_path_factory.mktemp("after-jobs1")]
    mp = pytest.MonkeyPatch()
    mp.setenv("MINILORA_CACHE", str(cache))
    try:
        for out, jobs in zip(outs, (2, 1)):
            run_experiments(QUICK, NAMES, out, jobs=jobs, progress=False)
    finally:
        mp.undo()
    return outs


@pytest.mark.slow
@pytest.mark.lesson08
def test_quick_runs_write_figures_and_identical_data(two_quick_runs):
    first, second = two_quick_runs
    for stem in (*forgetting.FIGURES, *mitigation.FIGURES, *lr_sweep.FIGURES, *capacity.FIGURES):
        assert (first / f"{stem}.png").stat().st_size > 10_000
        for suffix in (".json", ".csv"):
            assert (first / f"{stem}{suffix}").read_bytes() == \
                (second / f"{stem}{suffix}").read_bytes(), stem
    assert (first / "FINDINGS.md").read_bytes() == (second / "FINDINGS.md").read_bytes()


@pytest.mark.slow
@pytest.mark.lesson08
def test_forgetting_findings_come_from_the_data(two_quick_runs):
    data = {"forgetting": json.loads((two_quick_runs[0] / "forgetting.json").read_text())}
    d = data["forgetting"]
    assert {run["method"] for run in d["runs"]} == {*d["targets"], "full"}
    assert len(d["runs"]) == len(d["tasks"]) * len(forgetting.cell_names(d)) * len(d["seeds"])
    for run in d["runs"]:  # a rank-r update has effective rank <= r
        if run["method"] != "full":
            assert all(1 <= k <= run["r"] for k in run["effective_rank"].values())
        assert run["forgetting"] == d["base"][run["task"]]["retained"] - run["retained"]
    text = forgetting.findings(data)
    first = d["runs"][0]
    assert forgetting._range(forgetting.summary(d, first["task"], first["method"],
                                                first["r"]
                                                if first["method"] != "full" else first["lr"])
                             ["learning"]) in text
    for run in d["runs"]:
        run["forgetting"] = 0.0 if run["method"] != "full" else run["forgetting"]
    assert forgetting.findings(data) != text


@pytest.mark.slow
@pytest.mark.lesson08
def test_mitigation_at_lambda_one_changes_nothing_and_findings_come_from_data(two_quick_runs):
    data = {"mitigation": json.loads((two_quick_runs[0] / "mitigation.json").read_text())}
    d = data["mitigation"]
    assert 0.75 in d["lambdas"] and len(d["rows"]) == (
        len(d["tasks"]) * len(d["targets"]) * len(d["ranks"]) * len(d["seeds"]) * len(d["lambdas"]))
    tokens = json.loads((two_quick_runs[0] / "forgetting.json").read_text())["eval_size"] * \
        tasks.SEQ_LEN
    for row in d["rows"]:
        assert 0 <= row["intruders_merged"] <= d["top_k"] * row["matrices"]
        if row["lambda"] == 1.0:  # ΔW refactored to its own rank: the same model to rounding
            assert abs(row["lost"]) <= 2 / tokens and abs(row["recovered"]) <= 2 / tokens
    text = mitigation.findings(data)
    for row in d["rows"]:
        row["recovered"] += 0.5
    assert mitigation.findings(data) != text


@pytest.mark.slow
@pytest.mark.lesson06
def test_lr_sweep_and_capacity_findings_come_from_the_data(two_quick_runs):
    data = {"lr_sweep": json.loads((two_quick_runs[0] / "lr_sweep.json").read_text())}
    d = data["lr_sweep"]
    for c in d["curves"]:  # the winner is the grid's lowest mean validation loss
        means = {lr: sum(c["val_loss"][repr(lr)]) / len(c["val_loss"][repr(lr)])
                 for lr in c["grid"]}
        assert c["best_lr"] == min(means, key=means.get)
        assert c["edge"] == (c["best_lr"] in (min(c["grid"]), max(c["grid"])))
    text = lr_sweep.findings(data)
    lr_sweep.pick(d, "full")["best_lr"] *= 2
    assert lr_sweep.findings(data) != text
    cap = {"capacity": json.loads((two_quick_runs[0] / "capacity.json").read_text())}
    assert len(cap["capacity"]["cells"]) == len(QUICK.capacity_pairs) * (
        len(QUICK.capacity_ranks) + 1)
    assert capacity.findings(cap) in (two_quick_runs[0] / "FINDINGS.md").read_text()
