"""The SVD analyses (analysis.py) against independent oracles.

Matrices are built as Q1 diag(s) Q2ᵀ with known orthonormal factors and well-separated singular
values, so the "top-i right singular subspace" is known from the construction, not from the
code under test; principal angles come from scipy.linalg.subspace_angles.
"""
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

from minilora import analysis, backend, intruders
from minilora.testing import known_svd, orthonormal, seeds, subspace_shapes

pytestmark = [pytest.mark.lesson07, pytest.mark.lesson08]  # subspaces (07), ΔW and intruders (08)


shapes = subspace_shapes()


@pytest.mark.law(lesson=7)
@given(shapes, st.data())
def test_phi_matches_principal_angles(shape, data):
    """φ(A1, A2, i, j) = ‖U1[:, :i]ᵀ U2[:, :j]‖²_F / min(i, j) ∈ [0, 1] equals the mean squared
    cosine of the principal angles between the top-i and top-j right-singular subspaces.

    Source: Hu et al. 2021, Section 7.2, Eq. 4; Björck and Golub 1973 (principal angles).
    """
    k, r1, r2, seed = shape
    i, j = data.draw(st.integers(1, r1)), data.draw(st.integers(1, r2))
    rng = np.random.default_rng(seed)
    (A1, V1), (A2, V2) = known_svd(r1, k, rng), known_svd(r2, k, rng)
    angles = scipy.linalg.subspace_angles(V1[:, :i], V2[:, :j])  # min(i, j) principal angles
    phi = analysis.subspace_similarity(A1, A2, i, j)
    assert 0.0 <= phi <= 1.0 + 1e-12
    assert phi == pytest.approx(np.mean(np.cos(angles) ** 2), abs=1e-9)


@pytest.mark.law(lesson=7)
@given(shapes)
def test_phi_is_symmetric_for_equal_sizes(shape):
    """φ(A1, A2, i, i) = φ(A2, A1, i, i).

    Source: Hu et al. 2021, Section 7.2, Eq. 4 (‖Mᵀ‖_F = ‖M‖_F).
    """
    k, r1, r2, seed = shape
    rng = np.random.default_rng(seed)
    A1, A2 = rng.standard_normal((r1, k)), rng.standard_normal((r2, k))
    for i in range(1, min(r1, r2) + 1):
        assert analysis.subspace_similarity(A1, A2, i, i) == \
            pytest.approx(analysis.subspace_similarity(A2, A1, i, i), abs=1e-9)


@pytest.mark.law(lesson=7)
@given(shapes)
def test_phi_is_one_for_nested_subspaces(shape):
    """φ = 1 when one subspace contains the other: rows of A1 in the row space of A2 give φ(A1, A2,
    r1, r2) = 1, and φ(A, A, r, r) = 1.

    Source: Hu et al. 2021, Section 7.2 (φ = 1: one subspace contains the other).
    """
    k, r1, r2, seed = shape
    r1 = min(r1, r2)
    rng = np.random.default_rng(seed)
    A2, _ = known_svd(r2, k, rng)
    A1 = orthonormal(r2, r1, rng).T @ A2  # rows of A1 lie in the row space of A2
    assert analysis.subspace_similarity(A1, A2, r1, r2) == pytest.approx(1.0, abs=1e-9)
    assert analysis.subspace_similarity(A2, A2, r2, r2) == pytest.approx(1.0, abs=1e-9)


@given(shapes)
def test_grid_equals_pointwise(shape):
    k, r1, r2, seed = shape
    rng = np.random.default_rng(seed)
    A1, A2 = rng.standard_normal((r1, k)), rng.standard_normal((r2, k))
    grid = analysis.subspace_similarity_grid(A1, A2)
    assert grid.shape == (r1, r2)
    for i in range(1, r1 + 1):
        for j in range(1, r2 + 1):
            assert grid[i - 1, j - 1] == pytest.approx(
                analysis.subspace_similarity(A1, A2, i, j), abs=1e-9)


@pytest.mark.parametrize("i, j", [(1, 1), (1, 8), (4, 4), (8, 2)])
def test_random_baseline_is_max_over_k_on_average(i, j):
    k, n = 32, 400
    rng = np.random.default_rng(7)
    phis = [analysis.subspace_similarity(rng.standard_normal((8, k)), rng.standard_normal((8, k)),
                                         i, j) for _ in range(n)]
    expected = analysis.random_subspace_similarity(k, i, j)
    assert expected == max(i, j) / k
    assert np.mean(phis) == pytest.approx(expected, abs=4 * np.std(phis) / np.sqrt(n))


