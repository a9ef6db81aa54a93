"""The contract between the reference and the fast path (``minilora.fast``).

Every fast kernel computes what its reference computes: bit for bit where the op is element-
or row-wise and takes its steps in the same order (GELU, AdamW, the Linear layer's forward),
to float32 (or float64) rounding where the kernel sums in another order (row means as
matrix-vector products in layer norm, attention's softmax without its max shift, dB of the
fused LoRA op). A whole LoRA training run, merge included, agrees to rounding with the switch
on and off. And the switch is the only way in: importing minilora changes nothing in the process.
"""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minilora.functional as F
from minilora import Tensor, backend, fast
from minilora.fast import threads
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT, GPTConfig
from minilora.optim import AdamW
from minilora.train import loss_fn

pytestmark = pytest.mark.fast

seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from(["float32", "float64"])
n = st.integers(1, 9)
ROUNDING = {"float32": 2e-5, "float64": 1e-12}


@pytest.fixture(autouse=True)
def small_blocks_and_two_threads():
    """Small row blocks and two threads, so that small arrays really are cut and shared."""
    saved = threads.num_threads(), threads.BLOCK, threads.MIN_WORK
    threads.set_num_threads(2)
    threads.BLOCK, threads.MIN_WORK = 7, 1
    yield
    threads.set_num_threads(saved[0])
    threads.BLOCK, threads.MIN_WORK = saved[1:]


def both_ways(op, seed, dtype, *shapes):
    """``op``'s output and input gradients with the fast path off, then on."""
    def run():
        rng = np.random.default_rng(seed)
        inputs = [Tensor(rng.normal(size=s).astype(dtype), requires_grad=True) for s in shapes]
        out = op(*inputs)
        out.backward(rng.normal(size=out.shape).astype(dtype))
        return [out.data] + [t.grad for t in inputs]

    with fast.enabled(False):
        reference = run()
    with fast.enabled():
        kernel = run()
    return reference, kernel


def assert_same_bits(reference, kernel):
    for want, got in zip(reference, kernel):
        assert want.dtype == got.dtype and want.shape == got.shape
        assert np.array_equal(want, got)


def assert_rounding(reference, kernel, dtype):
    for want, got in zip(reference, kernel):
        assert want.dtype == got.dtype and want.shape == got.shape
        np.testing.assert_allclose(got, want, rtol=ROUNDING[dtype], atol=ROUNDING[dtype])


@given(seeds, dtypes, n, n, n)
def test_gelu_is_its_reference_to_the_bit(seed, dtype, B, T, C):
    assert_same_bits(*both_ways(F.gelu, seed, dtype, (B, T, C)))


@given(seeds, dtypes, n, n, n, st.booleans())
def test_linear_is_its_reference_to_rounding(seed, dtype, N, n_in, n_out, bias):
    shapes = [(N, n_in), (n_out, n_in)] + ([(n_out,)] if bias else [])
    reference, kernel = both_ways(F.linear, seed, dtype, *shapes)
    assert np.array_equal(reference[0], kernel[0])  # the forward: the same product and sum
    assert_rounding(reference, kernel, dtype)


@given(seeds, dtypes, n, n, n, st.integers(1, 4))
def test_the_fused_lora_op_is_the_composed_one_to_rounding(seed, dtype, N, n_in, n_out, r):
    op = lambda x, W, b, A, B: F.lora_linear(x, W, b, A, B, 1.5)
    reference, kernel = both_ways(op, seed, dtype, (2, N, n_in), (n_out, n_in), (n_out,),
                                  (r, n_in), (n_out, r))
    assert_rounding(reference, kernel, dtype)


@given(seeds, dtypes, n, n, st.integers(2, 9), st.booleans())
def test_layer_norm_is_its_reference_to_rounding(seed, dtype, B, T, C, affine):
    ln = (lambda x, w, b: F.layer_norm(x, C, w, b)) if affine else (lambda x: F.layer_norm(x, C))
    shapes = [(B, T, C)] + ([(C,), (C,)] if affine else [])
    assert_rounding(*both_ways(ln, seed, dtype, *shapes), dtype)


@given(seeds, dtypes, n, st.integers(1, 3), n, st.integers(1, 4), st.booleans())
def test_attention_is_its_reference_to_rounding(seed, dtype, B, H, T, D, causal):
    attn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert_rounding(*both_ways(attn, seed, dtype, *[(B, H, T, D)] * 3), dtype)


