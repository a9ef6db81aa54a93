"""The mathematics of LoRA (Hu et al. 2021, Section 4.1) as laws over generated inputs.

Notation as in the paper and PEFT: ``W0`` is (m, n) = (out_features, in_features),
``B`` (m, r), ``A`` (r, n), ``s = lora_alpha / r`` (or ``/ √r`` with rsLoRA), ``ΔW = s B A``.
Every test runs in float64 on shapes drawn small, skinny (m ≫ n) and wide (m ≪ n).
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import minilora.functional as F
from minilora import Generator
from minilora.lora import LoraConfig, LoraLinear, get_lora_model
from minilora.nn import Linear, Module
from minilora.optim import SGD
from minilora.tensor import Tensor
from minilora.testing import (alphas, assert_close, dims, examples, factors, forward_scale,
                              gpts_with_adapters, inputs, lora_configs, lora_linear,
                              lora_shapes, numerical_rank, randomize, seeds, tiny_gpt)

pytestmark = pytest.mark.lesson03


class OneLinear(Module):
    """A model that is a single Linear named ``proj``, so injection can target it."""

    def __init__(self, n, m, seed, bias=True):
        super().__init__()
        self.proj = Linear(n, m, bias=bias, generator=Generator(seed), dtype="float64")

    def forward(self, x):
        return self.proj(x)


# -- initialization: B = 0 means "no change" -------------------------------------------------
@pytest.mark.law(lesson=3)
@given(shape=lora_shapes(), init=st.sampled_from([True, "gaussian"]), rslora=st.booleans(),
       alpha=alphas, bias=st.booleans(), three_d=st.booleans(), seed=seeds)
def test_zero_B_leaves_a_linear_bit_identical(shape, init, rslora, alpha, bias, three_d, seed):
    """At initialization B = 0 (A random), so ΔW = s B A = 0 and the LoRA layer's output is
    bit-identical to W0 x + b, for every shape, scaling rule and init of A.

    Source: Hu et al. 2021, Section 4.1 ("a random Gaussian initialization for A and zero for
    B, so ΔW = BA is zero at the beginning of training").
    """
    m, n, r = shape
    rng = np.random.default_rng(seed)
    x = inputs(rng, n, (2, 3) if three_d else (4,))
    base = Linear(n, m, bias=bias, generator=Generator(seed), dtype="float64")
    y0 = base(x).data.copy()
    layer = LoraLinear(base, r=r, lora_alpha=alpha, init_lora_weights=init, use_rslora=rslora,
                       generator=Generator(seed + 1))
    assert layer.active_adapters == ["default"]
    assert not np.any(factors(layer)[1].data)  # B = 0 ...
    assert np.any(factors(layer)[0].data)  # ... while A is random
    assert not np.any(layer.delta_weight())
    y = layer(x).data
    assert y.shape == y0.shape and y.tobytes() == y0.tobytes()


@pytest.mark.law(lesson=3)
@pytest.mark.filterwarnings("error::UserWarning")  # r <= 8 = min(in, out) of every Linear here
@examples(6)
@given(config=lora_configs(), seed=seeds)
def test_zero_B_leaves_a_gpt_bit_identical(config, seed):
    """For every drawn LoraConfig (r, α, targets, init, rsLoRA, dropout, bias): injecting LoRA into
    a GPT leaves its logits bit-identical.

    Source: Hu et al. 2021, Section 4.1 (B = 0 at the start).
    """
    gpt = tiny_gpt(seed % 1000)
    idx = np.random.default_rng(seed).integers(0, 11, (2, 6))
    logits0 = gpt(idx).data.copy()
    lm = get_lora_model(gpt, config)
    assert lm.lora_layers()
    assert lm(idx).data.tobytes() == logits0.tobytes()


@pytest.mark.law(lesson=3)
@given(shape=lora_shapes(), init=st.sampled_from([True, "gaussian"]), alpha=alphas, seed=seeds)
def test_first_step_dA_is_exactly_zero_and_dB_is_not(shape, init, alpha, seed):
    """At B = 0: ∂L/∂A = s Bᵀ G = 0 exactly and ∂L/∂B = s G Aᵀ ≠ 0 for a generic loss; W0 gets no
    gradient at all.

    Source: Hu et al. 2021, Section 4.1 (B = 0, A random); the gradient identity ∂L/∂A = s BᵀG.
    """
    m, n, r = shape
    rng = np.random.default_rng(seed)
    layer = lora_linear(m, n, r, seed, alpha=alpha, init=init)
    x, C = inputs(rng, n, (6,)), Tensor(rng.standard_normal((6, m)))
    (layer(x).tanh() * C).sum().backward()
    A, B = factors(layer)
    assert A.grad is not None and not np.any(A.grad)
    assert B.grad is not None and np.any(B.grad)
    assert layer.base_layer.weight.grad is None  # W0 is frozen: no gradient work at all


@pytest.mark.law(lesson=3)
@examples(4)
@given(case=gpts_with_adapters(lora_configs(
    r=st.just(2), target_modules=st.sampled_from([["q_proj", "v_proj"], "all-linear"]),
    lora_dropout=st.just(0.0))), seed=seeds)
def test_first_step_on_a_gpt_every_dA_is_zero_every_dB_is_not(case, seed):
    """On a GPT at initialization, every adapted layer has ∂L/∂A = 0 exactly and ∂L/∂B ≠ 0, and no
    frozen parameter receives a gradient.

    Source: Hu et al. 2021, Section 4.1.
    """
    rng = np.random.default_rng(seed)
    lm, idx = case.model, case.idx
    tgt = rng.integers(0, 11, (2, 6))
    F.cross_entropy(lm(idx), tgt).backward()
    for path, layer in lm.lora_layers():
        A, B = factors(layer)
        assert A.grad is not None and not np.any(A.grad), path
        assert B.grad is not None and np.any(B.grad), path
    assert all(p.grad is None for p in lm.model.parameters() if not p.requires_grad)


@pytest.mark.law(lesson=3)
@examples(5)
@given(r=st.sampled_from([1, 2, 4, 16]), n=st.integers(1500, 2500), seed=seeds)
def test_gaussian_init_has_std_one_over_r(r, n, seed):
    """init_lora_weights="gaussian": A ~ N(0, 1/r²) entrywise (sample std within 10%, mean within 6
    standard errors), B = 0.

    Source: PEFT's ``LoraLayer.reset_lora_parameters`` ("gaussian"); Hu et al. 2021, Section 4.1
    (random Gaussian A).
    """
    A, B = factors(lora_linear(3, n, r, seed, init="gaussian"))
    a = A.data.ravel()
    assert abs(a.std() * r - 1) < 0.10
    assert abs(a.mean()) < 6 / (r * math.sqrt(a.size))
    assert not np.any(B.data)


@pytest.mark.law(lesson=3)
@examples(5)
@given(r=st.sampled_from([1, 2, 8]), n=st.integers(1500, 2500), seed=seeds)
def test_kaiming_uniform_init_bounds(r, n, seed):
    """init_lora_weights=True: A ~ U(−1/√n, 1/√n) (Kaiming-uniform, a = √5), filling the interval,
    with std = bound/√3; B = 0.

    Source: loralib and PEFT's default initialization (``nn.init.kaiming_uniform_(a=√5)``).
    """
    A, B = factors(lora_linear(3, n, r, seed, init=True))
    a, bound = A.data.ravel(), 1 / math.sqrt(n)
    assert np.all(np.abs(a) <= bound)
    assert a.max() > 0.95 * bound and a.min() < -0.95 * bound
    assert abs(a.std() * math.sqrt(3) / bound - 1) < 0.10
    assert not np.any(B.data)


@pytest.mark.law(lesson=3)
@given(shape=lora_shapes(), seed=seeds)
def test_init_false_gives_a_nonzero_update(shape, seed):
    """init_lora_weights=False: B is random too, so ΔW ≠ 0 and the output differs from the base
    layer's.

    Source: PEFT's ``init_lora_weights=False`` (a non-identity start, for tests).
    """
    m, n, r = shape
    rng = np.random.default_rng(seed)
    layer = lora_linear(m, n, r, seed, init=False)
    assert np.any(factors(layer)[1].data) and np.any(layer.delta_weight())
    x = inputs(rng, n)
    assert np.any(layer(x).data != layer.base_layer(x).data)


@pytest.mark.law(lesson=9)
@given(shape=lora_shapes(extra_rank=0), alpha=alphas, rslora=st.booleans(), seed=seeds)
def test_pissa_init_keeps_the_output_and_spans_the_top_singular_subspaces(shape, alpha, rslora,
                                                                          seed):
    """PiSSA: s B A = U_r Σ_r V_rᵀ (the top-r part of W0), the base keeps the residual W_res = W0 −
    s B A, so W_res + s B A = W0 and the output is unchanged; B spans U_r, A spans V_r, W_res has
    singular values σ_{r+1}, σ_{r+2}, ….

    Source: Meng et al. 2024, "PiSSA: Principal Singular Values and Singular Vectors Adaptation
    of Large Language Models".
    """
    m, n, r = shape
    rng = np.random.default_rng(seed)
    base = Linear(n, m, generator=Generator(seed), dtype="float64")
    W0, b = base.weight.data.copy(), base.bias.data.copy()
    U, S, Vh = np.linalg.svd(W0, full_matrices=False)
    assume(r == min(m, n) or S[r - 1] - S[r] > 1e-3 * S[0])  # the subspace must be unique
    x = inputs(rng, n)
    y0 = base(x).data.copy()
    layer = LoraLinear(base, r=r, lora_alpha=alpha, init_lora_weights="pissa", use_rslora=rslora)
    A, B = factors(layer)
    assert A.shape == (r, n) and B.shape == (m, r)
    W_res = layer.base_layer.weight.data
    assert_close(W_res + layer.delta_weight(), W0, scale=np.linalg.norm(W0))
    assert_close(layer(x).data, y0, scale=forward_scale(x.data, W0, b, W0))
    assert_close(layer.delta_weight(), (U[:, :r] * S[:r]) @ Vh[:r], scale=S[0])
    proj = lambda M: M @ np.linalg.pinv(M)  # orthogonal projector onto the column space of M
    assert_close(proj(B.data), U[:, :r] @ U[:, :r].T, 1e-9, scale=1.0)
    assert_close(proj(A.data.T), Vh[:r].T @ Vh[:r], 1e-9, scale=1.0)
    S_res = np.linalg.svd(W_res, compute_uv=False)  # the residual keeps σ_{r+1}, σ_{r+2}, ...
    assert_close(S_res[: min(m, n) - r], S[r:], 1e-10, scale=S[0])


# -- the gradient identity -------------------------------------------------------------------
@pytest.mark.law(lesson=3)
@given(shape=lora_shapes(), alpha=alphas, rslora=st.booleans(), three_d=st.booleans(), seed=seeds)
def test_gradients_of_A_and_B_are_s_BT_G_and_s_G_AT(shape, alpha, rslora, three_d, seed):
    """With G = ∂L/∂ΔW (from a full-weight Linear holding W0 + ΔW and the same loss): ∂L/∂B = s G
    Aᵀ and ∂L/∂A = s Bᵀ G, for any loss, shape and scaling.

    Source: Hu et al. 2021, Section 4.1 (ΔW = s B A and the chain rule).
    """
    m, n, r = shape
    rng = np.random.default_rng(seed)
    layer = lora_linear(m, n, r, seed, alpha=alpha, rslora=rslora)
    randomize(layer, rng)
    x = inputs(rng, n, (2, 3) if three_d else (5,))
    C = Tensor(rng.standard_normal((*x.shape[:-1], m)))
    loss = lambda y: ((y.tanh() * C).sum() + (y * y).sum() * 0.1)
    full = Linear(n, m, generator=Generator(0), dtype="float64")
    full.weight.data = layer.base_layer.weight.data + layer.delta_weight()
    full.bias.data = layer.base_layer.bias.data.copy()
    full.bias.requires_grad = False
    loss(layer(x)).backward()
    loss(full(x)).backward()
    G, s = full.weight.grad, layer.scaling["default"]
    A, B = factors(layer)
    size = abs(s) * np.linalg.norm(G)
    assert_close(B.grad, s * G @ A.data.T, scale=size * np.linalg.norm(A.data))
    assert_close(A.grad, s * B.data.T @ G, scale=size * np.linalg.norm(B.data))


# -- merging ---------------------------------------------------------------------------------
@pytest.mark.law(lesson=3)
@given(shape=lora_shapes(), alpha=alphas, rslora=st.booleans(), seed=seeds)
def test_merge_agrees_with_unmerged_and_unmerge_restores_W0(shape, alpha, rslora, seed):
    """merge stores W = W0 + s B A; the merged layer's output equals the unmerged one's (and does
    not read B any more); unmerge restores W0 to rounding.

    Source: Hu et al. 2021, Section 4.1 ("No additional inference latency": W = W0 + BA).
    """
    m, n, r = shape
    rng = np.random.default_rng(seed)
    layer = lora_linear(m, n, r, seed, alpha=alpha, rslora=rslora)
    randomize(layer, rng)
    W0, b, delta = layer.base_layer.weight.data.copy(), layer.base_layer.bias.data, \
        layer.delta_weight()
    x = inputs(rng, n, (2, 4))
    y_unmerged = layer(x).data.copy()
    layer.merge()
    assert layer.merged and layer.merged_adapters == ["default"]
    assert_close(layer.base_layer.weight.data, W0 + delta)
    scale = forward_scale(x.data, W0, b, delta)
    assert_close(layer(x).data, y_unmerged, scale=scale)
    # Merged, the LoRA branch is not computed at all: poisoning B changes nothing.
    B = factors(layer)[1]
    B_saved, B.data = B.data, np.full_like(B.data, np.nan)
    assert_close(layer(x).data, y_unmerged, scale=scale)
    B.data = B_saved
    layer.unmerge()
    assert not layer.merged
    assert_close(layer.base_layer.weight.data, W0, scale=np.linalg.norm(W0) + np.linalg.norm(delta))
    assert_close(layer(x).data, y_unmerged, scale=scale)


def _layer_state(layer):
    return ([(k, p.data.tobytes(), p.requires_grad) for k, p in layer.named_parameters()],
            list(layer.merged_adapters), list(layer.active_adapters))


@given(shape=lora_shapes(), seed=seeds)
def test_merging_twice_or_unmerging_unmerged_raises_and_changes_nothing(shape, seed):
    m, n, r = shape
    layer = lora_linear(m, n, r, seed, init=False)
    before = _layer_state(layer)
    with pytest.raises(ValueError, match="no adapter is merged"):
        layer.unmerge()
    assert _layer_state(layer) == before
    with pytest.raises(ValueError, match="no adapter named"):
        layer.merge(adapter_names=["nope"])
    assert _layer_state(layer) == before
    layer.merge()
    merged = _layer_state(layer)
    with pytest.raises(ValueError, match="already merged"):
        layer.merge()
    assert _layer_state(layer) == merged


@given(shape=lora_shapes(), bad=st.sampled_from([np.nan, np.inf, -np.inf]), seed=seeds)
def test_safe_merge_refuses_non_finite_weights_and_leaves_the_layer(shape, bad, seed):
    m, n, r = shape
    rng = np.random.default_rng(seed)
    layer = lora_linear(m, n, r, seed)
    randomize(layer, rng)
    B = factors(layer)[1]
    B.data[rng.integers(m), rng.integers(r)] = bad
    before = _layer_state(layer)
    with pytest.raises(ValueError, match="safe_merge"):
        layer.merge(safe_merge=True)
    assert _layer_state(layer) == before and not layer.merged


@given(shape=lora_shapes(), seed=seeds)
def test_train_and_eval_never_merge(shape, seed):
    m, n, r = shape
    rng = np.random.default_rng(seed)
    layer = lora_linear(m, n, r, seed, dropout=0.5)
    randomize(layer, rng)
    before = _layer_state(layer)
    x = inputs(rng, n)
    for mode in (layer.eval, layer.train, layer.eval):
        mode()
        assert not layer.merged and _layer_state(layer) == before
    expected = layer.base_layer(x).data + x.data @ layer.delta_weight().T  # eval: no dropout
    assert_close(layer(x).data, expected, scale=forward_scale(x.data, layer.base_layer.weight.data,
                                                               layer.base_layer.bias.data,
                                                               layer.delta_weight()))


# -- rank and size ---------------------------------------------------------------------------
@pytest.mark.law(lesson=3)
@given(shape=lora_shapes(), alpha=alphas, seed=seeds)
def test_rank_of_the_update_is_at_most_r(shape, alpha, seed):
    """rank(ΔW) ≤ r, and random factors reach min(r, m, n): r is a real budget, not only a bound.

    Source: Hu et al. 2021, Section 4.1 (ΔW = BA, B ∈ R^{d×r}, A ∈ R^{r×k}).
    """
    m, n, r = shape
    layer = lora_linear(m, n, r, seed, alpha=alpha)
    randomize(layer, np.random.default_rng(seed))
    rank = numerical_rank(layer.delta_weight())
    assert rank <= r
    assert rank == min(r, m, n)  # and random factors reach it: r is a real budget, not a bound


@pytest.mark.law(lesson=3)
@given(shape=lora_shapes(), alpha=alphas, seed=seeds)
def test_rslora_scales_by_alpha_over_sqrt_r(shape, alpha, seed):
    """s = α/r by default and s = α/√r with use_rslora; ΔW = s B A and the layer's output moves by
    x (s B A)ᵀ.

    Source: Hu et al. 2021, Section 4.1 (α/r); Kalajdzievski 2023, "A Rank Stabilization Scaling
    Factor for Fine-Tuning with LoRA" (α/√r).
    """
    m, n, r = shape
    rng = np.random.default_rng(seed)
    plain = lora_linear(m, n, r, seed, alpha=alpha)
    rs = lora_linear(m, n, r, seed, alpha=alpha, rslora=True)
    assert plain.scaling["default"] == alpha / r
    assert rs.scaling["default"] == alpha / math.sqrt(r)
    randomize(plain, rng)
    for p, q in zip(factors(plain), factors(rs)):
        q.data = p.data.copy()
    BA = factors(plain)[1].data @ factors(plain)[0].data
    assert_close(plain.delta_weight(), alpha / r * BA)
    assert_close(rs.delta_weight(), alpha / math.sqrt(r) * BA)
    x = inputs(rng, n)
    assert_close(rs(x).data - rs.base_layer(x).data, x.data @ (alpha / math.sqrt(r) * BA).T,
                 scale=forward_scale(x.data, rs.base_layer.weight.data, rs.base_layer.bias.data,
                                     rs.delta_weight()))


# -- r = min(m, n): LoRA is full fine-tuning --------------------------------------------------
@pytest.mark.law(lesson=4)
@given(m=dims, n=dims, alpha=alphas, rslora=st.booleans(), seed=seeds)
def test_full_rank_lora_expresses_every_update(m, n, alpha, rslora, seed):
    """For r = min(m, n), every ΔW is some s B A: B = I, A = ΔW/s (m ≤ n; else A = I), or by the
    SVD B = U√Σ, A = √Σ Vᵀ/s.

    Identity argument: B = I, A = ΔW / s when m ≤ n (else A = I, B = ΔW / s). SVD argument:
    ΔW = U Σ Vᵀ, B = U √Σ, A = √Σ Vᵀ / s. Both are loaded into a real layer and checked.

    Source: Hu et al. 2021, Section 4.1 ("A Generalization of Full Fine-tuning").
    """
    rng = np.random.default_rng(seed)
    r = min(m, n)
    dW = rng.standard_normal((m, n)) * rng.uniform(0.01, 10)
    layer = lora_linear(m, n, r, seed, alpha=alpha, rslora=rslora)
    s = layer.scaling["default"]
    A, B = factors(layer)
    if m <= n:
        B.data, A.data = np.eye(m), dW / s
    else:
        A.data, B.data = np.eye(n), dW / s
    assert_close(layer.delta_weight(), dW)
    U, S, Vh = np.linalg.svd(dW, full_matrices=False)
    B.data, A.data = U * np.sqrt(S), np.sqrt(S)[:, None] * Vh / s
    assert_close(layer.delta_weight(), dW)
    x = inputs(rng, n)
    assert_close(layer(x).data - layer.base_layer(x).data, x.data @ dW.T,
                 scale=forward_scale(x.data, layer.base_layer.weight.data, None, dW))


@pytest.mark.law(lesson=4)
@given(m=st.integers(2, 12), n=st.integers(2, 12), data=st.data(), seed=seeds)
def test_below_the_rank_the_best_error_is_the_eckart_young_tail(m, n, data, seed):
    """For r < rank(ΔW): min over B, A of ‖ΔW − s B A‖_F = √(σ²_{r+1} + … ), attained by the
    truncated SVD; random factorizations, and the best B for a random A, never do better.

    Source: Eckart and Young 1936; Hu et al. 2021, Section 4.1 (LoRA's rank budget).
    """
    rng = np.random.default_rng(seed)
    r = data.draw(st.integers(1, min(m, n) - 1))
    dW = rng.standard_normal((m, n))
    U, S, Vh = np.linalg.svd(dW, full_matrices=False)
    assume(S[-1] > 1e-6 * S[0])  # rank(ΔW) = min(m, n) > r, numerically
    tail = math.sqrt(np.sum(S[r:] ** 2))
    layer = lora_linear(m, n, r, seed, alpha=data.draw(alphas))
    s = layer.scaling["default"]
    A, B = factors(layer)
    B.data, A.data = U[:, :r] * np.sqrt(S[:r]), np.sqrt(S[:r])[:, None] * Vh[:r] / s
    assert math.isclose(np.linalg.norm(dW - layer.delta_weight()), tail, rel_tol=1e-12)
    for _ in range(10):  # random factorizations, and for a random A the best possible B
        A.data, B.data = rng.standard_normal((r, n)), rng.standard_normal((m, r))
        assert np.linalg.norm(dW - layer.delta_weight()) >= tail * (1 - 1e-12)
        B.data = dW @ np.linalg.pinv(A.data) / s  # least squares: min over B for this A
        err = np.linalg.norm(dW - layer.delta_weight())
        assert err >= tail * (1 - 1e-12)
        assert numerical_rank(layer.delta_weight()) <= r


def _mlp_loss(rng, N, m):
    V, T = Tensor(rng.standard_normal((m, 3))), Tensor(rng.standard_normal((N, 3)))
    return lambda y: ((y.tanh() @ V - T) ** 2).sum() * (1.0 / N)


def _xent_loss(rng, N, m):
    targets = rng.integers(0, m, (N,))
    return lambda y: F.cross_entropy(y, targets)


@pytest.mark.law(lesson=4)
@given(m=dims, n=dims, steps=st.integers(1, 6), alpha=alphas, rslora=st.booleans(),
       lr=st.floats(0.01, 0.3), loss_kind=st.sampled_from([_mlp_loss, _xent_loss]), seed=seeds)
def test_full_rank_lora_follows_the_full_fine_tuning_trajectory(m, n, steps, alpha, rslora, lr,
                                                                loss_kind, seed):
    """At r = min(m, n) with B = I frozen and A trained (A = I and B trained when m > n), LoRA's
    SGD at lr η moves W0 + s B A exactly as full fine-tuning's SGD at lr η s² moves W, step by
    step; W0 itself never moves.

    Why s²: ΔW = s A, so ∂L/∂A = s · G, and a step A ← A − lr · s G moves ΔW by −lr · s² · G.

    Source: Hu et al. 2021, Section 4.1 ("A Generalization of Full Fine-tuning"), made exact: ΔW =
    s A, so a step A ← A − η s G moves ΔW by −η s² G.
    """
    rng = np.random.default_rng(seed)
    r, N = min(m, n), 7
    layer = lora_linear(m, n, r, seed, alpha=alpha, rslora=rslora)
    W0 = layer.base_layer.weight.data.copy()
    s = layer.scaling["default"]
    A, B = factors(layer)
    frozen, trained = (B, A) if m <= n else (A, B)
    frozen.data, frozen.requires_grad = np.eye(r), False
    full = Linear(n, m, generator=Generator(0), dtype="float64")
    full.weight.data = W0 + layer.delta_weight()
    full.bias.data, full.bias.requires_grad = layer.base_layer.bias.data.copy(), False
    W_start = full.weight.data.copy()
    opt_lora, opt_full = SGD([trained], lr=lr / s**2), SGD([full.weight], lr=lr)
    x, loss = inputs(rng, n, (N,)), loss_kind(rng, N, m)
    for _ in range(steps):
        for opt, module in ((opt_lora, layer), (opt_full, full)):
            opt.zero_grad()
            loss(module(x)).backward()
            opt.step()
        assert_close(layer.base_layer.weight.data + layer.delta_weight(), full.weight.data, 1e-10)
    assert layer.base_layer.weight.data.tobytes() == W0.tobytes()  # W0 itself never moved
    if m > 1 or loss_kind is _mlp_loss:  # (cross-entropy over one class has zero gradient)
        assert np.any(full.weight.data != W_start)  # the trajectory really went somewhere


def _least_squares_problem(rng, m, n, r_top):
    """min_W ‖X Wᵀ − Y‖²_F with X (N, n) of orthonormal columns (XᵀX = I, N = n + 3).

    Orthonormal X makes the loss isotropic in W: ‖X Wᵀ − Y‖² = ‖W − W*‖²_F + L*, with
    W* = Yᵀ X and L* = ‖(I − X Xᵀ) Y‖² > 0 the part no W can explain. So the best W = W0 + ΔW
    with rank(ΔW) ≤ r has loss L* + Σ_{i>r} σ_i(W* − W0)² exactly (Eckart–Young).
    The optimal update ΔW* = W* − W0 is built with a known spectrum: its top ``r_top`` singular
    values in [1, 2], the rest in [0.05, 0.5] (a gap, so the rank-r optimum is unique and plain
    gradient descent converges fast).
    """
    N, k = n + 3, min(m, n)
    X = np.linalg.qr(rng.standard_normal((N, n)))[0]
    U = np.linalg.qr(rng.standard_normal((m, k)))[0]
    V = np.linalg.qr(rng.standard_normal((n, k)))[0]
    sigma = np.concatenate([rng.uniform(1, 2, r_top), rng.uniform(0.05, 0.5, k - r_top)])
    dW_star = (U * sigma) @ V.T
    noise = rng.standard_normal((N, m))
    noise -= X @ (X.T @ noise)  # orthogonal to X's columns: the irreducible part
    return X, dW_star, noise, sigma


@pytest.mark.law(lesson=4)
@examples(12)
@given(m=dims, n=dims, below=st.booleans(), seed=seeds)
def test_full_rank_lora_reaches_the_full_fine_tuning_optimum(m, n, below, seed):
    """On least squares with isotropic loss: gradient descent on A, B from the standard init
    reaches full fine-tuning's optimal loss at r = min(m, n) (1e-6 relative), and at r < rank(ΔW*)
    stops at L* + Σ_{i>r} σᵢ², with ΔW the truncated SVD of ΔW*.

    Source: Hu et al. 2021, Section 4.1; Eckart and Young 1936.
    """
    rng = np.random.default_rng(seed)
    k = min(m, n)
    assume(not below or k >= 2)
    r = int(rng.integers(1, k)) if below else k
    model = OneLinear(n, m, seed, bias=False)
    W0 = model.proj.weight.data.copy()
    X, dW_star, noise, sigma = _least_squares_problem(rng, m, n, r)
    Y = X @ (W0 + dW_star).T + noise
    W_full = np.linalg.lstsq(X, Y, rcond=None)[0].T  # full fine-tuning's optimum, closed form
    L_full = np.sum((X @ W_full.T - Y) ** 2)
    assert math.isclose(L_full, np.sum(noise**2), rel_tol=1e-10)
    bound = L_full + np.sum(sigma[r:] ** 2)  # = L_full when r = k
    lm = get_lora_model(model, LoraConfig(r=r, lora_alpha=r, target_modules=["proj"]), seed=seed)
    opt = SGD([p for p in lm.parameters() if p.requires_grad], lr=0.1)
    Xt, Yt = Tensor(X), Tensor(Y)
    for _ in range(500):
        opt.zero_grad()
        d = lm(Xt) - Yt
        loss = (d * d).sum()
        loss.backward()
        opt.step()
    final = float(np.sum((lm(Xt).data - Y) ** 2))
    assert bound * (1 - 1e-12) <= final <= bound * (1 + 1e-6)
    if below:
        U, S, Vh = np.linalg.svd(dW_star)
        best = (U[:, :r] * S[:r]) @ Vh[:r]
        assert_close(lm.model.proj.delta_weight(), best, 1e-6)


# -- a cross-check against PEFT's LoRA Linear, written out in plain NumPy ----------------------
def peft_lora_linear(x, W0, b, A, B, scaling, dropout_mask):
    """PEFT ``lora.Linear.forward`` (unmerged): x W0ᵀ + b + (dropout(x) Aᵀ Bᵀ) · scaling."""
    return x @ W0.T + b + ((x * dropout_mask) @ A.T @ B.T) * scaling


def peft_lora_grads(x, A, B, scaling, dropout_mask, C):
    """Gradients of L = Σ C ⊙ y, derived by hand: with u = dropout(x) and h = u Aᵀ,
    ∂L/∂B = scaling · Cᵀ h and ∂L/∂A = scaling · (C B)ᵀ u (batch axes summed)."""
    u = (x * dropout_mask).reshape(-1, x.shape[-1])
    C2 = C.reshape(-1, C.shape[-1])
    return scaling * (C2 @ B).T @ u, scaling * C2.T @ (u @ A.T)


@pytest.mark.law(lesson=3)
@given(shape=lora_shapes(), alpha=alphas, rslora=st.booleans(),
       p=st.sampled_from([0.0, 0.1, 0.5]), three_d=st.booleans(), seed=seeds)
def test_matches_peft_formulas(shape, alpha, rslora, p, three_d, seed):
    """The layer computes PEFT's lora.Linear: y = x W0ᵀ + b + (dropout(x) Aᵀ Bᵀ)·s, with ∂L/∂B =
    s·Cᵀ h and ∂L/∂A = s·(C B)ᵀ u (u = dropout(x), h = u Aᵀ, L = Σ C ⊙ y); merge gives W0 + s B A.

    Source: PEFT ``tuners/lora/layer.py`` (``Linear.forward``, ``get_delta_weight``); Hu et al.
    2021, Section 4.1.
    """
    m, n, r = shape
    rng = np.random.default_rng(seed)
    layer = lora_linear(m, n, r, seed, alpha=alpha, rslora=rslora, dropout=p)
    randomize(layer, rng)
    A, B = factors(layer)
    W0, b = layer.base_layer.weight.data.copy(), layer.base_layer.bias.data.copy()
    scaling = alpha / math.sqrt(r) if rslora else alpha / r  # PEFT: lora_alpha / r, or / √r
    assert layer.scaling["default"] == scaling
    x = inputs(rng, n, (2, 3) if three_d else (5,))
    # The layer's dropout mask, reproduced by running the same dropout (same seed) on ones.
    layer.lora_dropout["default"].generator = Generator(seed)
    mask = F.dropout(Tensor(np.ones(x.shape)), p, True, Generator(seed)).data
    assert set(np.unique(mask)) <= {0.0, 1 / (1 - p)}
    C = rng.standard_normal((*x.shape[:-1], m))
    y = layer(x)
    expected = peft_lora_linear(x.data, W0, b, A.data, B.data, scaling, mask)
    assert_close(y.data, expected, scale=forward_scale(x.data, W0, b, scaling * B.data @ A.data))
    y.backward(C)
    gA, gB = peft_lora_grads(x.data, A.data, B.data, scaling, mask, C)
    assert_close(A.grad, gA, scale=scaling * np.linalg.norm(C) * np.linalg.norm(B.data)
                 * np.linalg.norm(x.data) * 2)
    assert_close(B.grad, gB, scale=scaling * np.linalg.norm(C) * np.linalg.norm(A.data)
                 * np.linalg.norm(x.data) * 2)
    layer.merge()
    assert_close(layer.base_layer.weight.data, W0 + scaling * B.data @ A.data)  # PEFT's merge
    layer.eval()
    assert_close(layer(x).data, peft_lora_linear(x.data, W0, b, A.data, B.data, scaling, 1.0),
                 scale=forward_scale(x.data, W0, b, scaling * B.data @ A.data))