def test_random_baseline_holds_for_figure_3s_grid_of_gaussian_adapters():
    """Figure 3's shapes, A (8, 128) against A (64, 128): the mean grid over independent
    Gaussian pairs is max(i, j)/128 in every cell, within 4 standard errors. Exact in
    expectation: a Gaussian matrix's top singular subspaces are uniformly random (its law is
    invariant under rotations), and for a uniform j-dimensional Q, E[Q] = (j/k)·I, so
    E‖P_iᵀQ_j‖_F² = tr(P_i E[Q_j]) = i·j/k."""
    k, n = 128, 120
    rng = np.random.default_rng(11)
    grids = np.array([analysis.subspace_similarity_grid(rng.standard_normal((8, k)),
                                                        rng.standard_normal((64, k)))
                      for _ in range(n)])  # (n, 8, 64)
    i, j = np.arange(1, 9)[:, None], np.arange(1, 65)[None, :]
    expected = np.maximum(i, j) / k
    assert expected[0, 0] == analysis.random_subspace_similarity(k, 1, 1)
    se = grids.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(grids.mean(axis=0) - expected) <= 4 * se + 1e-12)


@pytest.mark.parametrize("i, j", [(0, 1), (3, 1), (1, 9)])
def test_phi_rejects_out_of_range(i, j):
    A = np.ones((2, 8)) + np.eye(2, 8)
    with pytest.raises(ValueError):
        analysis.subspace_similarity(A, np.eye(8), i, j)


@pytest.mark.law(lesson=7)
@given(st.integers(4, 20), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_projection_of_w_on_its_own_top_r_is_the_largest(n, r, seed):
    """‖U_rᵀ W V_r‖_F with W's own top-r singular vectors is √(σ₁² + … + σ_r²), no smaller than
    with ΔW's or random ones (Ky Fan), and the amplification factor is ‖ΔW‖_F / ‖U_rᵀ W V_r‖_F.

    Source: Hu et al. 2021, Section 7.3 and Table 7; Ky Fan 1951.
    """
    rng = np.random.default_rng(seed)
    W, delta = rng.standard_normal((n, n + 2)), rng.standard_normal((n, n + 2))
    row = analysis.delta_w_projections(W, delta, r, seed=seed)
    s = np.linalg.svd(W, compute_uv=False)
    assert row["from_w"] == pytest.approx(np.sqrt(np.sum(s[:r] ** 2)), rel=1e-9)
    assert row["from_delta_w"] <= row["from_w"] + 1e-9  # Ky Fan: W's own subspaces hold most
    assert row["random"] <= row["from_w"] + 1e-9
    assert row["w_norm"] == pytest.approx(np.linalg.norm(W), rel=1e-9)
    assert row["amplification"] == pytest.approx(np.linalg.norm(delta) / row["from_delta_w"])


def test_amplification_of_a_rank_one_update():
    rng = np.random.default_rng(0)
    U, V = orthonormal(16, 16, rng), orthonormal(12, 12, rng)
    s = np.linspace(5.0, 0.5, 12)
    W = (U[:, :12] * s) @ V.T
    delta = 3.0 * np.outer(U[:, 4], V[:, 4])  # along W's 5th singular pair, σ = s[4]
    assert analysis.amplification_factor(W, delta, 1) == pytest.approx(3.0 / s[4])


@pytest.mark.law(lesson=8)
@given(st.integers(6, 24), st.integers(0, 2**32 - 1))
def test_no_intruders_in_w_itself_or_a_tiny_perturbation(n, seed):
    """W has no intruder dimensions relative to itself, nor does W + E for E far below W's
    singular-value gaps.

    Source: Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of Equivalence"
    (intruder dimensions).
    """
    rng = np.random.default_rng(seed)
    W, _ = known_svd(n, n, rng)
    assert analysis.intruder_dimensions(W, W, k=n) == 0
    tiny = 1e-7 * rng.standard_normal((n, n))  # far below the singular-value gaps (≥ 2^-n)
    assert analysis.intruder_dimensions(W + tiny, W, k=min(n, 10)) == 0


def test_a_new_direction_is_an_intruder():
    rng = np.random.default_rng(1)
    n = 64
    U, V = orthonormal(n, n, rng), orthonormal(n, n, rng)
    W = (U * np.linspace(2.0, 1.0, n)) @ V.T
    u = U @ np.ones(n) / np.sqrt(n)  # |cos| = 1/8 with every singular vector of W
    W_ft = W + 10.0 * np.outer(u, V[:, 0])  # top left singular vector ≈ u (tilted by W V[:, 0])
    cos = analysis.max_cosine_similarities(W_ft, W, k=3)
    assert cos[0] < 0.5 and cos[1] > 0.9 and analysis.intruder_dimensions(W_ft, W, k=1) == 1


def test_analysis_runs_on_a_strict_array_api_namespace():
    strict = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(3)
    A1, A2, W, D = (rng.standard_normal(s) for s in [(4, 16), (8, 16), (16, 16), (16, 16)])
    expected = (analysis.subspace_similarity(A1, A2, 2, 5),
                np.asarray(analysis.subspace_similarity_grid(A1, A2)),
                analysis.delta_w_projections(W, D, 4), analysis.intruder_dimensions(W + D, W),
                analysis.effective_rank(D), intruders.reduce_intruders(W, W + D))
    backend.use(strict)
    try:
        to = lambda a: strict.asarray(a)  # noqa: E731
        got = (analysis.subspace_similarity(to(A1), to(A2), 2, 5),
               np.asarray(analysis.subspace_similarity_grid(to(A1), to(A2))),
               analysis.delta_w_projections(to(W), to(D), 4),
               analysis.intruder_dimensions(to(W + D), to(W)),
               analysis.effective_rank(to(D)), intruders.reduce_intruders(to(W), to(W + D)))
    finally:
        backend.use("numpy")
    assert got[0] == pytest.approx(expected[0])
    np.testing.assert_allclose(got[1], expected[1], atol=1e-12)
    assert got[2] == pytest.approx(expected[2])
    assert got[3] == expected[3] and got[4] == expected[4]
    np.testing.assert_allclose(np.asarray(got[5]), expected[5], atol=1e-12)


@pytest.mark.law(lesson=8)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 6), st.floats(0.01, 1.0), seeds)
def test_a_rank_k_update_has_effective_rank_at_most_k(m, n, k, energy, seed):
    """ΔW = B A with B (m, k), A (k, n) holds all its energy in k singular values:
    effective_rank(ΔW, energy) <= k for every energy ∈ (0, 1], and it grows with energy.

    Source: Biderman et al. 2024, "LoRA Learns Less and Forgets Less" (the rank needed to explain
    90% of the variance of the weight perturbation).
    """
    rng = np.random.default_rng(seed)
    delta = rng.standard_normal((m, k)) @ rng.standard_normal((k, n))  # (m, n), rank <= k
    rank = analysis.effective_rank(delta, energy)
    assert 1 <= rank <= min(k, m, n)
    assert analysis.effective_rank(delta, energy / 2) <= rank <= analysis.effective_rank(delta, 1.0)


