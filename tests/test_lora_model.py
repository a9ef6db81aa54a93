"""LoRA on whole models: injection, merging, many adapters on one base, and bad input.

The oracle for an adapted model is a fresh copy of the base model whose targeted weights are
set to W0 + ΔW by hand. Every failed call must leave the model bit-identical (``snapshot``).
"""
import contextlib
import io
import math
import re

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minilora.functional as F
from minilora import Generator
from minilora.lora import LoraConfig, LoraLinear, LoraModel, get_lora_model
from minilora.nn import Linear
from minilora.optim import SGD
from minilora.tensor import Tensor
from minilora.testing import (TinyMLP, assert_close, combination_weights, examples, seeds,
                              tiny_gpt, tiny_mlps, two_adapters)

pytestmark = [pytest.mark.lesson04,
              # r > min(m, n) on skinny layers is intended here; one test checks the warning.
              pytest.mark.filterwarnings("ignore:.*exceeds min\\(in, out\\)")]


# -- models and oracles ----------------------------------------------------------------------
def gpt_case(seed):
    """(build, idx) for a tiny float64 GPT."""
    idx = np.random.default_rng(seed).integers(0, 11, (2, 6))
    return (lambda: tiny_gpt(seed)), idx


def out(model, x):
    return model(x).data.copy()


def with_deltas(build, deltas):
    """The oracle: a fresh base model with W ← W0 + ΔW at each path in ``deltas``."""
    model = build()
    for path, delta in deltas.items():
        layer = model.get_submodule(path)
        layer.weight.data = layer.weight.data + delta
    return model


def deltas_of(lm, names):
    """{path: Σ ΔW over ``names``} for every adapted layer."""
    result = {}
    for path, layer in lm.lora_layers():
        present = [n for n in names if n in layer.lora_A]
        if present:
            result[path] = sum(layer.delta_weight(n) for n in present)
    return result


def snapshot(obj):
    """Everything a failed call must not change: parameters bit for bit, the module tree,
    each LoRA layer's bookkeeping, and the LoraModel's adapters."""
    model = obj.model if isinstance(obj, LoraModel) else obj
    params = [(k, p.data.dtype.str, p.shape, p.data.tobytes(), p.requires_grad)
              for k, p in model.named_parameters()]
    tree = [(k, type(mod).__name__) for k, mod in model.named_modules()]
    layers = [(k, list(mod.active_adapters), list(mod.merged_adapters), dict(mod.r),
               dict(mod.lora_alpha), dict(mod.scaling), mod.disable_adapters)
              for k, mod in model.named_modules() if isinstance(mod, LoraLinear)]
    adapters = ([(k, c.to_dict()) for k, c in obj.peft_config.items()], repr(obj.active_adapter)) \
        if isinstance(obj, LoraModel) else None
    return params, tree, layers, adapters


def linear_paths(model):
    return [k for k, mod in model.named_modules() if isinstance(mod, Linear)]


# -- injection -------------------------------------------------------------------------------
@pytest.mark.law(lesson=3)
@examples(8)
@given(targets=st.sampled_from([["q_proj", "v_proj"], ["k_proj"], "all-linear",
                                ["lm_head", "down_proj"], ["layers.1.attn.o_proj"],
                                r"layers\.0\..*_proj"]), r=st.integers(1, 4), seed=seeds)
def test_injection_wraps_exactly_the_targets_and_freezes_everything_else(targets, r, seed):
    """get_lora_model wraps exactly the Linear layers that target_modules names (by suffix, by
    regex, or all-linear without lm_head), with A (r, in) and B (out, r); the only trainable
    parameters are the A's and B's.

    Source: Hu et al. 2021, Section 4.1 (W0 frozen, only A, B trained); PEFT's target_modules
    matching.
    """
    build, _ = gpt_case(seed)
    model = build()
    names = linear_paths(model)
    if targets == "all-linear":
        expected = [p for p in names if not p.endswith("lm_head")]
    elif isinstance(targets, str):
        expected = [p for p in names if re.fullmatch(targets, p)]
    else:
        expected = [p for p in names if any(p == t or p.endswith("." + t) for t in targets)]
    lm = get_lora_model(model, LoraConfig(r=r, target_modules=targets))
    assert [p for p, _ in lm.lora_layers()] == expected
    trainable = sorted(k for k, p in lm.model.named_parameters() if p.requires_grad)
    assert trainable == sorted(f"{p}.lora_{ab}.default.weight" for p in expected for ab in "AB")
    for path, layer in lm.lora_layers():
        assert isinstance(layer.base_layer, Linear) and not isinstance(layer.base_layer, LoraLinear)
        assert layer.lora_A["default"].weight.shape == (r, layer.in_features)
        assert layer.lora_B["default"].weight.shape == (layer.out_features, r)


