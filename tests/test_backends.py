"""The engine is backend-clean: the core runs on a strict array-API namespace, not only NumPy.

``array_api_strict`` implements the Python array API standard and nothing more. It refuses what
CuPy refuses: NumPy-only functions, mixing its arrays with NumPy's, indexing beyond the standard.
Running the core here proves, without a GPU, that every array goes through the backend seam.
Because the seeded Generator draws on the host, both namespaces see the same numbers, so the
results must agree.
"""
import ast
import pathlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minilora.functional as F
from minilora import backend
from minilora.gradcheck import gradcheck, vjp_check
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT, GPTConfig
from minilora.optim import AdamW
from minilora.tensor import Tensor
from minilora.train import evaluate, train
from minilora.testing import (alphas, assert_close, examples, factors, lora_linear, lora_shapes,
                              seeds)

strict = pytest.importorskip("array_api_strict")
pytestmark = pytest.mark.lesson10

ENGINE = ["tensor.py", "ops.py", "functional.py", "gradcheck.py", "nn.py", "model.py",
          "optim.py", "train.py", "lora_layer.py", "lora.py", "analysis.py", "fast/threads.py",
          "fast/kernels.py", "fast/attention.py"]


@pytest.fixture(params=["numpy", "strict"])
def xp_name(request):
    backend.use(strict if request.param == "strict" else "numpy")
    yield request.param
    backend.use("numpy")


def tensor(shape, seed, dtype="float64"):
    return Tensor(backend.Generator(seed).normal(shape, dtype=dtype), requires_grad=True)


