"""After LoRA: QLoRA's 4-bit base (NF4, double quantization), DoRA, LoRA+, rsLoRA.

Oracles: the published NF4 table, brute-force nearest codes in NumPy, a plain Linear holding
the dequantized weight, DoRA's formula written out in NumPy, finite differences.
"""
import ast
import math
import pathlib
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from minilora import backend
from minilora.variants import quantize as Q
from minilora.variants.linear4bit import (BitsAndBytesConfig, Linear4bit, Params4bit,
                                          quantize_model, weight_bytes)
from minilora.lora import LoraConfig, get_lora_model
from minilora.lora_layer import LoraLinear, lora_scaling
from minilora.variants.loraplus import create_loraplus_optimizer, loraplus_param_groups
from minilora.model import GPT, GPTConfig
from minilora.nn import Linear
from minilora.optim import AdamW
from minilora.tensor import Tensor
from minilora.testing import gradcheck, quantizable_weights as weights

pytestmark = pytest.mark.lesson09

NF4_PUBLISHED = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                 -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                 0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                 0.33791524171829224, 0.44070982933044006, 0.5626170039176941,
                 0.7229568362236023, 1.0]
TYPES = list(Q.QUANT_TYPES)


def half_largest_gap(code) -> float:
    code = np.asarray(code, dtype=np.float64)
    return max(np.diff(code).max() / 2, 1 + code[0], 1 - code[-1])  # ±1 may lie past the ends


# -- code books --------------------------------------------------------------------------------
def test_nf4_code_book_is_the_published_one():
    assert np.abs(np.array(Q.create_normal_map()) - NF4_PUBLISHED).max() < 1e-6
    from scipy.stats import norm  # the construction as bitsandbytes writes it
    v1 = norm.ppf(np.linspace(0.9677083, 0.5, 9)[:-1])
    v3 = -norm.ppf(np.linspace(0.9677083, 0.5, 8)[:-1])
    values = np.sort(np.concatenate([v1, [0.0], v3]))
    assert np.abs(values / values.max() - Q.create_normal_map()).max() < 1e-12


def test_fp4_int4_and_dynamic_code_books():
    assert Q.create_fp4_map() == sorted({s * v / 6 for v in (0, .5, 1, 1.5, 2, 3, 4, 6)
                                         for s in (1, -1)})
    assert Q.create_int4_map() == [k / 7 for k in range(-7, 8)]
    dynamic = Q.create_dynamic_map()
    assert len(dynamic) == 256 and dynamic == sorted(dynamic) and dynamic[-1] == 1.0
    assert min(v for v in dynamic if v > 0) == pytest.approx(0.55e-6)  # 10⁻⁶ · (0.1 + 1)/2
    for name in TYPES:
        code = Q.CODE_BOOKS[name]()
        assert len(code) <= 16 and code[0] == -1.0 and code[-1] == 1.0 and 0.0 in code


# -- block-wise quantization ------------------------------------------------------------------
@pytest.mark.law(lesson=9)
@given(W=weights(), quant_type=st.sampled_from(TYPES), blocksize=st.sampled_from([2, 8, 64]))
def test_nearest_code_and_error_bound(W, quant_type, blocksize):
    """Block-wise 4-bit quantization: absmax is each block's max |w|, each w/absmax gets its
    nearest code, and |ŵ − w| ≤ (half the largest code gap)·absmax.

    Source: Dettmers et al. 2023, "QLoRA", Section 2 (block-wise k-bit quantization) and Section
    3 (the NF4 code book).
    """
    packed, state = Q.quantize_4bit(W, blocksize, False, quant_type)
    idx = Q.unpack_4bit(packed)[:W.size].astype(np.int64)
    code = np.asarray(state.code, dtype=np.float64)
    flat = np.concatenate([W.ravel(), np.zeros((-W.size) % blocksize, np.float32)])
    absmax = np.abs(flat.reshape(-1, blocksize)).max(axis=1)
    np.testing.assert_array_equal(state.absmax, absmax)
    a = np.repeat(absmax.astype(np.float64), blocksize)[:W.size]
    x = W.ravel() / np.where(a > 0, a, 1)
    distance = np.abs(x[:, None] - code[None, :])  # brute force: every code for every element
    assert np.all(distance[np.arange(x.size), idx] <= distance.min(axis=1) + 1e-6)
    err = np.abs(Q.dequantize_4bit(packed, state).astype(np.float64) - W)
    assert np.all(err.ravel() <= half_largest_gap(code) * a * (1 + 1e-6))