@pytest.mark.law(lesson=5)
@examples(10)
@given(case=tiny_mlps(), r=st.integers(1, 4), bias=st.sampled_from(["none", "all", "lora_only"]))
def test_trainable_count_is_r_times_m_plus_n_per_adapted_matrix(case, r, bias):
    """LoRA on an m × n matrix trains r·(m + n) parameters (plus the adapted biases with
    bias="all"/"lora_only"), and print_trainable_parameters prints PEFT's line.

    Source: Hu et al. 2021, Section 4.1 (|Θ| = r·(d + k) per matrix); PEFT's
    ``print_trainable_parameters``.
    """
    build, _ = case
    base_total = build().num_parameters()
    lm = get_lora_model(build(), LoraConfig(r=r, target_modules=["up_proj", "down_proj"],
                                            bias=bias))
    lora = sum(r * (layer.in_features + layer.out_features) for _, layer in lm.lora_layers())
    biases = sum(layer.out_features for _, layer in lm.lora_layers()) if bias != "none" else 0
    trainable, total = lm.get_nb_trainable_parameters()
    assert trainable == lora + biases  # Tiny's only biases are in the adapted layers
    assert total == base_total + lora
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        lm.print_trainable_parameters()
    line = printed.getvalue().strip()
    assert line == f"trainable params: {trainable:,d} || all params: {total:,d} || " \
                   f"trainable%: {100 * trainable / total:.4f}"


@pytest.mark.law(lesson=5)
@examples(4)
@given(r=st.integers(1, 8), seed=seeds)
def test_trainable_count_on_a_gpt(r, seed):
    """On a GPT with L blocks of width C: q_proj, v_proj cost 2·L·r·2C; all-linear costs L·r·(4·2C
    + 2·3C) (lm_head excluded).

    Source: Hu et al. 2021, Section 4.1 (|Θ| = 2·L̂·d_model·r for square matrices).
    """
    L, C = 2, 8
    qv = get_lora_model(tiny_gpt(seed), LoraConfig(r=r, target_modules=["q_proj", "v_proj"]))
    assert qv.get_nb_trainable_parameters()[0] == 2 * L * r * 2 * C
    every = get_lora_model(tiny_gpt(seed), LoraConfig(r=r, target_modules="all-linear"))
    assert every.get_nb_trainable_parameters()[0] == L * r * (4 * 2 * C + 2 * 3 * C)


@pytest.mark.law(lesson=3)
@examples(8)
@given(r=st.integers(1, 4), rq=st.integers(1, 4), r1=st.integers(1, 4),
       alpha=st.sampled_from([1.0, 4.0, 16.0]), av=st.sampled_from([0.5, 3.0]),
       rslora=st.booleans(), seed=seeds)
def test_rank_and_alpha_patterns_override_per_module(r, rq, r1, alpha, av, rslora, seed):
    """With rank_pattern and alpha_pattern, each module gets its own r_p and α_p (first matching
    pattern, else the defaults), A of shape (r_p, in), and s = α_p/r_p (α_p/√r_p with rsLoRA).

    Source: PEFT's ``LoraConfig.rank_pattern`` / ``alpha_pattern``.
    """
    lm = get_lora_model(tiny_gpt(seed), LoraConfig(
        r=r, lora_alpha=alpha, use_rslora=rslora, target_modules="all-linear",
        rank_pattern={"q_proj": rq, r"layers\.1\.attn\.v_proj": r1}, alpha_pattern={"v_proj": av}))
    for path, layer in lm.lora_layers():
        leaf = path.split(".")[-1]
        want_r = rq if leaf == "q_proj" else r1 if path == "layers.1.attn.v_proj" else r
        want_alpha = av if leaf == "v_proj" else alpha
        assert layer.r["default"] == want_r and layer.lora_alpha["default"] == want_alpha
        assert layer.lora_A["default"].weight.shape == (want_r, layer.in_features)
        assert layer.scaling["default"] == (want_alpha / math.sqrt(want_r) if rslora
                                            else want_alpha / want_r)


