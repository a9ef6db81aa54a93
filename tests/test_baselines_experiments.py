"""The baselines in the sweep: RunSpec's methods and finite training sets (experiments/runs.py,
tasks.py), Figure 2 (experiments/baselines_budget.py), the data-size sweep (data_size.py).

Each method's run trains only that method's parameters, as many as its formula says; a finite
training set is the same for one seed and every batch comes from it; the keys of the runs made
before these fields existed are unchanged; two quick runs (two worker processes, one) write
the same data byte for byte and their findings are computed from the data.
"""
import json
from dataclasses import replace

import numpy as np
import pytest

from minilora import backend, tasks
from minilora.baselines.adapter_layers import adapter_parameter_count
from minilora.baselines.bitfit import apply_bitfit, bitfit_parameter_count
from minilora.baselines.prefix import prefix_parameter_count
from minilora.cli import main
from minilora.experiments import baselines_budget, data_size
from minilora.experiments import pretrain as pre
from minilora.experiments.config import QUICK
from minilora.experiments.figures import BASELINES, run_experiments
from minilora.experiments.runs import METHODS, RunSpec, _base_model, _batches, run_one
from minilora.model import GPT, GPTConfig
from minilora.optim import AdamW
from minilora.train import loss_fn

pytestmark = pytest.mark.lesson09

TINY = pre.PretrainConfig(model=GPTConfig(vocab_size=tasks.VOCAB_SIZE,
                                          block_size=tasks.BLOCK_SIZE, n_layer=2, n_head=2,
                                          n_embd=16), steps=3, batch_size=4, warmup=1,
                          eval_size=8)
D, L, M = 16, 2, 4  # TINY's d_model, layers, MLP ratio


def _formula(method: str, r: int) -> tuple[int, str]:
    """(trainable count by the method's formula, what every trainable name contains)."""
    cfg = TINY.model
    return {"lora": (L * 2 * (2 * D * r), "lora_"),  # {Wq, Wv}: A (r, d) and B (d, r) each
            "bitfit": (bitfit_parameter_count(cfg), "bias"),
            "prefix-embed": (prefix_parameter_count(cfg, "embed", r), "fix"),
            "prefix-layer": (prefix_parameter_count(cfg, "layer", r), "fix"),
            "adapter-h": (adapter_parameter_count(D, L, "H", r), "adapter"),
            "adapter-l": (adapter_parameter_count(D, L, "L", r), "adapter"),
            "full": (GPT(cfg).num_parameters(), "")}[method]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_trains_only_its_parameters_as_many_as_its_formula(method, tmp_path):
    r = 3
    spec = RunSpec(TINY, "rev", method, ("q_proj", "v_proj") if method == "lora" else (), r, 0,
                   2, 1e-2, batch_size=4, eval_size=8)
    count, marker = _formula(method, r)
    model = METHODS[method](_base_model(TINY, str(tmp_path)), spec)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for n, p in model.named_parameters() if n in trainable) == count
    assert all(marker in n for n in trainable)
    before = {n: backend.to_numpy(p.data).copy() for n, p in model.named_parameters()}
    optimizer = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    inputs, targets = _batches(spec)(0)
    loss_fn(model, inputs, targets).backward()
    optimizer.step()
    moved = {n for n, p in model.named_parameters()
             if not np.array_equal(before[n], backend.to_numpy(p.data))}
    assert moved and moved <= trainable  # every frozen weight keeps its bytes
    assert run_one(spec, str(tmp_path))["trainable"] == count


def test_an_unknown_method_or_bad_train_size_is_refused_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'prefix'"):
        run_one(RunSpec(TINY, "rev", "prefix", r=2, steps=1, lr=1e-2), str(tmp_path))
    for bad in (-1, True, 2.0):
        with pytest.raises(ValueError, match="train_size"):
            RunSpec(TINY, "rev", "full", train_size=bad)


def test_train_size_enters_the_key_only_when_set():
    spec = RunSpec(TINY, "rev", "lora", ("q_proj",), 8, 0, 2, 1e-2)
    before = {"base", "task", "method", "targets", "r", "seed", "steps", "lr", "warmup", "betas",
              "batch_size", "lora_alpha", "eval_size", "eval_seed", "eval_every"}
    assert set(json.loads(spec.key())) == before  # the fields keys had before train_size
    finite = replace(spec, train_size=64)
    assert json.loads(finite.key())["train_size"] == 64
    assert finite.init_seed() != spec.init_seed()


def test_a_finite_training_set_is_fixed_by_its_seed_and_every_batch_comes_from_it():
    a, b = tasks.train_set("rev", 16, 0), tasks.train_set("rev", 16, 0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, tasks.train_set("rev", 16, 1))
    rows = {tuple(row[:-1]) for row in a}  # inputs are seq[:, :-1]
    get = tasks.finite_batch_fn("rev", 32, 0, 16)
    seen = set()
    for step in range(5):
        inputs, _ = get(step)
        batch = {tuple(row) for row in backend.to_numpy(inputs)}
        assert batch <= rows
        seen |= batch
    assert len(seen) > 8  # many of the 16, not one repeated
    stream = {tuple(r) for r in backend.to_numpy(tasks.batch("rev", 32, 0, 0)[0])}
    assert not stream & rows  # the fresh stream is another draw
    with pytest.raises(ValueError, match="train_set: n"):
        tasks.train_set("rev", 0, 0)