@pytest.mark.law(lesson=9)
@given(W=weights(), quant_type=st.sampled_from(TYPES))
def test_quantizing_a_dequantized_weight_returns_the_same_codes(W, quant_type):
    """Q(D(Q(w))) = Q(w): quantizing a dequantized weight returns the same codes and the same
    absmax.

    Source: Dettmers et al. 2023, "QLoRA", Section 2 (quantization to the nearest of a fixed code
    book).
    """
    packed, state = Q.quantize_4bit(W, 64, False, quant_type)
    again, state2 = Q.quantize_4bit(Q.dequantize_4bit(packed, state), 64, False, quant_type)
    np.testing.assert_array_equal(again, packed)
    np.testing.assert_array_equal(state2.absmax, state.absmax)


@given(idx=hnp.arrays(np.uint8, st.integers(1, 50).map(lambda n: 2 * n),
                      elements=st.integers(0, 15)))
def test_packing_round_trip(idx):
    packed = Q.pack_4bit(idx)
    assert packed.dtype == np.uint8 and packed.shape == (idx.size // 2,)
    np.testing.assert_array_equal(Q.unpack_4bit(packed), idx)
    assert Q.pack_4bit(np.array([1, 2], np.uint8))[0] == 0x12  # first index: high nibble


@pytest.mark.law(lesson=9)
@given(seed=st.integers(0, 2 ** 32 - 1), rows=st.integers(1, 40), cols=st.integers(1, 300),
       quant_type=st.sampled_from(TYPES))
def test_double_quantization_error_bound(seed, rows, cols, quant_type):
    """Double quantization: |â − a| ≤ (half an 8-bit code gap)·(the block's largest |a − mean|),
    the 4-bit codes are unchanged, and |w − ŵ| ≤ (half a 4-bit gap)·a + |â − a|.

    Source: Dettmers et al. 2023, "QLoRA", Section 3 (double quantization, 8-bit blocks of 256).
    """
    rng = np.random.default_rng(seed)  # Gaussian rows of scales 10⁻³ … 10³: many blocks
    W = (rng.standard_normal((rows, cols)) * 10.0 ** rng.uniform(-3, 3, (rows, 1))).astype("f4")
    packed, exact = Q.quantize_4bit(W, 8, False, quant_type)
    packed_dq, state = Q.quantize_4bit(W, 8, True, quant_type)
    np.testing.assert_array_equal(packed_dq, packed)
    a, a_hat = exact.absmax.astype(np.float64), Q.dequantize_absmax(state).astype(np.float64)
    centred = a - a.mean()
    pad = np.concatenate([np.abs(centred), np.zeros((-a.size) % Q.DQ_BLOCKSIZE)])
    c = np.repeat(pad.reshape(-1, Q.DQ_BLOCKSIZE).max(axis=1), Q.DQ_BLOCKSIZE)[:a.size]
    tol = 1e-6 * a.max()  # fp32 round-off of the mean and of the sums
    assert np.all(np.abs(a_hat - a) <= half_largest_gap(Q.create_dynamic_map()) * c + tol)
    err = np.abs(Q.dequantize_4bit(packed_dq, state).astype(np.float64) - W).ravel()
    a_el = np.repeat(a, 8)[:W.size]
    bound = half_largest_gap(exact.code) * a_el + np.repeat(np.abs(a_hat - a), 8)[:W.size]
    assert np.all(err <= bound * (1 + 1e-5) + tol)


def test_bits_per_parameter_from_the_stored_arrays():
    n_blocks = 1024 * 256 // 64
    W = backend.Generator(0).normal((1024, 256))
    plain = Q.bits_per_parameter(*Q.quantize_4bit(W, 64, False, "nf4"))
    double = Q.bits_per_parameter(*Q.quantize_4bit(W, 64, True, "nf4"))
    assert plain == 4 + 32 / 64  # 4-bit codes + one fp32 absmax per 64
    # 8-bit absmax codes, one fp32 constant per 256 of them, one fp32 mean
    assert double == 4 + 8 / 64 + 32 * (n_blocks // 256 + 1) / W.size
    assert plain - double == pytest.approx(0.373, abs=0.001)  # the paper's ≈ 0.37 bits saved


# -- the 4-bit layer ---------------------------------------------------------------------------
def quantized_and_plain(quant_type="nf4", double_quant=True, dtype="float64", seed=0):
    gen = backend.Generator(seed)
    linear = Linear(70, 9, generator=gen, dtype=dtype)
    q = Linear4bit.from_linear(linear, quant_type, double_quant)
    plain = Linear(70, 9, dtype=dtype)
    plain.weight.data = Q.dequantize_4bit(q.weight.packed, q.weight.quant_state)
    plain.bias = q.bias
    return q, plain, Tensor(gen.normal((4, 70), dtype=dtype), requires_grad=True)


@pytest.mark.parametrize("quant_type", TYPES)
def test_linear4bit_equals_a_linear_with_the_dequantized_weight(quant_type):
    q, plain, x = quantized_and_plain(quant_type)
    y = q(x)
    y.backward(np.ones(y.shape))
    gx, x.grad = x.grad, None
    y_plain = plain(x)
    y_plain.backward(np.ones(y.shape))
    np.testing.assert_array_equal(y.data, y_plain.data)
    np.testing.assert_array_equal(gx, x.grad)
    assert q.weight.requires_grad is False and q.weight.grad is None
    assert q.weight.shape == (9, 70) and q.weight.packed.shape == (320,)  # 630 → 640 codes, 2 a byte
    with pytest.raises(ValueError, match="frozen"):
        q.weight.requires_grad = True


def test_casting_a_quantized_layer_keeps_its_codes():
    q, _, _ = quantized_and_plain(dtype="float32")
    packed, absmax = q.weight.packed, q.weight.quant_state.absmax
    q.double()
    assert q.weight.dtype == np.float64 and q.weight.packed is packed
    assert q.weight.quant_state.absmax is absmax


def test_quantize_model_then_lora_on_top():
    cfg = GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_embd=64, n_head=2)
    model, reference = GPT(cfg, seed=1), GPT(cfg, seed=1)
    full = weight_bytes(model)
    quantize_model(model, BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                             bnb_4bit_use_double_quant=True))
    kinds = {n: type(m).__name__ for n, m in model.named_modules() if isinstance(m, Linear)}
    assert kinds.pop("lm_head") == "Linear" and set(kinds.values()) == {"Linear4bit"}
    assert model.num_parameters() == reference.num_parameters()
    assert weight_bytes(model) < 0.45 * full
    lm = get_lora_model(model, LoraConfig(r=2, target_modules="all-linear"))
    idx = np.arange(16).reshape(2, 8) % 20
    logits = lm(idx)
    with lm.disable_adapter():  # B = 0: QLoRA starts exactly as the quantized model ...
        np.testing.assert_array_equal(lm(idx).data, logits.data)
    exact = reference(idx).data  # ... which is close to the full-precision one
    assert np.linalg.norm(logits.data - exact) < 0.2 * np.linalg.norm(exact)
    logits.sum().backward()
    trained = {n for n, p in lm.named_parameters() if p.grad is not None}
    assert trained and all(".lora_" in n for n in trained)
    with pytest.raises(ValueError, match="already has LoRA"):
        quantize_model(model, BitsAndBytesConfig(load_in_4bit=True))