@pytest.mark.law(lesson=3)
@given(n=st.integers(1, 3), extra=st.integers(1, 3), seed=seeds)
def test_rank_above_min_dimension_is_allowed_with_a_warning(n, extra, seed):
    """r > min(m, n) is allowed (with a warning): B = 0 still leaves the output bit-identical, and
    ΔW still has rank ≤ min(m, n).

    Source: Hu et al. 2021, Section 4.1 (rank(BA) ≤ min(d, k, r)).
    """
    build = lambda: TinyMLP(n, 6, 6, seed % 1000)
    x = Tensor(np.random.default_rng(seed).standard_normal((4, n)))
    y0 = out(build(), x)
    r = n + extra
    with pytest.warns(UserWarning, match="exceeds min"):
        lm = get_lora_model(build(), LoraConfig(r=r, target_modules=["up_proj"]))
    layer = lm.model.up_proj
    assert layer.lora_A["default"].weight.shape == (r, n)
    assert out(lm, x).tobytes() == y0.tobytes()
    rng = np.random.default_rng(seed)
    layer.lora_B["default"].weight.data = rng.standard_normal((6, r))
    S = np.linalg.svd(layer.delta_weight(), compute_uv=False)
    assert np.sum(S > 1e-9 * S[0]) <= n


@given(n=st.integers(1, 3), extra=st.integers(1, 3), seed=seeds)
def test_pissa_above_min_dimension_is_refused_before_any_change(n, extra, seed):
    """PiSSA's A, B are W0's top-r singular vectors: there are only min(m, n) of them."""
    lm = get_lora_model(TinyMLP(n, 6, 6, seed % 1000), LoraConfig(r=1, target_modules=["lm_head"]))
    before = snapshot(lm)
    with pytest.raises(ValueError, match="pissa"):
        lm.add_adapter("p", LoraConfig(r=n + extra, init_lora_weights="pissa",
                                       target_modules=["down_proj", "up_proj"]))
    assert snapshot(lm) == before
    base = Linear(n, 6, generator=Generator(seed), dtype="float64")
    before = snapshot(base)
    with pytest.raises(ValueError, match="pissa"):
        LoraLinear(base, r=n + extra, init_lora_weights="pissa")
    assert snapshot(base) == before


@pytest.mark.law(lesson=9)
@examples(4)
@given(r=st.integers(1, 8), seed=seeds)
def test_pissa_on_a_gpt_starts_exactly_at_the_base_model(r, seed):
    """PiSSA on every linear layer of a GPT: the model's output is unchanged at init, each base
    keeps W0's tail (top singular value σ_{r+1}), W_res + s B A = W0, and merge_and_unload gives
    the base's output.

    Source: Meng et al. 2024, "PiSSA: Principal Singular Values and Singular Vectors Adaptation
    of Large Language Models".
    """
    build, idx = gpt_case(seed)
    base = build()
    y0 = out(base, idx)
    lm = get_lora_model(build(), LoraConfig(r=r, lora_alpha=2 * r, init_lora_weights="pissa",
                                            target_modules="all-linear"))
    assert_close(out(lm, idx), y0)
    for path, layer in lm.lora_layers():
        W0 = base.get_submodule(path).weight.data
        S = np.linalg.svd(W0, compute_uv=False)  # the base keeps W0's tail, B A its top r
        assert_close(np.linalg.svd(layer.base_layer.weight.data, compute_uv=False)[0],
                     S[r] if r < S.size else 0.0, 1e-10, scale=S[0])
        assert_close(layer.base_layer.weight.data + layer.delta_weight(), W0)
    assert_close(out(lm.merge_and_unload(), idx), y0)


