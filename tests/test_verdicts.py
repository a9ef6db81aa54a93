"""The verdicts the README states are computed by code: that code, on inputs with known answers."""
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings, strategies as st

from minilora import analysis
from minilora.experiments import delta_w, intruders, latency, subspace

pytestmark = [pytest.mark.lesson07, pytest.mark.lesson08]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=3, max_size=12), st.integers(0, 2 ** 16))
def test_spearman_matches_scipy(x, seed):
    y = list(np.random.default_rng(seed).integers(0, 4, len(x)))
    if len(set(x)) == 1 or len(set(y)) == 1:  # a constant sequence: no ranks to correlate
        assert intruders.spearman(x, y) == 0.0
    else:
        expected = scipy.stats.spearmanr(x, y)[0]
        assert intruders.spearman(x, y) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.integers(6, 16), st.integers(0, 2 ** 16))
def test_amplification_of_a_fixed_update_never_rises_with_r(n, seed):
    """Why full fine-tuning's amplification falls with r: U_r, V_r are nested, so ‖U_rᵀWV_r‖_F
    (a growing corner of one matrix) never falls, and ‖ΔW‖_F / ‖U_rᵀWV_r‖_F never rises."""
    rng = np.random.default_rng(seed)
    W, dW = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    amp = [analysis.amplification_factor(W, dW, r) for r in range(1, n + 1)]
    assert all(a >= b * (1 - 1e-9) for a, b in zip(amp, amp[1:]))


def test_amplification_two_ways():
    rows = [{"from_delta_w": 1.0, "from_w": 2.0, "random": 0.1, "w_norm": 3.0,
             "delta_w_norm": 4.0, "amplification": 4.0, "seed": 0},
            {"from_delta_w": 3.0, "from_w": 2.0, "random": 0.1, "w_norm": 3.0,
             "delta_w_norm": 6.0, "amplification": 2.0, "seed": 1}]
    s = delta_w.summarize(rows)
    assert s["amplification"] == 3.0  # the mean of the per-seed ratios
    assert s["amplification_of_means"] == 5.0 / 2.0  # the ratio of the columns' means
    assert (s["amplification_min"], s["amplification_max"], s["seeds"]) == (2.0, 4.0, 2)


def test_seed_verdicts_and_excess():
    d = 100
    chance = [(i + 1) / d for i in range(8)]
    high = [c + 0.5 for c in chance]
    assert subspace.excess(high, d) == pytest.approx(0.5)
    assert subspace.excess(chance, d) == pytest.approx(0.0)
    diagonals = {f"t layers.{layer}.{m}": {"0-1": high if m == "q_proj" else chance}
                 for layer in (0, 1) for m in ("q_proj", "v_proj")}
    comparison = subspace.seed_comparison(diagonals, d)
    assert subspace.seed_verdicts(comparison) == {"t": "holds"}
    diagonals["t layers.1.v_proj"]["0-1"] = [h + 0.1 for h in high]
    assert subspace.seed_verdicts(subspace.seed_comparison(diagonals, d)) == {"t": "mixed"}


def _latency_data(overhead):
    """Synthetic timings: base 10 ms; each model's overhead (%) per batch."""
    rows = [{"model": m, "batch": b, "seq": 8, "mean_ms": 10.0, "std_ms": 0.1,
             "median_ms": 10.0, "overhead_pct": overhead.get(m, {}).get(b, 0.0),
             "overhead_ci_pct": 0.5} for m in latency.MODELS for b in (1, 32)]
    return {"batch_sizes": [1, 32], "seq_lens": [8], "rows": rows,
            "parameters": {"base": 10, "LoRA merged": 10}}


def test_latency_verdicts_follow_the_data():
    paper = _latency_data({"AdapterH": {1: 30.0, 32: 3.0}, "AdapterL": {1: 20.0, 32: 2.0},
                           "LoRA unmerged": {1: 5.0, 32: 1.0}})
    assert all(latency.verdicts(paper).values())
    flat = _latency_data({"AdapterH": {1: 3.0, 32: 3.0}, "AdapterL": {1: 2.0, 32: 2.0},
                          "LoRA merged": {1: 4.0}})
    held = latency.verdicts(flat)
    assert not held["adapters' relative overhead is larger at batch 1 than at batch 32"]
    merged = next(k for k in held if k.startswith("merged LoRA adds no latency"))
    assert not held[merged]  # +4% at batch 1: beyond noise
    faster = _latency_data({"AdapterH": {1: 3.0, 32: 3.0}, "LoRA merged": {1: -4.0}})
    assert latency.verdicts(faster)[merged]  # running faster than itself is noise, not latency
    assert held["adapters add latency in every cell"]