OPS = {
    "arith": (lambda a, b: (a * b - a / (b * b + 1)) ** 2.0 + 3.0, [(3, 4), (4,)]),
    "matmul": (lambda a, b: a @ b, [(2, 3, 4), (4, 5)]),
    "reduce": (lambda a: a.sum(axis=0) + a.mean(axis=1, keepdims=True) + a.max(axis=0), [(3, 3)]),
    "unary": (lambda a: (a.exp() + 1).log().tanh() + (a * a + 1).sqrt() + a.relu(), [(3, 4)]),
    "shape": (lambda a: a.reshape(6, 4).T.transpose(0, 1)[1:, ::2], [(2, 3, 4)]),
    "nn": (lambda x, w, b: F.log_softmax(F.gelu(F.layer_norm(F.linear(x, w), 5, None, b)), -1),
           [(2, 3, 4), (5, 4), (5,)]),
    "attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                  [(2, 3, 4), (2, 3, 4), (2, 3, 4)]),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_gradients_on_every_namespace(xp_name, name):
    fn, shapes = OPS[name]
    inputs = [tensor(s, i) for i, s in enumerate(shapes)]
    assert gradcheck(fn, inputs) and vjp_check(fn, inputs)
    if xp_name == "strict":
        assert all(type(t.grad).__module__.startswith("array_api_strict") for t in inputs)


def _run(xp_name):
    """A short LoRA training run, evaluation, merge and generation; returns host numbers."""
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
    x = backend.from_numpy(np.random.default_rng(0).integers(0, 11, (4, 8)), "int64")
    lm = get_lora_model(GPT(cfg), LoraConfig(r=2, target_modules="all-linear"), seed=1)
    history = train(lm, AdamW(lm.parameters(), lr=1e-2), lambda step: (x, x), 5)
    unmerged = backend.to_numpy(lm(x).data)
    lm.merge_adapter()
    merged = backend.to_numpy(lm(x).data)
    return history.loss, evaluate(lm, [(x, x)]), unmerged, merged, backend.to_numpy(
        lm.model.generate(x[:, :3], 4, temperature=0.0))


def test_training_lora_and_merging_agree_across_namespaces():
    results = {}
    for name in ("numpy", "strict"):
        backend.use(strict if name == "strict" else "numpy")
        try:
            results[name] = _run(name)
        finally:
            backend.use("numpy")
    (loss_n, ev_n, un_n, me_n, gen_n), (loss_s, ev_s, un_s, me_s, gen_s) = results.values()
    assert loss_n[-1] < loss_n[0]
    np.testing.assert_allclose(loss_s, loss_n, rtol=1e-6)
    assert ev_s == pytest.approx(ev_n, rel=1e-6)
    np.testing.assert_allclose(un_s, un_n, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(me_s, un_s, rtol=1e-4, atol=1e-5)  # merged = unmerged (float32)
    np.testing.assert_array_equal(gen_s, gen_n)


def test_the_strict_namespace_catches_a_stray_numpy_call(xp_name):
    """The mechanism the proof relies on: a NumPy call on a strict array yields an ndarray,
    and mixing that with strict arrays raises."""
    a = backend.xp.asarray([1.0, 2.0])
    stray = np.exp(a)
    if xp_name == "strict":
        with pytest.raises(TypeError):
            a + stray
    else:
        np.testing.assert_allclose(a + stray, [1 + np.e, 2 + np.e ** 2])


def test_engine_modules_do_not_import_numpy():
    """Only the seam (backend.py) and host-side I/O, plotting and benchmarks import NumPy."""
    root = pathlib.Path(backend.__file__).parent
    offenders = []
    for name in ENGINE:
        path = root / name
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{name}: {n}" for n in names if n.split(".")[0] == "numpy"]
    assert offenders == []


def test_asking_for_cupy_without_it_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name.startswith("cupy") or name.startswith("array_api_compat.cupy"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    with pytest.raises(RuntimeError, match=r"pip install 'minilora\[gpu\]'"):
        backend.use("cupy")
    assert backend.current() == "numpy"
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        backend.use("jax")


def test_lora_laws_on_every_namespace(xp_name):
    """B = 0 changes nothing; merge/unmerge round-trips; "cat" is the weighted sum of deltas."""
    xp = backend.xp
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, dtype="float64")
    x = backend.from_numpy(np.arange(16).reshape(2, 8) % 11, "int64")
    model = GPT(cfg)
    base = model(x).data
    lm = get_lora_model(model, LoraConfig(r=3, target_modules="all-linear"))
    assert bool(xp.all(lm(x).data == base))
    lm.add_adapter("b", LoraConfig(r=2, init_lora_weights=False, target_modules="all-linear"), 2)
    lm.add_adapter("c", LoraConfig(r=1, init_lora_weights=False, target_modules="all-linear"), 3)
    lm.set_adapter("b")
    W0 = {n: layer.base_layer.weight.data for n, layer in lm.lora_layers()}
    unmerged = lm(x).data
    lm.merge_adapter()
    assert float(xp.max(xp.abs(lm(x).data - unmerged))) < 1e-12
    lm.unmerge_adapter()
    for n, layer in lm.lora_layers():
        assert float(xp.max(xp.abs(layer.base_layer.weight.data - W0[n]))) < 1e-12
    lm.add_weighted_adapter(["b", "c"], [0.5, 2.0], "bc", combination_type="cat")
    for _, layer in lm.lora_layers():
        expected = 0.5 * layer.delta_weight("b") + 2.0 * layer.delta_weight("c")
        assert float(xp.max(xp.abs(layer.delta_weight("bc") - expected))) < 1e-12


def test_a_host_state_dict_loads_into_a_model_on_any_namespace():
    """Weights read from a file are NumPy arrays: they must load into a model built on another
    namespace (the pretraining cache onto a GPU model), and give the same outputs there."""
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    host = GPT(cfg, seed=3)
    tokens = np.arange(8).reshape(2, 4) % 11
    expected = host(tokens).numpy()
    backend.use(strict)
    try:
        moved = GPT(cfg, seed=0)
        moved.load_state_dict({k: backend.to_numpy(v) for k, v in host.state_dict().items()})
        out = backend.to_numpy(moved(backend.from_numpy(tokens, "int64")).data)
        assert all(type(p.data).__module__.startswith("array_api_strict")
                   for p in moved.parameters())
    finally:
        backend.use("numpy")
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.law(lesson=10)
@examples(10)
@given(shape=lora_shapes(), alpha=alphas, rslora=st.booleans(), seed=seeds)
def test_a_lora_layer_computes_the_same_numbers_on_every_namespace(shape, alpha, rslora, seed):
    """For every drawn LoraLinear (shape, rank, α, scaling rule, A and B) and input, the output
    W0 x + b + s B A x and the gradients ∂L/∂A = s Bᵀ G, ∂L/∂B = s G Aᵀ computed on the strict
    array-API namespace equal NumPy's to rounding: the formula goes through the backend seam.

    Source: the Python array API standard (``array_api_strict``); Hu et al. 2021, Section 4.1.
    """
    m, n, r = shape
    rng = np.random.default_rng(seed)
    A0, B0 = rng.standard_normal((r, n)), rng.standard_normal((m, r))
    x0, C0 = rng.standard_normal((5, n)), rng.standard_normal((5, m))
    results = {}
    for name in ("numpy", "strict"):
        backend.use(strict if name == "strict" else "numpy")
        try:
            layer = lora_linear(m, n, r, seed % 10_000, alpha=alpha, rslora=rslora)
            A, B = factors(layer)
            A.data, B.data = backend.from_numpy(A0, "float64"), backend.from_numpy(B0, "float64")
            y = layer(Tensor(backend.from_numpy(x0, "float64")))
            assert type(y.data).__module__.startswith("array_api_strict") == (name == "strict")
            (y.tanh() * Tensor(backend.from_numpy(C0, "float64"))).sum().backward()
            results[name] = [backend.to_numpy(a) for a in (y.data, A.grad, B.grad)]
        finally:
            backend.use("numpy")
    for got, want in zip(results["strict"], results["numpy"]):
        assert_close(got, want, 1e-12, scale=np.linalg.norm(want) + 1e-300)
