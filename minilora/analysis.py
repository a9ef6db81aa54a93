"""What LoRA learns, measured with the SVD (Hu et al. 2021, Section 7; Shuttleworth et al. 2024).

Three tools, each a few lines of linear algebra on backend arrays (``xp.linalg.svd``,
``xp.linalg.matrix_norm``: NumPy, CuPy or any array-API namespace):

* :func:`subspace_similarity` φ (Eq. 4): how much the top directions of two adapters overlap.
* :func:`projection_norm` and :func:`amplification_factor` (Table 7): how ΔW relates to W.
* :func:`intruder_dimensions` (after the paper): top singular vectors of a fine-tuned W that
  resemble none of the pre-trained W's (scaling them down: ``minilora.intruders``).
* :func:`effective_rank` (after the paper): how many singular values hold 90% of ΔW's energy.

Layout is PyTorch's: ``A`` is (r, in), ``W`` and ``ΔW`` are (out, in).
"""
from __future__ import annotations

from . import backend
from .backend import xp
from .validation import check_real


def _right_singular_vectors(A):
    """Rows of Vᵀ in ``A = U diag(S) Vᵀ``: orthonormal directions of the input space R^in,
    ordered by singular value (largest first)."""
    return xp.linalg.svd(A, full_matrices=False)[2]  # (min(r, in), in)


def subspace_similarity(A1, A2, i: int, j: int) -> float:
    """φ(A1, A2, i, j) = ‖V1[:i] V2[:j]ᵀ‖_F² / min(i, j)   (Section 7.2, Eq. 4).

    V1[:i] (i, in) holds the top-i right singular vectors of A1, V2[:j] the top-j of A2:
    the input directions each adapter reads (ΔW = s·B A only sees x through A x). The value is
    in [0, 1]: 1 when one subspace contains the other, 0 when they are orthogonal; it is the
    mean of cos² of the min(i, j) principal angles between the two subspaces. Section 7.2
    uses the right singular vectors of A (Appendix G's "left" refers to generic matrices).
    """
    V1, V2 = _right_singular_vectors(A1), _right_singular_vectors(A2)
    if not (1 <= i <= V1.shape[0] and 1 <= j <= V2.shape[0]):
        raise ValueError(f"subspace_similarity: need 1 <= i <= {V1.shape[0]} and "
                         f"1 <= j <= {V2.shape[0]}, got i={i}, j={j}")
    overlap = xp.matmul(V1[:i, :], xp.matrix_transpose(V2[:j, :]))  # (i, in) @ (in, j) -> (i, j)
    return float(xp.sum(overlap * overlap)) / min(i, j)


def subspace_similarity_grid(A1, A2, max_i: int | None = None, max_j: int | None = None):
    """φ(A1, A2, i, j) for every i = 1..max_i, j = 1..max_j, as an (max_i, max_j) array.

    One SVD each, then prefix sums: with C = (V1 V2ᵀ)² elementwise, ‖V1[:i] V2[:j]ᵀ‖_F² is the
    sum of C over the top-left i × j block.
    """
    V1, V2 = _right_singular_vectors(A1), _right_singular_vectors(A2)
    max_i, max_j = max_i or V1.shape[0], max_j or V2.shape[0]
    overlap = xp.matmul(V1[:max_i, :], xp.matrix_transpose(V2[:max_j, :]))  # (max_i, max_j)
    blocks = xp.cumulative_sum(xp.cumulative_sum(overlap * overlap, axis=0), axis=1)
    i = xp.arange(1, max_i + 1, dtype=blocks.dtype)[:, None]  # (max_i, 1)
    j = xp.arange(1, max_j + 1, dtype=blocks.dtype)[None, :]  # (1, max_j)
    return blocks / xp.minimum(i, j)  # (max_i, max_j)


def random_subspace_similarity(k: int, i: int, j: int) -> float:
    """E[φ] for independent uniformly random subspaces of R^k of dimensions i and j: max(i, j)/k.

    E‖P_i Q_j‖_F² = i·j/k (each of the j unit vectors keeps i/k of its squared length in a
    random i-dimensional subspace), divided by min(i, j).
    """
    return max(i, j) / k


def random_gaussian(shape, seed: int, dtype: str | None = None):
    """A standard Gaussian matrix on the active backend: Figure 4's random reference."""
    return backend.Generator(seed).normal(shape, dtype=dtype)


def _norm(M) -> float:
    return float(xp.linalg.matrix_norm(M, ord="fro"))


def projection_norm(W, U, V) -> float:
    """‖Uᵀ W V‖_F for orthonormal columns U (out, r) and V (in, r)   (Section 7.3, Table 7).

    How much of W lives in the r-dimensional subspaces U (outputs) and V (inputs).
    """
    return _norm(xp.matmul(xp.matmul(xp.matrix_transpose(U), W), V))  # (r, out)(out, in)(in, r)