def test_a_qlora_adapter_round_trips_onto_the_same_quantized_base(tmp_path):
    from minilora.adapters import load_adapter
    cfg = GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_embd=64, n_head=2)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                             bnb_4bit_use_double_quant=True)
    lm = get_lora_model(quantize_model(GPT(cfg), bnb), LoraConfig(r=2, init_lora_weights=False))
    lm.save_pretrained(tmp_path)
    loaded = load_adapter(quantize_model(GPT(cfg), bnb), tmp_path)  # quantization is exact
    idx = np.arange(16).reshape(2, 8) % 20
    np.testing.assert_array_equal(loaded(idx).data, lm(idx).data)
    with pytest.raises(ValueError, match="different base"):  # not the fp32 base: say so
        load_adapter(GPT(cfg), tmp_path)


def test_merging_into_a_4bit_base_requantizes_and_warns():
    q, _, x = quantized_and_plain()
    layer = LoraLinear(q, r=2, init_lora_weights=False, generator=backend.Generator(3))
    exact = Q.dequantize_4bit(q.weight.packed, q.weight.quant_state) + layer.delta_weight()
    with pytest.warns(UserWarning, match="re-quantizes"):
        layer.merge()
    expected = Q.dequantize_4bit(*Q.quantize_4bit(exact, 64, True, "nf4"))
    np.testing.assert_array_equal(q.weight.data, expected)
    with pytest.warns(UserWarning, match="re-quantizes"):
        layer.unmerge()