def test_baseline_tuning_runs_score_the_validation_set_and_the_choice_is_bracketed():
    from minilora.experiments.common import choose_lrs, extend_grids

    grids = baselines_budget.first_grids(QUICK)
    assert {label for _, label, _ in grids} == {label for label, _ in QUICK.baseline_budgets}
    spec_of = baselines_budget.tuning_spec
    assert all(spec_of(QUICK, *cell, 1e-2, 100).eval_seed == 1 for cell in grids)
    for _ in range(4):  # validation accuracy peaks at 3x each grid's top
        peak = {cell: 3 * max(dict(QUICK.baseline_lr_grids)[cell[1]]) for cell in grids}
        results = {spec_of(QUICK, *cell, lr, s).key(): {"accuracy": 0.9 - abs(lr / peak[cell] - 1),
                                                        "loss": 0.0}
                   for cell, grid in grids.items() for lr in grid for s in QUICK.tuning_seeds}
        chosen, _ = choose_lrs(QUICK, grids, results, spec_of)
        grids = extend_grids(replace(QUICK, lr_extensions=3), grids, chosen)
    assert all(not c["edge"] for c in chosen.values())


def test_each_has_a_subcommand_and_runs_in_the_baselines_group():
    from minilora.experiments.commands import EXPERIMENT_HELP

    assert set(BASELINES) == {"baselines-budget", "data-size"} <= set(EXPERIMENT_HELP)
    for argv in (["baselines-budget", "--help"], ["tune", "--baselines", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)


@pytest.fixture(scope="module")
def two_quick_runs(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    outs = [tmp_path_factory.mktemp("baselines-jobs2"), tmp_path_factory.mktemp("baselines-jobs1")]
    mp = pytest.MonkeyPatch()
    mp.setenv("MINILORA_CACHE", str(cache))
    try:
        for out, jobs in zip(outs, (2, 1)):
            run_experiments(QUICK, list(BASELINES), out, jobs=jobs, progress=False)
    finally:
        mp.undo()
    return outs


@pytest.mark.slow
def test_quick_runs_write_figures_and_identical_data(two_quick_runs):
    first, second = two_quick_runs
    for stem in (*baselines_budget.FIGURES, *data_size.FIGURES):
        assert (first / f"{stem}.png").stat().st_size > 10_000
        for suffix in (".json", ".csv"):
            assert (first / f"{stem}{suffix}").read_bytes() == \
                (second / f"{stem}{suffix}").read_bytes(), stem
    assert (first / "FINDINGS.md").read_bytes() == (second / "FINDINGS.md").read_bytes()


@pytest.mark.slow
def test_figure_2_has_every_cell_and_its_findings_come_from_the_data(two_quick_runs):
    data = {"baselines_budget": json.loads((two_quick_runs[0] / "baselines_budget.json").read_text())}
    d = data["baselines_budget"]
    cells = {(row["task"], row["method"], row["budget"]) for row in d["rows"]}
    assert cells == {(t, label, b) for t in QUICK.tasks for label, budgets in QUICK.baseline_budgets
                     for b in budgets}
    for row in d["rows"]:
        assert len(row["accuracy"]) == len(QUICK.seeds)
        if row["method"] == "BitFit":
            assert row["trainable"] == bitfit_parameter_count(QUICK.base.model)
    text = baselines_budget.findings(data)
    ft = next(row for row in d["rows"] if row["method"] == "FT" and row["task"] == "rev")
    ft["accuracy"] = [1.0] * len(ft["accuracy"])  # FT now beats every cell
    changed = baselines_budget.findings(data)
    assert changed != text and "none of the parameter-efficient methods reach FT's mean (1.0" \
        in changed


@pytest.mark.slow
def test_data_size_trains_on_finite_sets_and_its_verdicts_come_from_the_data(two_quick_runs):
    data = {"data_size": json.loads((two_quick_runs[0] / "data_size.json").read_text())}
    d = data["data_size"]
    assert {row["train_size"] for row in d["rows"]} == {*QUICK.data_sizes, 0}
    small = [row for row in d["rows"] if row["train_size"] == QUICK.data_sizes[0]]
    stream = [row for row in d["rows"] if row["train_size"] == 0]
    assert all(row["curves"] and len(row["curves"][0]) == len(row["curve_steps"]) for row in small)
    # 30 steps of 32 over 16 sequences: FT fits them better than the stream's loss
    ft_small, ft_stream = (next(r for r in rows if r["method"] == "FT") for rows in (small, stream))
    assert np.mean(ft_small["train_loss"]) < np.mean(ft_stream["train_loss"])
    for row in d["rows"]:
        if row["method"] == "FT":
            row["accuracy"] = [0.0] * len(row["accuracy"])  # LoRA now ahead everywhere
    assert "LoRA ahead on 2/2 seeds at n = 16, 2/2 seeds at n = 256, 2/2 seeds at n = ∞" in \
        data_size.findings(data)