# -- merging ---------------------------------------------------------------------------------
@pytest.mark.law(lesson=3)
@examples(6)
@given(seed=seeds, rslora=st.booleans())
def test_merge_agrees_unmerge_restores_and_merge_and_unload_returns_plain_linears(seed, rslora):
    """On a GPT: the adapted output equals a base with W ← W0 + ΔW; merge stores W0 + ΔW, unmerge
    restores W0; merge_and_unload returns plain Linear layers, the same parameter names, the same
    output.

    Source: Hu et al. 2021, Section 4.1 (no additional inference latency).
    """
    build, idx = gpt_case(seed)
    y_base = out(build(), idx)
    lm = get_lora_model(build(), LoraConfig(r=3, lora_alpha=5, init_lora_weights=False,
                                            use_rslora=rslora, target_modules="all-linear"),
                        seed=seed % 1000)
    W0 = {p: layer.base_layer.weight.data.copy() for p, layer in lm.lora_layers()}
    deltas = deltas_of(lm, ["default"])
    y = out(lm, idx)
    assert_close(y, out(with_deltas(build, deltas), idx))  # the oracle
    assert np.linalg.norm(y - y_base) > 1e-6 * np.linalg.norm(y)  # the adapter does something
    lm.merge_adapter()
    for p, layer in lm.lora_layers():
        assert layer.merged_adapters == ["default"]
        assert_close(layer.base_layer.weight.data, W0[p] + deltas[p])
    assert_close(out(lm, idx), y)
    lm.unmerge_adapter()
    for p, layer in lm.lora_layers():
        assert not layer.merged
        assert_close(layer.base_layer.weight.data, W0[p],
                     scale=np.linalg.norm(W0[p]) + np.linalg.norm(deltas[p]))
    assert_close(out(lm, idx), y)
    plain = lm.merge_and_unload()
    assert not any(isinstance(mod, LoraLinear) for _, mod in plain.named_modules())
    assert linear_paths(plain) == linear_paths(build())
    assert sorted(k for k, _ in plain.named_parameters()) == \
        sorted(k for k, _ in build().named_parameters())
    for p in W0:
        assert_close(plain.get_submodule(p).weight.data, W0[p] + deltas[p])
    assert_close(out(plain, idx), y)


@pytest.mark.law(lesson=3)
@examples(10)
@given(case=tiny_mlps(), seed=seeds)
def test_unload_gives_back_the_base_model(case, seed):
    """unload removes every LoRA layer without merging: the result is the base model, its output
    bit-identical.

    Source: PEFT's ``LoraModel.unload``.
    """
    build, x = case
    y_base = out(build(), x)
    lm = get_lora_model(build(), LoraConfig(r=2, init_lora_weights=False,
                                            target_modules="all-linear"), seed=seed)
    plain = lm.unload()
    assert not any(isinstance(mod, LoraLinear) for _, mod in plain.named_modules())
    assert out(plain, x).tobytes() == y_base.tobytes()


@examples(10)
@given(case=tiny_mlps(), seed=seeds)
def test_merging_twice_or_unmerging_unmerged_raises_and_changes_nothing(case, seed):
    build, _ = case
    lm = two_adapters(build, seed)
    before = snapshot(lm)
    with pytest.raises(ValueError, match="no adapter is merged"):
        lm.unmerge_adapter()
    assert snapshot(lm) == before
    lm.merge_adapter()
    merged = snapshot(lm)
    with pytest.raises(ValueError, match="already merged"):
        lm.merge_adapter()
    assert snapshot(lm) == merged
    with pytest.raises(ValueError, match="already merged"):
        lm.merge_adapter(["b", "a"])  # b would merge first: the check must come before it
    assert snapshot(lm) == merged


@examples(10)
@given(seed=seeds, bad=st.sampled_from([np.nan, np.inf]), data=st.data())
def test_safe_merge_is_all_or_nothing_across_layers(seed, bad, data):
    build, idx = gpt_case(seed)
    lm = get_lora_model(build(), LoraConfig(r=2, init_lora_weights=False,
                                            target_modules="all-linear"), seed=seed % 1000)
    layers = lm.lora_layers()
    _, poisoned = layers[data.draw(st.integers(0, len(layers) - 1))]  # first, middle or last
    poisoned.lora_B["default"].weight.data[0, 0] = bad
    before = snapshot(lm)
    with pytest.raises(ValueError, match="safe_merge"):
        lm.merge_adapter(safe_merge=True)
    assert snapshot(lm) == before
    with pytest.raises(ValueError, match="safe_merge"):
        lm.merge_and_unload(safe_merge=True)
    assert snapshot(lm) == before


@examples(10)
@given(case=tiny_mlps(), seed=seeds)
def test_train_and_eval_never_merge(case, seed):
    build, x = case
    lm = get_lora_model(build(), LoraConfig(r=2, init_lora_weights=False, lora_dropout=0.3,
                                            target_modules="all-linear"), seed=seed)
    before = snapshot(lm)
    for mode in (lm.eval, lm.train, lm.eval, lm.train):
        mode()
        assert snapshot(lm) == before
    lm.eval()
    assert_close(out(lm, x), out(with_deltas(build, deltas_of(lm, ["default"])), x))