# -- DoRA --------------------------------------------------------------------------------------
def dora_layer(init=False, dropout=0.0, seed=0, base=None):
    gen = backend.Generator(seed)
    base = base or Linear(7, 5, generator=gen, dtype="float64")
    return LoraLinear(base, r=3, lora_alpha=6, lora_dropout=dropout, init_lora_weights=init,
                      use_dora=True, generator=gen), \
        Tensor(gen.normal((4, base.in_features), dtype="float64"))


def dora_reference(layer, x, m):
    """b + diag(m / ‖W'‖_row) W' x with W' = W0 + s·B A, in NumPy."""
    W = layer.base_layer.weight.data + layer.delta_weight("default")
    return x.data @ ((m / np.linalg.norm(W, axis=1))[:, None] * W).T + layer.base_layer.bias.data


def test_dora_starts_equal_to_the_base_layer():
    layer, x = dora_layer(init=True)  # B = 0, m = ‖W0‖_row
    np.testing.assert_array_equal(layer.lora_magnitude_vector["default"].weight.data,
                                  np.linalg.norm(layer.base_layer.weight.data, axis=1))
    np.testing.assert_allclose(layer(x).data, layer.base_layer(x).data, rtol=0, atol=1e-14)


def test_dora_equals_lora_when_m_is_the_row_norm_of_the_adapted_weight():
    """With m = ‖W0 + s·B A‖_row (where DoRA starts, for any B), m/‖·‖ = 1: DoRA is LoRA."""
    layer, x = dora_layer(init=False)
    y_dora = layer(x).data
    layer.lora_magnitude_vector["default"].weight.requires_grad = False
    del layer.lora_magnitude_vector["default"]  # the same A, B without the magnitude: LoRA
    del layer.lora_variant["default"]
    np.testing.assert_allclose(y_dora, layer(x).data, rtol=0, atol=1e-13)


@pytest.mark.law(lesson=9)
@given(seed=st.integers(0, 10 ** 6), m_scale=st.floats(0.1, 3.0))
def test_dora_forward_merge_and_unmerge(seed, m_scale):
    """DoRA: y = b + diag(m / ‖W0 + s B A‖_row)(W0 + s B A) x; merged, the layer computes the same;
    unmerge restores W0.

    Source: Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation" (W' = m·V/‖V‖ with
    V = W0 + BA; PEFT's norm per output row).
    """
    layer, x = dora_layer(seed=seed)
    magnitude = layer.lora_magnitude_vector["default"].weight
    magnitude.data = magnitude.data * m_scale * np.linspace(0.5, 1.5, 5)
    W0, expected = layer.base_layer.weight.data, dora_reference(layer, x, magnitude.data)
    np.testing.assert_allclose(layer(x).data, expected, rtol=0, atol=1e-12)
    layer.merge()
    np.testing.assert_allclose(layer(x).data, expected, rtol=0, atol=1e-12)  # merged == DoRA
    layer.unmerge()
    np.testing.assert_allclose(layer.base_layer.weight.data, W0, rtol=0, atol=1e-12)


def test_dora_gradients_match_finite_differences():
    layer, x = dora_layer(seed=4)
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    m = layer.lora_magnitude_vector["default"].weight
    assert gradcheck(lambda *_: layer(x), [A, B, m, x])  # the norm is differentiated too


def test_dora_dropout_reaches_the_base_term_as_in_peft():
    layer, x = dora_layer(dropout=0.4, seed=2)
    layer.lora_dropout["default"].generator = backend.Generator(9)
    y = layer(x).data
    keep = (backend.Generator(9).uniform(x.shape) >= 0.4) / 0.6
    xd, W0 = x.data * keep, layer.base_layer.weight.data
    W = W0 + layer.delta_weight()
    scale = layer.lora_magnitude_vector["default"].weight.data / np.linalg.norm(W, axis=1)
    expected = layer.base_layer(x).data + (scale - 1) * (xd @ W0.T) + scale * (xd @ (W - W0).T)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)


def test_qdora_uses_the_dequantized_base():
    q, plain, _ = quantized_and_plain()
    dq, x = dora_layer(base=q, seed=5)
    dp, _ = dora_layer(base=plain, seed=5)
    np.testing.assert_allclose(dq(x).data, dp(x).data, rtol=0, atol=1e-12)