@pytest.mark.law(lesson=8)
@given(st.integers(2, 12), st.integers(2, 12), st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3),
       seeds)
def test_effective_rank_is_scale_free(m, n, c, seed):
    """effective_rank(c ΔW) = effective_rank(ΔW) for c ≠ 0: σ_i(c ΔW) = |c| σ_i(ΔW), and the
    fraction of energy held by the top k does not change.

    Source: Biderman et al. 2024, "LoRA Learns Less and Forgets Less" (spectrum of ΔW).
    """
    delta = np.random.default_rng(seed).standard_normal((m, n))
    assert analysis.effective_rank(c * delta) == analysis.effective_rank(delta)


def test_effective_rank_of_a_known_spectrum():
    rng = np.random.default_rng(0)
    U, V = orthonormal(6, 4, rng), orthonormal(5, 4, rng)
    delta = (U * np.sqrt([0.5, 0.3, 0.15, 0.05])) @ V.T  # energies 0.5, 0.3, 0.15, 0.05
    assert [analysis.effective_rank(delta, e) for e in (0.4, 0.7, 0.9, 0.97, 1.0)] == [1, 2, 3, 4, 4]
    assert analysis.effective_rank(np.zeros((3, 4))) == 0
    assert analysis.effective_rank(np.eye(10)) == 9  # 9 of 10 equal values hold 90%


@pytest.mark.parametrize("energy, kind", [(0.0, ValueError), (-0.5, ValueError),
                                          (1.5, ValueError), (float("nan"), ValueError),
                                          ("0.9", TypeError), (True, TypeError)])
def test_effective_rank_checks_energy(energy, kind):
    with pytest.raises(kind, match="effective_rank: energy"):
        analysis.effective_rank(np.eye(3), energy)


@pytest.mark.parametrize("delta", [np.ones(3), np.ones((2, 0)), np.ones((2, 2, 2)),
                                   np.full((2, 2), np.inf)])
def test_effective_rank_checks_delta_w(delta):
    with pytest.raises(ValueError, match="effective_rank: delta_W"):
        analysis.effective_rank(delta)
