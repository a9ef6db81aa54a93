"""Intruder mitigation (intruders.py) against matrices whose intruders are known by construction.

W0 = U0 diag(s0) V0ᵀ; W = U diag(s) Vᵀ with U = U0 H, H the identity except for an 8 × 8 block
that is a normalized Hadamard matrix (every entry ±1/√8 ≈ 0.354). A column of U from the block has
|cos| = 1/√8 < 0.5 with every column of U0 (an intruder); every other column is a column of U0
(|cos| = 1). Which singular value goes to which column is drawn, so the intruders land at drawn
ranks; the expected result of every function is computed from the construction, not by the code.
"""
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

from minilora import analysis, intruders
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT, GPTConfig
from minilora.testing import assert_bits_equal, assert_close, orthonormal, seeds

pytestmark = pytest.mark.lesson08

SPREAD = scipy.linalg.hadamard(8) / np.sqrt(8)  # orthogonal; |entry| = 0.354 < ε = 0.5
N_SPREAD = 8


class Case:
    """W0 (n, m) and W = Σ_t s_t u_t v_tᵀ (ranks t = 0.. by decreasing s_t), intruder[t] known."""

    def __init__(self, n: int, extra: int, seed: int):
        rng = np.random.default_rng(seed)
        m = n + extra
        U0, V0 = orthonormal(n, n, rng), orthonormal(m, n, rng)
        self.W0 = (U0 * 2.0 ** -np.arange(n)) @ V0.T  # (n, m), well-separated spectrum
        H = np.eye(n)
        block = rng.choice(n, N_SPREAD, replace=False)
        H[np.ix_(block, block)] = SPREAD
        order = rng.permutation(n)  # rank t gets column order[t] of U0 H
        self.U = (U0 @ H)[:, order]  # (n, n), column t = u_t
        self.V = orthonormal(m, n, rng)  # (m, n), column t = v_t
        step = 4.0 / n  # log-spaced, jittered: no two s_t (or λ s_i and s_j) meet by chance
        self.s = np.exp(np.linspace(2.0, -2.0, n) + rng.uniform(0, 0.4 * step, n))
        self.intruder = np.isin(order, block)  # (n,) by rank
        self.W = (self.U * self.s) @ self.V.T  # (n, m)

    def expected(self, lam: float, top_k: int):
        """W' from the construction: σ_t → λ σ_t for the intruders among the top_k ranks."""
        scale = np.where(self.intruder & (np.arange(len(self.s)) < top_k), lam, 1.0)
        return (self.U * (self.s * scale)) @ self.V.T, scale

    def count_after(self, lam: float, top_k: int) -> int:
        """The intruders among the top_k of W' (its singular values re-sorted)."""
        _, scale = self.expected(lam, top_k)
        ranked = np.argsort(-(self.s * scale), kind="stable")[:top_k]
        return int(np.sum(self.intruder[ranked]))


@st.composite
def cases(draw, max_top_k_margin: bool = False):
    """(case, top_k): top_k <= n − 8 when ``max_top_k_margin`` (the window never reaches the
    singular values that λ → 0 sends to zero)."""
    n = draw(st.integers(N_SPREAD + 2, 20))
    case = Case(n, draw(st.integers(0, 4)), draw(seeds))
    top_k = draw(st.integers(1, n - N_SPREAD if max_top_k_margin else n))
    return case, top_k


lambdas = st.floats(0.0, 1.0)


@pytest.mark.law(lesson=8)
@given(cases())
def test_intruders_are_found_where_they_were_put(case_k):
    """The intruders of W are its top_k left singular vectors u_i with max_j |⟨u_i, u⁰_j⟩| < ε over
    W0's: ``intruder_indices`` finds exactly those, and ``intruder_dimensions`` counts them.

    Source: Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of Equivalence",
    Algorithm 1.
    """
    case, top_k = case_k
    found = intruders.intruder_indices(case.W0, case.W, top_k=top_k)
    assert found == [t for t in range(top_k) if case.intruder[t]]
    assert analysis.intruder_dimensions(case.W, case.W0, k=top_k) == len(found)


@pytest.mark.law(lesson=8)
@given(cases())
def test_lambda_one_changes_nothing(case_k):
    """With λ = 1, W' = W + 0 · Σ σ_i u_i v_iᵀ is W, bit for bit (a −0.0 entry could come back
    +0.0; drawn W has none); W itself is never modified.

    Source: Shuttleworth et al. 2024, the intervention on the intruders' singular values (Figure 8);
    PEFT src/peft/tuners/lora/intruders.py.
    """
    case, top_k = case_k
    W = case.W.copy()
    assert_bits_equal(intruders.reduce_intruders(case.W0, W, top_k, mitigation_lambda=1.0), case.W)
    assert_bits_equal(W, case.W)