def test_dora_on_a_model_trains_m_and_round_trips_through_adapter_files(tmp_path):
    cfg = GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_embd=32, n_head=2, dtype="float64")
    lm = get_lora_model(GPT(cfg, seed=0), LoraConfig(r=2, use_dora=True, init_lora_weights=False))
    trainable, _ = lm.get_nb_trainable_parameters()
    assert trainable == 2 * (2 * (32 + 32) + 32)  # q, v: A, B and m (32 rows)
    for _, layer in lm.lora_layers():
        layer.lora_magnitude_vector["default"].weight.data *= 1.1
    idx = np.arange(16).reshape(2, 8) % 20
    expected = lm(idx).data
    lm.save_pretrained(tmp_path)
    from safetensors.numpy import load_file
    keys = load_file(tmp_path / "adapter_model.safetensors")
    assert "base_model.model.layers.0.attn.q_proj.lora_magnitude_vector" in keys
    from minilora.adapters import load_adapter
    loaded = load_adapter(GPT(cfg, seed=0), tmp_path)
    np.testing.assert_allclose(loaded(idx).data, expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="DoRA"):
        lm.add_weighted_adapter(["default"], [1.0], "combined")


# -- LoRA+ and rsLoRA --------------------------------------------------------------------------
def test_loraplus_groups_cover_the_trainable_parameters_once():
    cfg = GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_embd=32, n_head=2)
    lm = get_lora_model(GPT(cfg), LoraConfig(r=2, target_modules="all-linear", use_dora=True,
                                             bias="lora_only"))
    groups = loraplus_param_groups(lm, lr=1e-3, loraplus_lr_ratio=16)
    assert [g["lr"] for g in groups] == [1e-3, 16e-3]
    listed = [id(p) for g in groups for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in lm.parameters() if p.requires_grad)
    B_ids = {id(layer.lora_B["default"].weight) for _, layer in lm.lora_layers()}
    assert {id(p) for p in groups[1]["params"]} == B_ids
    opt = create_loraplus_optimizer(lm, AdamW, lr=1e-3, loraplus_lr_ratio=16, weight_decay=0.0)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 16e-3]


@pytest.mark.law(lesson=9)
@given(r=st.integers(1, 64), alpha=st.floats(0.5, 64))
def test_rslora_scaling(r, alpha):
    """rsLoRA: s = α/√r for every r and α, and ΔW = (α/√r) B A.

    Source: Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA".
    """
    assert lora_scaling(r, alpha, use_rslora=True) == pytest.approx(alpha / math.sqrt(r))
    layer = LoraLinear(Linear(8, 8, dtype="float64"), r=min(r, 8), lora_alpha=alpha,
                       use_rslora=True, init_lora_weights=False)
    s = alpha / math.sqrt(min(r, 8))
    assert layer.scaling["default"] == pytest.approx(s)
    BA = layer.lora_B["default"].weight.data @ layer.lora_A["default"].weight.data
    np.testing.assert_allclose(layer.delta_weight(), s * BA, rtol=1e-12)


# -- array-API cleanliness ---------------------------------------------------------------------
def test_variant_modules_do_not_import_numpy():
    root = pathlib.Path(__file__).parent.parent / "minilora" / "variants"
    for name in ("quantize.py", "linear4bit.py", "dora.py", "loraplus.py"):
        tree = ast.parse((root / name).read_text())
        imported = {a.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom))
                    for a in getattr(node, "names", [])} | {
            (node.module or "").split(".")[0] for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)}
        assert "numpy" not in imported and "scipy" not in imported, name


def test_qlora_and_dora_on_the_strict_array_api_namespace():
    strict = pytest.importorskip("array_api_strict")
    results = []
    for namespace in ("numpy", strict):
        backend.use(namespace)
        try:
            gen = backend.Generator(0)
            q = Linear4bit.from_linear(Linear(70, 9, generator=gen, dtype="float64"), "nf4", True)
            layer = LoraLinear(q, r=2, init_lora_weights=False, use_dora=True, generator=gen)
            x = Tensor(gen.normal((3, 70), dtype="float64"), requires_grad=True)
            y = layer(x)
            y.sum().backward()
            results.append([backend.to_numpy(a) for a in (y.data, x.grad, q.weight.packed)])
        finally:
            backend.use("numpy")
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