def top_singular_subspaces(M, r: int):
    """(U_r, V_r): the top-r left (out, r) and right (in, r) singular vectors of M."""
    U, _, Vh = xp.linalg.svd(M, full_matrices=False)
    return U[:, :r], xp.matrix_transpose(Vh[:r, :])


def delta_w_projections(W, delta_W, r: int, seed: int = 0) -> dict:
    """Table 7's row for one (W, ΔW, r): ‖UᵀWV‖_F with U, V the top-r singular vectors of
    ΔW, of W itself, and of a random Gaussian matrix; ‖W‖_F, ‖ΔW‖_F, and the amplification
    factor ‖ΔW‖_F / ‖U_ΔWᵀ W V_ΔW‖_F.

    A small projection of W onto ΔW's directions (compared with W's own) means ΔW points where
    W is weak; a large amplification factor means ΔW strongly boosts those weak directions.
    """
    random = random_gaussian(tuple(W.shape), seed, dtype=backend.dtype_name(W.dtype))
    from_delta = projection_norm(W, *top_singular_subspaces(delta_W, r))
    return {"r": r, "from_delta_w": from_delta,
            "from_w": projection_norm(W, *top_singular_subspaces(W, r)),
            "random": projection_norm(W, *top_singular_subspaces(random, r)),
            "w_norm": _norm(W), "delta_w_norm": _norm(delta_W),
            "amplification": _norm(delta_W) / from_delta}


def amplification_factor(W, delta_W, r: int) -> float:
    """‖ΔW‖_F / ‖Uᵀ W V‖_F, U and V the top-r singular vectors of ΔW (Section 7.3).

    The paper finds ≈ 21.5 for r = 4 and ≈ 1.9 for r = 64 (GPT-3, layer 48, Wq).
    """
    return _norm(delta_W) / projection_norm(W, *top_singular_subspaces(delta_W, r))


def max_cosine_similarities(W_finetuned, W_pretrained, k: int = 10):
    """For each of the top-k left singular vectors of the fine-tuned W, the largest |cosine|
    with any left singular vector of the pre-trained W: a (k,) array in [0, 1]."""
    U_ft = xp.linalg.svd(W_finetuned, full_matrices=False)[0][:, :k]  # (out, k)
    return max_cosines(U_ft, W_pretrained)


def max_cosines(U, W_pretrained):
    """max_j |⟨U[:, i], u⁰_j⟩| over the left singular vectors u⁰_j of W_pretrained, for each
    unit column U[:, i]: a (k,) array in [0, 1].

    Singular vectors are unit length and defined up to sign, hence |cosine| = |⟨u, u'⟩|.
    """
    U_0 = xp.linalg.svd(W_pretrained, full_matrices=False)[0]  # (out, min(out, in))
    cosines = xp.abs(xp.matmul(xp.matrix_transpose(U), U_0))  # (k, out) @ (out, n) -> (k, n)
    return xp.max(cosines, axis=1)


def intruder_dimensions(W_finetuned, W_pretrained, k: int = 10, threshold: float = 0.5) -> int:
    """Intruder dimensions (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion
    of Equivalence"): how many of the fine-tuned W's top-k singular vectors have
    max_j |cos(u_i, u_j⁰)| < threshold over all singular vectors u_j⁰ of the pre-trained W.

    A full fine-tune tends to rotate W's existing directions slightly (each keeps a close
    partner, cosine near 1); LoRA tends to add new high-ranking directions that have none.
    W itself, or W plus a perturbation small next to its singular-value gaps, has none.
    """
    return int(xp.sum(xp.astype(max_cosine_similarities(W_finetuned, W_pretrained, k)
                                < threshold, xp.int64)))


def effective_rank(delta_W, energy: float = 0.9) -> int:
    """The number of singular values of ΔW that hold ``energy`` of its energy ‖ΔW‖_F² = Σ σ_i²:

        effective_rank(ΔW) = min { k : σ_1² + … + σ_k² ≥ energy · (σ_1² + … + σ_n²) }

    (Biderman et al. 2024, "LoRA Learns Less and Forgets Less": the rank needed to explain 90%
    of the variance of the weight perturbation). A rank-r update gives at most r; c·ΔW gives
    the same as ΔW (the fraction is scale-free); ΔW = 0 holds no energy and gives 0.
    """
    energy = check_real("effective_rank: energy", energy, low=0.0, high=1.0, low_open=True)
    if len(delta_W.shape) != 2 or 0 in delta_W.shape:
        raise ValueError(f"effective_rank: delta_W must be a non-empty matrix (out, in), "
                         f"got shape {tuple(delta_W.shape)}")
    if not bool(xp.all(xp.isfinite(delta_W))):
        raise ValueError("effective_rank: delta_W has NaN or infinite entries")
    S = xp.linalg.svdvals(delta_W)  # (min(out, in),), largest first
    held = xp.cumulative_sum(S * S)  # held[k-1] = σ_1² + … + σ_k²
    total = float(held[-1])  # the same sum, so energy = 1 is reached at the last term
    if total == 0.0:
        return 0
    return int(xp.sum(xp.astype(held < energy * total, xp.int64))) + 1