@pytest.mark.law(lesson=8)
@given(cases(), lambdas)
def test_only_the_intruders_singular_values_scale(case_k, lam):
    """W' = W + (λ − 1) Σ_{i ∈ I} σ_i u_i v_iᵀ: each intruder's σ_i becomes λ σ_i with u_i, v_i
    kept, and every other singular triplet of W (non-intruders, and intruders below the top_k)
    is untouched.

    Source: Shuttleworth et al. 2024, Figure 8; PEFT src/peft/tuners/lora/intruders.py.
    """
    case, top_k = case_k
    W_reduced = intruders.reduce_intruders(case.W0, case.W, top_k, mitigation_lambda=lam)
    expected, scale = case.expected(lam, top_k)
    assert_close(W_reduced, expected, rtol=1e-12, scale=np.linalg.norm(case.W))
    kept = scale == 1.0
    assert_close(W_reduced @ case.V[:, kept], case.U[:, kept] * case.s[kept], rtol=1e-12,
                 scale=np.linalg.norm(case.W))


@pytest.mark.law(lesson=8)
@given(cases(max_top_k_margin=True), lambdas, lambdas)
def test_intruder_count_falls_as_lambda_falls(case_k, lam1, lam2):
    """For λ₂ ≤ λ₁ ≤ 1, the intruder count of W'(λ₂) is at most that of W'(λ₁), at most that of W
    (same top_k and ε): scaled intruders drop out of the top_k, and what enters in their place
    is W's next singular vectors, intruders or not.

    Source: Shuttleworth et al. 2024, Figure 8 (λ from 1 down to 0).
    """
    case, top_k = case_k
    lam2, lam1 = sorted([lam1, lam2])
    count = lambda lam: analysis.intruder_dimensions(  # noqa: E731
        intruders.reduce_intruders(case.W0, case.W, top_k, mitigation_lambda=lam), case.W0, k=top_k)
    before = analysis.intruder_dimensions(case.W, case.W0, k=top_k)
    assert before >= count(lam1) >= count(lam2)
    assert count(lam2) == case.count_after(lam2, top_k)


@pytest.mark.law(lesson=8)
@given(cases(max_top_k_margin=True))
def test_lambda_zero_removes_the_intruders(case_k):
    """λ = 0 removes the intruders: u_iᵀ W' = 0 for each i ∈ I, and the intruders W' still has
    in its top_k are exactly those of W ranked k+1 .. k+|I| (they move up into the window); none
    when W's intruders all lie in its top_k (top_k <= n − |all intruders| here).

    Source: Shuttleworth et al. 2024, Figure 8; PEFT src/peft/tuners/lora/intruders.py.
    """
    case, top_k = case_k
    W_reduced = intruders.reduce_intruders(case.W0, case.W, top_k, mitigation_lambda=0.0)
    removed = np.flatnonzero(case.intruder[:top_k])
    assert np.linalg.norm(case.U[:, removed].T @ W_reduced) <= 1e-12 * np.linalg.norm(case.W)
    moved_up = int(np.sum(case.intruder[top_k:top_k + len(removed)]))
    assert analysis.intruder_dimensions(W_reduced, case.W0, k=top_k) == moved_up


def test_no_intruders_in_the_top_k_leaves_w_as_it_was():
    case = Case(12, 2, seed=5)
    top_k = int(np.argmax(case.intruder))  # the ranks above the first intruder
    if top_k == 0:
        pytest.fail("construction: rank 0 is an intruder for this seed; pick another")
    assert_bits_equal(intruders.reduce_intruders(case.W0, case.W, top_k, mitigation_lambda=0.0),
                      case.W)


W_OK = np.eye(4, 5) + 0.1


@pytest.mark.parametrize("kwargs, kind, field", [
    (dict(mitigation_lambda=-0.1), ValueError, "mitigation_lambda"),
    (dict(mitigation_lambda=1.5), ValueError, "mitigation_lambda"),
    (dict(mitigation_lambda=float("nan")), ValueError, "mitigation_lambda"),
    (dict(mitigation_lambda="0.5"), TypeError, "mitigation_lambda"),
    (dict(top_k=0), ValueError, "top_k"),
    (dict(top_k=2.0), TypeError, "top_k"),
    (dict(top_k=True), TypeError, "top_k"),
    (dict(threshold_epsilon=0.0), ValueError, "threshold_epsilon"),
    (dict(threshold_epsilon=1.01), ValueError, "threshold_epsilon"),
    (dict(W0=W_OK.T), ValueError, "must have one shape"),
    (dict(W0=np.ones(5)), ValueError, "W0 must be a non-empty matrix"),
    (dict(W=np.ones((2, 0))), ValueError, "W must be a non-empty matrix"),
    (dict(W=[[1.0]]), ValueError, "W must be a non-empty matrix"),
    (dict(W=W_OK * np.nan), ValueError, "W has NaN"),
])
def test_bad_arguments_name_the_field(kwargs, kind, field):
    args = dict(W0=W_OK, W=W_OK + 0.5) | kwargs
    with pytest.raises(kind, match=field):
        intruders.reduce_intruders(**args)
    if "mitigation_lambda" not in kwargs:
        args.pop("mitigation_lambda", None)
        with pytest.raises(kind, match=field):
            intruders.intruder_indices(**args)