# -- many adapters on one base ---------------------------------------------------------------
@examples(10)
@given(case=tiny_mlps(), seed=seeds)
def test_add_set_and_delete_adapters(case, seed):
    build, x = case
    lm = get_lora_model(build(), LoraConfig(r=2, init_lora_weights=False,
                                            target_modules="all-linear"), "a", seed=seed)
    y_a = out(lm, x)
    lm.add_adapter("b", LoraConfig(r=1, lora_alpha=3, init_lora_weights=False,
                                   target_modules=["down_proj", "lm_head"]), seed=seed + 1)
    assert out(lm, x).tobytes() == y_a.tobytes()  # a new adapter is inactive
    assert [p for p, _ in lm.lora_layers()] == ["up_proj", "down_proj", "lm_head"]
    lm.set_adapter("b")
    assert lm.active_adapters == ["b"]
    assert_close(out(lm, x), out(with_deltas(build, deltas_of(lm, ["b"])), x))
    lm.set_adapter(["a", "b"])
    assert_close(out(lm, x), out(with_deltas(build, deltas_of(lm, ["a", "b"])), x))
    lm.set_adapter("a")
    assert_close(out(lm, x), y_a)
    lm.delete_adapter("b")
    assert list(lm.peft_config) == ["a"]
    assert all("b" not in layer.lora_A and "b" not in layer.r for _, layer in lm.lora_layers())
    assert not any(".b." in k for k, _ in lm.model.named_parameters())
    assert out(lm, x).tobytes() == y_a.tobytes()
    lm.delete_adapter("a")  # deleting the active adapter leaves none active: the base model
    assert lm.active_adapters == [] and not lm.peft_config
    assert all(not layer.active_adapters and not layer.lora_A for _, layer in lm.lora_layers())
    assert out(lm, x).tobytes() == out(build(), x).tobytes()


@pytest.mark.law(lesson=3)
@examples(10)
@given(case=tiny_mlps(), seed=seeds)
def test_only_the_active_adapter_trains(case, seed):
    """With several adapters, only the active adapter's A and B are trainable, receive gradients
    and move; every other parameter stays bit-identical after a step.

    Source: Hu et al. 2021, Section 4.1 (W0 frozen); PEFT's ``set_adapter``.
    """
    build, x = case
    lm = two_adapters(build, seed)
    lm.set_adapter("b")
    params = dict(lm.model.named_parameters())
    trainable = {k for k, p in params.items() if p.requires_grad}
    assert trainable == {k for k in params if ".lora_A.b." in k or ".lora_B.b." in k}
    before = {k: p.data.copy() for k, p in params.items()}
    opt = SGD(lm.parameters(), lr=0.1)
    in_optimizer = {id(p) for group in opt.param_groups for p in group["params"]}
    assert in_optimizer == {id(params[k]) for k in trainable}
    lm(x).sum().backward()
    for k, p in params.items():
        assert (p.grad is not None) == (k in trainable), k
    opt.step()
    for k, p in params.items():
        if k not in trainable:
            assert p.data.tobytes() == before[k].tobytes(), k


@examples(10)
@given(case=tiny_mlps(), seed=seeds)
def test_disable_adapter_runs_the_base_model_inside_the_block_only(case, seed):
    build, x = case
    y_base = out(build(), x)
    lm = two_adapters(build, seed)
    lm.set_adapter(["a", "b"])
    y = out(lm, x)
    with lm.disable_adapter():
        assert out(lm, x).tobytes() == y_base.tobytes()
    assert out(lm, x).tobytes() == y.tobytes()
    with pytest.raises(KeyError):
        with lm.disable_adapter():
            raise KeyError("an error inside the block")
    assert out(lm, x).tobytes() == y.tobytes()
    lm.merge_adapter()
    before = snapshot(lm)
    with pytest.raises(RuntimeError, match="merged"):
        with lm.disable_adapter():
            pass
    assert snapshot(lm) == before


@pytest.mark.law(lesson=3)
@examples(10)
@given(case=tiny_mlps(), seed=seeds, switches=st.lists(st.sampled_from("ab"), min_size=1,
                                                          max_size=5))
