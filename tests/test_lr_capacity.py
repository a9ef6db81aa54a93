"""After the paper: the learning rate LoRA needs and capacity (experiments/lr_sweep.py,
experiments/capacity.py), and ``RunSpec.use_rslora`` (α/√r) they need.

The sweep's choices (grid growth past an edge winner, the winners' reported seeds) are checked
on made-up losses, where the right answer is known. The quick runs (byte-identical across
--jobs, findings from the data) are in test_after_paper.py, with the group's other experiments.
"""
import json
import math
from dataclasses import replace

import pytest

from minilora import tasks
from minilora.experiments import capacity, lr_sweep
from minilora.experiments.config import QUICK
from minilora.experiments import pretrain as pre
from minilora.experiments.runs import RunSpec, run_one
from minilora.model import GPTConfig

TINY = pre.PretrainConfig(model=GPTConfig(vocab_size=tasks.VOCAB_SIZE,
                                          block_size=tasks.BLOCK_SIZE, n_layer=1, n_head=2,
                                          n_embd=16), steps=3, batch_size=4, warmup=1,
                          eval_size=8)


@pytest.mark.lesson06
def test_use_rslora_enters_the_key_only_when_set(tmp_path):
    a = RunSpec(TINY, "rev", "lora", ("q_proj",), 4, 0, 2, 1e-2, batch_size=4, eval_size=8)
    b = replace(a, use_rslora=True)
    assert "use_rslora" not in json.loads(a.key())  # keys made before the field are unchanged
    assert json.loads(b.key())["use_rslora"] is True and a.init_seed() != b.init_seed()
    with pytest.raises(ValueError, match="use_rslora"):
        replace(a, use_rslora=1)
    scalings = {s.use_rslora: {w["scaling"] for w in run_one(s, str(tmp_path))["weights"].values()}
                for s in (a, b)}
    assert scalings == {False: {8.0 / 4}, True: {8.0 / math.sqrt(4)}}


def _setup(**kw):
    return replace(QUICK, sweep_ranks=(1, 4), sweep_lora_lrs=(1e-2, 2e-2, 4e-2),
                   sweep_full_lrs=(1e-3, 2e-3, 4e-3), sweep_extensions=2, **kw)


def _fill(setup, loss_of, results: dict) -> int:
    """Give every run the sweep asks for a made-up loss; returns the number of stages."""
    stages = 0
    while missing := lr_sweep.more_specs(setup, None, results):
        for s in missing:
            results[s.key()] = {"loss": loss_of(s), "accuracy": 1.0 - loss_of(s) / 10}
        stages += 1
    return stages


@pytest.mark.lesson06
def test_the_grid_grows_past_an_edge_winner_until_the_best_rate_is_bracketed():
    setup = _setup()
    # LoRA's loss is lowest at 8e-2 (past the first grid's top edge), full's at 2e-3 (inside):
    # LoRA's grid grows to 8e-2 (still the edge), then to 1.6e-1, which brackets it
    best = {"lora": 8e-2, "full": 2e-3}
    loss_of = lambda s: 1 + abs(math.log2(s.lr / best[s.method])) + 0.01 * s.seed  # noqa: E731
    results: dict = {}
    assert _fill(setup, loss_of, results) == 4  # grid, two extensions, the winners' seeds
    d = lr_sweep.compute(setup, None, results)["lr_sweep"]
    for c in d["curves"]:
        assert c["best_lr"] == pytest.approx(best[c["method"]]) and not c["edge"]
        assert c["extended"] == ([] if c["method"] == "full" else [4e-2 * 2, 4e-2 * 4])
        assert len(c["test_loss"]) == len(setup.seeds)  # the reported seeds, on the test set
    assert lr_sweep.ratios(d)["α/r"][4] == pytest.approx(40.0)
    text = lr_sweep.findings({"lr_sweep": d})
    assert "40× at r=4" in text and "Every best rate is bracketed" in text
    # both scalings name the same run at r = 1 (s = α either way)
    assert lr_sweep.pick(d, "lora", 1, True) is lr_sweep.pick(d, "lora", 1, False)


@pytest.mark.lesson06
def test_a_winner_still_at_an_edge_after_every_extension_is_said():
    setup = _setup()
    results: dict = {}
    _fill(setup, lambda s: 1 / s.lr if s.method == "lora" else 1.0 + s.lr, results)
    d = lr_sweep.compute(setup, None, results)["lr_sweep"]
    lora = lr_sweep.pick(d, "lora", 4)
    assert lora["edge"] and lora["best_lr"] == pytest.approx(4e-2 * 2 ** 2)
    assert len(lora["extended"]) == setup.sweep_extensions
    full = lr_sweep.pick(d, "full")
    assert full["edge"] and full["best_lr"] == pytest.approx(1e-3 / 4)
    assert "Not bracketed" in lr_sweep.findings({"lr_sweep": d})
    with pytest.raises(ValueError, match="missing"):
        lr_sweep.compute(setup, None, {})


@pytest.mark.lesson06
def test_capacity_asks_every_pair_equally_and_reads_behind_from_the_data():
    assert capacity.eval_size(QUICK, 64) == 256 and capacity.eval_size(QUICK, 100) == 300
    setup = replace(QUICK, capacity_pairs=(16, 64, 256), capacity_ranks=(1, 8))
    acc = {("lora", 1): (1.0, 0.3, 0.1), ("lora", 8): (1.0, 0.99, 0.2), ("full", 0): (1.0, 1.0, 0.5)}
    results = {capacity.spec(setup, n, m, r, s).key():
               {"accuracy": acc[(m, r)][i] - 0.01 * s, "loss": 1.0, "trainable": 10}
               for i, n in enumerate(setup.capacity_pairs)
               for m, r in capacity.methods(setup) for s in setup.seeds}
    data = capacity.compute(setup, None, results)
    d = data["capacity"]
    assert capacity.first_behind(d, 1) == 64 and capacity.first_behind(d, 8) == 256
    text = capacity.findings(data)
    assert "at every N ≥ 64" in text and "at every N ≥ 256" in text
    capacity.pick(d, 256, "full")["accuracy"] = [0.1, 0.1]  # full fine-tuning fails there too
    assert capacity.first_behind(d, 8) is None and capacity.findings(data) != text