# -- on a LoraModel (PEFT's entry point) ---------------------------------------------------------
def _adapted(seed: int = 0, **config):
    """A float64 GPT (C = 32) with an adapter whose B is large: ΔW brings in new directions."""
    cfg = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=32, dtype="float64")
    lm = get_lora_model(GPT(cfg, seed=seed), LoraConfig(**({"r": 2, "lora_alpha": 4,
                        "target_modules": ["q_proj", "v_proj"]} | config)), seed=seed)
    rng = np.random.default_rng(seed)
    for _, layer in lm.lora_layers():
        layer.lora_B["default"].weight.data = 3.0 * rng.standard_normal((32, layer.r["default"]))
    return lm


def _state(lm) -> dict:
    return {k: np.array(v) for k, v in lm.state_dict().items()}


@pytest.mark.parametrize("lam", [0.0, 0.75])
def test_the_new_adapter_is_the_rank_r_part_of_the_reduced_weight(lam):
    lm = _adapted()
    before, lines = _state(lm), []
    counts = intruders.reduce_intruder_dimension(lm, mitigation_lambda=lam, logging_sink=lines.append)
    assert sum(counts.values()) > 0, "the large B should bring in intruders"
    assert lines[-1] == "Enabling new adapter intruder_reduced" and len(lines) == len(counts) + 1
    assert lm.active_adapters == ["intruder_reduced"]
    after = _state(lm)
    for key, value in before.items():  # the base and the old adapter: bit for bit as they were
        assert_bits_equal(after[key], value)
    for path, layer in lm.lora_layers():
        W0 = np.array(layer.base_layer.weight.data)
        W = W0 + np.array(layer.delta_weight("default"))
        W_reduced = intruders.reduce_intruders(W0, W, mitigation_lambda=lam)
        U, S, Vh = np.linalg.svd(W_reduced - W0)
        best = (U[:, :2] * S[:2]) @ Vh[:2]  # Eckart-Young: the best rank-2 approximation
        assert_close(layer.delta_weight("intruder_reduced"), best, rtol=1e-12,
                     scale=np.linalg.norm(W))
        assert counts[path] == len(intruders.intruder_indices(W0, W))


def test_lambda_one_gives_back_the_same_update():
    lm = _adapted(seed=1)
    counts = intruders.reduce_intruder_dimension(lm, mitigation_lambda=1.0, logging_sink=None)
    for path, layer in lm.lora_layers():
        if counts[path] == 0:  # copied, as PEFT does
            assert_bits_equal(layer.lora_A["intruder_reduced"].weight.data,
                              layer.lora_A["default"].weight.data)
        assert_close(layer.delta_weight("intruder_reduced"), layer.delta_weight("default"),
                     rtol=1e-12)


def test_a_layer_without_intruders_gets_copies():
    lm = _adapted(seed=2)
    counts = intruders.reduce_intruder_dimension(lm, threshold_epsilon=1e-9, logging_sink=None)
    assert set(counts.values()) == {0}
    for _, layer in lm.lora_layers():
        for table in (layer.lora_A, layer.lora_B):
            assert_bits_equal(table["intruder_reduced"].weight.data, table["default"].weight.data)
            assert table["intruder_reduced"].weight.data is not table["default"].weight.data


@pytest.mark.parametrize("call, message", [
    (dict(old_adapter_name="missing"), "old_adapter_name 'missing' is not an adapter"),
    (dict(new_adapter_name="default"), "new_adapter_name 'default' already exists"),
    (dict(mitigation_lambda=2.0), "mitigation_lambda"),
    (dict(top_k=0), "top_k"),
])
def test_bad_calls_change_nothing(call, message):
    lm = _adapted()
    before = _state(lm)
    with pytest.raises(ValueError, match=message):
        intruders.reduce_intruder_dimension(lm, logging_sink=None, **call)
    assert list(lm.peft_config) == ["default"] and lm.active_adapters == ["default"]
    assert _state(lm).keys() == before.keys()


def test_dora_and_merged_adapters_are_refused():
    dora = _adapted(use_dora=True)
    with pytest.raises(ValueError, match="DoRA"):
        intruders.reduce_intruder_dimension(dora, logging_sink=None)
    merged = _adapted()
    merged.merge_adapter()
    with pytest.raises(ValueError, match="unmerge"):
        intruders.reduce_intruder_dimension(merged, logging_sink=None)
    assert list(dora.peft_config) == list(merged.peft_config) == ["default"]