def test_switching_a_merged_model_between_adapters_and_back_restores_W0(case, seed, switches):
    """On a merged model, switching tasks (unmerge: subtract s B A; merge another: add s B' A')
    gives W0 + ΔW' each time; merging two at once gives W0 + ΔW_a + ΔW_b; the last unmerge restores
    W0.

    Source: Hu et al. 2021, Section 4.1 ("switch to another downstream task … by subtracting BA and
    then adding a different B'A'").
    """
    build, x = case
    lm = two_adapters(build, seed)
    W0 = {p: layer.base_layer.weight.data.copy() for p, layer in lm.lora_layers()}
    deltas = {n: deltas_of(lm, [n]) for n in "ab"}
    size = {p: np.linalg.norm(W0[p]) + sum(np.linalg.norm(deltas[n][p]) for n in "ab")
            for p in W0}
    lm.merge_adapter()
    for name in switches:
        lm.unmerge_adapter()
        lm.set_adapter(name)
        lm.merge_adapter()
        for p, layer in lm.lora_layers():
            assert_close(layer.base_layer.weight.data, W0[p] + deltas[name][p], scale=size[p])
        assert_close(out(lm, x), out(with_deltas(build, deltas[name]), x))
    lm.unmerge_adapter()
    for p, layer in lm.lora_layers():
        assert_close(layer.base_layer.weight.data, W0[p], scale=size[p])
    lm.set_adapter(["a", "b"])  # two merged at once, and both subtracted again
    lm.merge_adapter()
    for p, layer in lm.lora_layers():
        assert layer.merged_adapters == ["a", "b"]
        assert_close(layer.base_layer.weight.data, W0[p] + deltas["a"][p] + deltas["b"][p],
                     scale=size[p])
    lm.unmerge_adapter()
    for p, layer in lm.lora_layers():
        assert not layer.merged
        assert_close(layer.base_layer.weight.data, W0[p], scale=size[p])


@pytest.mark.law(lesson=3)
@examples(15)
@given(case=tiny_mlps(), seed=seeds, w=st.tuples(combination_weights, combination_weights),
       rslora=st.booleans())
def test_cat_combination_is_exactly_the_weighted_sum_of_deltas(case, seed, w, rslora):
    """add_weighted_adapter "cat": ΔW_cat = w_a ΔW_a + w_b ΔW_b exactly (A, B stacked, rank r_a +
    r_b), and the model computes W0 + ΔW_cat.

    Source: PEFT's ``LoraModel.add_weighted_adapter`` (combination_type="cat").
    """
    build, x = case
    lm = two_adapters(build, seed, ra=2, rb=3, use_rslora=rslora)
    lm.add_weighted_adapter(["a", "b"], list(w), "cat", combination_type="cat")
    for path, layer in lm.lora_layers():
        want = w[0] * layer.delta_weight("a") + w[1] * layer.delta_weight("b")
        assert_close(layer.delta_weight("cat"), want, scale=sum(
            abs(wi) * np.linalg.norm(layer.delta_weight(n)) for wi, n in zip(w, "ab")))
        assert layer.r["cat"] == 5 and layer.lora_A["cat"].weight.shape[0] == 5
    lm.set_adapter("cat")
    want = {p: w[0] * d for p, d in deltas_of(lm, ["a"]).items()}
    for p, d in deltas_of(lm, ["b"]).items():
        want[p] = want[p] + w[1] * d
    assert_close(out(lm, x), out(with_deltas(build, want), x))


@pytest.mark.law(lesson=3)
@examples(15)
@given(case=tiny_mlps(), seed=seeds, w=st.tuples(combination_weights, combination_weights),
       k=st.integers(1, 6),
       rslora=st.booleans())
def test_svd_combination_is_the_best_rank_k_approximation_of_the_weighted_sum(case, seed, w, k,
                                                                              rslora):
    """add_weighted_adapter "svd" with rank k: ΔW_svd has rank ≤ k and ‖M − ΔW_svd‖_F = √(Σ_{i>k}
    σᵢ(M)²) for M = w_a ΔW_a + w_b ΔW_b (the truncated SVD when unique).

    Source: PEFT's ``add_weighted_adapter`` (combination_type="svd"); Eckart and Young 1936.
    """
    build, _ = case
    lm = two_adapters(build, seed, ra=2, rb=3, use_rslora=rslora)
    lm.add_weighted_adapter(["a", "b"], list(w), "svd", combination_type="svd", svd_rank=k)
    for path, layer in lm.lora_layers():
        M = w[0] * layer.delta_weight("a") + w[1] * layer.delta_weight("b")
        U, S, Vh = np.linalg.svd(M, full_matrices=False)
        kk = min(k, S.size)
        got = layer.delta_weight("svd")
        assert layer.r["svd"] == kk and layer.lora_A["svd"].weight.shape == (kk, layer.in_features)
        assert np.sum(np.linalg.svd(got, compute_uv=False) > 1e-9 * S[0]) <= kk
        tail = math.sqrt(np.sum(S[kk:] ** 2))  # Eckart–Young: no rank-k matrix does better
        assert abs(np.linalg.norm(M - got) - tail) <= 1e-10 * S[0]
        if kk == S.size or S[kk - 1] - S[kk] > 1e-6 * S[0]:  # unique best: the truncated SVD
            assert_close(got, (U[:, :kk] * S[:kk]) @ Vh[:kk], 1e-8, scale=S[0])