@given(seeds, dtypes)
def test_adamw_is_its_reference_to_the_bit(seed, dtype):
    def run():
        rng = np.random.default_rng(seed)
        params = [Tensor(rng.normal(size=s).astype(dtype), requires_grad=True)
                  for s in [(4, 3), (5,), (2, 2, 2)]]
        opt = AdamW(params, lr=1e-2)
        for _ in range(3):
            for p in params:
                p.grad = rng.normal(size=p.shape).astype(dtype)
            opt.step()
        return [p.data for p in params]

    with fast.enabled(False):
        reference = run()
    with fast.enabled():
        kernel = run()
    assert_same_bits(reference, kernel)


def lora_training_run(dtype: str):
    """Six AdamW steps of LoRA on a tiny GPT, then merge: the losses and the merged weights."""
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16, dtype=dtype)
    lm = get_lora_model(GPT(cfg, seed=0), LoraConfig(r=2, lora_alpha=4,
                                                     target_modules="all-linear",
                                                     init_lora_weights=False), seed=1)
    opt = AdamW(lm.parameters(), lr=1e-2)
    rng = np.random.default_rng(2)
    losses = []
    for _ in range(6):
        x = rng.integers(0, 11, size=(3, 8))
        loss = loss_fn(lm, x, np.roll(x, -1, axis=1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
    merged = lm.merge_and_unload()
    return np.array(losses), [backend.to_numpy(p.data) for p in merged.parameters()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_lora_training_run_with_merging_is_the_same_either_way(dtype):
    with fast.enabled(False):
        losses, weights = lora_training_run(dtype)
    with fast.enabled():
        fast_losses, fast_weights = lora_training_run(dtype)
    tolerance = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(fast_losses, losses, rtol=tolerance)
    assert len(weights) == len(fast_weights)
    for want, got in zip(weights, fast_weights):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


def test_the_switch_is_set_back_after_a_block_and_off_by_default():
    assert not fast.is_enabled()
    with fast.enabled():
        assert fast.is_enabled() and backend.kernels == fast.KERNELS
        with fast.enabled(False):
            assert not fast.is_enabled()
        assert fast.is_enabled()
    assert not fast.is_enabled()


def test_importing_minilora_changes_nothing_in_the_process():
    """Not the BLAS's thread count, not the allocator, and the fast path is not even loaded."""
    code = """
import numpy
from threadpoolctl import threadpool_info
before = [lib["num_threads"] for lib in threadpool_info()]
import minilora, minilora.lora, minilora.train, minilora.adapters, minilora.experiments.config
after = [lib["num_threads"] for lib in threadpool_info()]
from minilora import fast
print(before == after and len(before) > 0, fast.is_enabled(), fast.allocator.applied)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]


READING_PATH = ["backend", "tensor", "ops", "functional", "gradcheck", "nn", "model", "optim",
                "train", "lora_layer", "lora"]  # what an instructor reads to understand LoRA
# chapters the reading path imports that an instructor may skip; they obey the same rules,
# or the reading path would import threads or the fast path through them
BESIDE_IT = ["adapter_management", "backend_cupy", "lr_scheduler", "validation"]


def imports_of(module: str) -> set[str]:
    """The modules ``minilora/<module>.py`` imports (relative ones as ``minilora.<name>``)."""
    path = Path(__file__).parents[1] / "minilora" / f"{module}.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "minilora" + ("." + node.module if node.module else "") if node.level \
                else node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_the_reading_path_imports_no_threads_and_no_fast_path_and_has_no_circle():
    graph, modules = {}, READING_PATH + BESIDE_IT
    for module in modules:
        found = imports_of(module)
        bad = {m for m in found if m.split(".")[0] in ("threading", "ctypes", "concurrent")
               or m.startswith(("minilora.fast", "minilora.variants", "minilora.experiments"))}
        assert not bad, f"{module} imports {bad}"
        graph[module] = {m.split(".")[1] for m in found
                         if m.startswith("minilora.") and m.split(".")[1] in modules}

    def reaches(start, goal, seen=()):
        return any(m == goal or (m not in seen and reaches(m, goal, seen + (m,)))
                   for m in graph[start])

    circles = [m for m in modules if reaches(m, m)]
    assert not circles, f"import circle through {circles}"