@pytest.mark.law(lesson=3)
@examples(15)
@given(case=tiny_mlps(), seed=seeds, w=st.tuples(st.floats(0, 2), st.floats(0, 2)),
       rslora=st.booleans())
def test_linear_combination_follows_its_formula(case, seed, w, rslora):
    """add_weighted_adapter "linear": A = Σ √(wᵢ sᵢ) Aᵢ, B = Σ √(wᵢ sᵢ) Bᵢ, scaling 1 — not Σ wᵢ
    ΔWᵢ (cross terms); with one weight zero it is exactly w ΔW of the other.

    Source: PEFT's ``add_weighted_adapter`` (combination_type="linear").
    """
    build, _ = case
    lm = two_adapters(build, seed, ra=2, rb=2, use_rslora=rslora)
    lm.add_weighted_adapter(["a", "b"], list(w), "lin", combination_type="linear")
    lm.add_weighted_adapter(["a", "b"], [w[0], 0.0], "only_a", combination_type="linear")
    for path, layer in lm.lora_layers():
        roots = [math.sqrt(wi * layer.scaling[n]) for wi, n in zip(w, "ab")]
        A = sum(c * layer.lora_A[n].weight.data for c, n in zip(roots, "ab"))
        B = sum(c * layer.lora_B[n].weight.data for c, n in zip(roots, "ab"))
        assert layer.scaling["lin"] == 1.0
        assert_close(layer.delta_weight("lin"), B @ A,
                     scale=np.linalg.norm(B) * np.linalg.norm(A) + 1e-300)
        expected = w[0] * layer.delta_weight("a")
        assert_close(layer.delta_weight("only_a"), expected,
                     scale=np.linalg.norm(expected) + 1e-300)


@examples(5)
@given(case=tiny_mlps(), seed=seeds, w=st.floats(-2, -1e-3))
def test_linear_combination_refuses_negative_weights(case, seed, w):
    """√w of a negative weight is not a real number: a clear error, not a complex adapter."""
    build, _ = case
    lm = two_adapters(build, seed, ra=2, rb=2)
    before = snapshot(lm)
    with pytest.raises(ValueError, match="linear"):
        lm.add_weighted_adapter(["a", "b"], [1.0, w], "lin", combination_type="linear")
    assert snapshot(lm) == before


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(r=0), "r: got 0"), (dict(r=-3), "r: got -3"), (dict(r=2.0), "r: got 2.0"),
    (dict(r=True), "r: got True"), (dict(rank_pattern={"q_proj": 0}), "rank_pattern"),
    (dict(lora_alpha=0), "lora_alpha"), (dict(lora_alpha=-1.0), "lora_alpha"),
    (dict(lora_alpha=math.nan), "lora_alpha"), (dict(lora_alpha=math.inf), "lora_alpha"),
    (dict(alpha_pattern={"v_proj": -2}), "alpha_pattern"),
    (dict(lora_dropout=-0.1), "lora_dropout"), (dict(lora_dropout=1.0), "lora_dropout"),
    (dict(lora_dropout=math.nan), "lora_dropout"),
    (dict(init_lora_weights="kaiming"), "init_lora_weights"),
    (dict(init_lora_weights="PISSA"), "init_lora_weights"),
    (dict(init_lora_weights=1), "init_lora_weights"),
    (dict(bias="some"), "bias"),
])
def test_bad_config_values_are_refused(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        LoraConfig(**kwargs)
    base = Linear(4, 3, dtype="float64")
    before = snapshot(base)
    layer_kwargs = {k: v for k, v in kwargs.items() if k in ("r", "lora_alpha", "lora_dropout",
                                                              "init_lora_weights")}
    if layer_kwargs:  # the layer's own constructor checks the same things, before any change
        with pytest.raises((TypeError, ValueError), match=message):
            LoraLinear(base, **layer_kwargs)
        assert snapshot(base) == before


@pytest.mark.parametrize("targets", [["q_prj"], ["q_proj", "v_prj"], ["v_proj", "Q_proj"],
                                     ["attn"], r".*\.qproj", ["ln_1"], []])
@examples(2)
@given(seed=seeds)
def test_targets_that_match_nothing_are_refused_with_the_names_that_exist(seed, targets):
    model = tiny_gpt(seed)
    before = snapshot(model)
    with pytest.raises(ValueError) as err:
        get_lora_model(model, LoraConfig(target_modules=targets))
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "lm_head"):
        assert name in str(err.value)
    if isinstance(targets, list):  # a misspelled name next to valid ones is named
        bad = [t for t in targets if t not in ("q_proj", "v_proj")]
        assert all(t in str(err.value) for t in bad)
    assert snapshot(model) == before
    lm = get_lora_model(model, LoraConfig(r=1, target_modules=["v_proj"]))
    before = snapshot(lm)
    with pytest.raises(ValueError, match="q_proj"):
        lm.add_adapter("b", LoraConfig(r=1, target_modules=targets))
    assert snapshot(lm) == before


@examples(10)
@given(case=tiny_mlps(), seed=seeds)
def test_unknown_or_duplicate_adapter_names_are_refused_before_any_change(case, seed):
    build, _ = case
    lm = two_adapters(build, seed)
    cfg = LoraConfig(r=1, target_modules="all-linear")
    calls = [
        (lambda: lm.set_adapter("c"), "unknown"),
        (lambda: lm.set_adapter(["a", "c"]), "unknown"),
        (lambda: lm.delete_adapter("c"), "unknown"),
        (lambda: lm.merge_adapter(["c"]), "unknown"),
        (lambda: lm.merge_adapter(["a", "c"]), "unknown"),
        (lambda: lm.add_adapter("b", cfg), "already exists"),
        (lambda: lm.add_weighted_adapter(["a", "c"], [1, 1], "d", "cat"), "unknown"),
        (lambda: lm.add_weighted_adapter(["a", "b"], [1], "d", "cat"), "equal length"),
        (lambda: lm.add_weighted_adapter([], [], "d", "cat"), "must be known"),
        (lambda: lm.add_weighted_adapter(["a", "b"], [1, 1], "b", "cat"), "already exists"),
        (lambda: lm.add_weighted_adapter(["a", "b"], [1, 1], "d", "ties"), "combination_type"),
        (lambda: lm.add_weighted_adapter(["a", "b"], [1, 1], "d", "linear"), "one rank"),
    ]
    before = snapshot(lm)
    for call, message in calls:
        with pytest.raises(ValueError, match=message):
            call()
        assert snapshot(lm) == before, message
    lm.merge_adapter()
    merged = snapshot(lm)
    for call, message in [(lambda: lm.add_adapter("c", cfg), "unmerge"),
                          (lambda: lm.delete_adapter("a"), "merged")]:
        with pytest.raises(ValueError, match=message):
            call()
        assert snapshot(lm) == merged


def test_gpt_adapter_training_moves_only_adapters_and_merges_exactly():
    """An end-to-end check on the tiny GPT: a few AdamW-free SGD steps, then merge."""
    build, idx = gpt_case(7)
    lm = get_lora_model(build(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    W0 = {k: p.data.copy() for k, p in lm.model.named_parameters() if not p.requires_grad}
    opt = SGD(lm.parameters(), lr=0.5)
    targets = np.random.default_rng(7).integers(0, 11, (2, 6))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(lm(idx), targets).backward()
        opt.step()
    assert all(np.any(layer.lora_A["default"].weight.data) for _, layer in lm.lora_layers())
    for k, p in lm.model.named_parameters():
        if k in W0:
            assert p.data.tobytes() == W0[k].tobytes(), k
    y = out(lm, idx)
    assert_close(y, out(with_deltas(build, deltas_of(lm, ["default"])), idx))
    lm.merge_adapter()
    assert_close(out(lm, idx), y)


@given(r=st.integers(1, 64), kind=st.sampled_from([np.int8, np.int32, np.int64, np.uint16]))
def test_any_integer_type_is_a_rank_and_is_stored_as_int(r, kind):
    """A NumPy integer (from ``np.arange`` in a sweep, say) is a valid r, kept as a Python int."""
    config = LoraConfig(r=kind(r), rank_pattern={"q_proj": kind(r)})
    assert type(config.r) is int and config.r == r
    assert type(config.rank_pattern["q_proj"]) is int
