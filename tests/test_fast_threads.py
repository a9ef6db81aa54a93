"""``minilora.fast.threads``: sharing the work among threads changes no number.

The law: for every op that cuts its rows into blocks or shares its products among threads,
the outputs and gradients are bit for bit the same for any block size and any thread count,
including one thread on whole arrays. The tests shrink the block size so that small arrays are
cut into many blocks, and compare exact bits, not tolerances.
"""
import multiprocessing
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minilora.functional as F
from minilora import Tensor, fast
from minilora.fast import threads
from minilora.optim import AdamW

from minilora.testing import assert_close

pytestmark = pytest.mark.fast


@pytest.fixture(autouse=True)
def fast_path_with_its_settings_restored():
    """Every test here runs the fast kernels; the thread settings are set back after it."""
    n, block, work, pieces = (threads.num_threads(), threads.BLOCK, threads.MIN_WORK,
                                    threads.PIECES)
    with fast.enabled():
        yield
    threads.set_num_threads(n)
    threads.BLOCK, threads.MIN_WORK, threads.PIECES = block, work, pieces


def run_with(n: int, block: int, fn):
    """``fn()`` with ``n`` threads, row blocks of ``block`` elements, and any work, however
    small, shared (products are still cut only at multiples of 64 rows)."""
    threads.set_num_threads(n)
    threads.BLOCK, threads.MIN_WORK = block, 1
    return fn()


SETTINGS = [(1, 1 << 40), (1, 7), (2, 7), (3, 50), (2, 1 << 40)]  # whole arrays first


def assert_same_bits_everywhere(fn):
    """fn() -> list of arrays; equal bits under every thread count and block size."""
    reference = run_with(*SETTINGS[0], fn)
    for n, block in SETTINGS[1:]:
        for want, got in zip(reference, run_with(n, block, fn)):
            assert want.dtype == got.dtype and want.shape == got.shape
            assert np.array_equal(want, got), f"{n} threads, blocks of {block} differ"


def leaves(seed, dtype, *shapes):
    rng = np.random.default_rng(seed)
    return [Tensor(rng.normal(size=s).astype(dtype), requires_grad=True) for s in shapes]


def outputs_and_grads(op, seed, dtype, *shapes):
    def fn():
        inputs = leaves(seed, dtype, *shapes)
        out = op(*inputs)
        g = np.random.default_rng(seed + 1).normal(size=out.shape).astype(dtype)
        out.backward(g)
        return [out.data] + [t.grad for t in inputs]
    return fn


dtypes = st.sampled_from(["float32", "float64"])
seeds = st.integers(0, 2**32 - 1)
n = st.integers(1, 9)


@given(seeds, dtypes, n, n, n, st.integers(1, 300))
def test_gelu_and_layer_norm_are_the_same_bits_for_any_threads(seed, dtype, B, T, C, rows):
    assert_same_bits_everywhere(outputs_and_grads(F.gelu, seed, dtype, (B, T, C)))
    ln = lambda x, w, b: F.layer_norm(x, C, w, b)
    assert_same_bits_everywhere(outputs_and_grads(ln, seed, dtype, (B, T, C), (C,), (C,)))
    assert_same_bits_everywhere(outputs_and_grads(ln, seed, dtype, (rows, C), (C,), (C,)))


@given(seeds, dtypes, n, st.integers(1, 3), n, st.integers(1, 4), st.booleans())
def test_attention_is_the_same_bits_for_any_threads(seed, dtype, B, H, T, D, causal):
    attn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert_same_bits_everywhere(outputs_and_grads(attn, seed, dtype, *[(B, H, T, D)] * 3))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_attention_with_extreme_scores_in_one_block_only_is_the_same_bits(dtype):
    """Scores beyond exp's range in one batch element: every row is shifted by its max, as
    on the whole array, not just the rows of the block that holds them."""
    loud = np.ones((6, 1, 1, 1), dtype)
    loud[0] = 1e4
    attn = lambda q, k, v: F.scaled_dot_product_attention(q * Tensor(loud), k, v, is_causal=True)
    assert_same_bits_everywhere(outputs_and_grads(attn, 0, dtype, *[(6, 2, 5, 4)] * 3))


@given(seeds, dtypes, n, n, n, st.booleans())
def test_linear_layers_are_the_same_bits_for_any_threads(seed, dtype, N, n_in, n_out, bias):
    shapes = [(N, n_in), (n_out, n_in)] + ([(n_out,)] if bias else [])
    assert_same_bits_everywhere(outputs_and_grads(F.linear, seed, dtype, *shapes))
    lora = lambda x, W, A, B: F.lora_linear(x, W, None, A, B, 2.0)
    shapes = [(N, n_in), (n_out, n_in), (3, n_in), (n_out, 3)]
    assert_same_bits_everywhere(outputs_and_grads(lora, seed, dtype, *shapes))


@given(seeds, dtypes)
def test_adamw_updates_are_the_same_bits_for_any_threads(seed, dtype):
    def fn():
        params = leaves(seed, dtype, (4, 3), (5,), (2, 2, 2))
        opt = AdamW(params, lr=1e-2)
        for step in range(3):
            for i, p in enumerate(params):
                p.grad = np.random.default_rng([seed, step, i]).normal(size=p.shape).astype(dtype)
            opt.step()
        return [p.data for p in params]
    assert_same_bits_everywhere(fn)


sizes = st.one_of(st.integers(1, 9), st.integers(60, 700))  # small, and big enough to share


@given(seeds, dtypes, sizes, sizes, st.integers(1, 300), st.sampled_from(["nn", "nt", "tn"]),
       st.booleans())
def test_shared_products_are_the_whole_products_to_rounding(seed, dtype, M, N, K, layout, bias):
    """The same sums, perhaps in another order (as in any threaded BLAS); and every run of a
    thread count gives the same bits."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(M, K) if layout[0] == "n" else (K, M)).astype(dtype)
    b = rng.normal(size=(K, N) if layout[1] == "n" else (N, K)).astype(dtype)
    a, b = (a if layout[0] == "n" else a.T), (b if layout[1] == "n" else b.T)
    c = rng.normal(size=N).astype(dtype) if bias else None
    exact = a.astype(np.float64) @ b.astype(np.float64) + (c if bias else 0)
    tolerance = 1e-5 if dtype == "float32" else 1e-13
    scale = np.sqrt(K) * np.sqrt(M * N)  # the size of the rounding of M·N sums of K terms
    for n in (1, 2, 3):
        got = run_with(n, threads.BLOCK, lambda: threads.matmul(a, b, c))
        assert got.dtype == dtype and got.shape == (M, N)
        assert_close(got, exact, tolerance, scale)
        assert np.array_equal(got, threads.matmul(a, b, c))
    ab, ba = run_with(2, threads.BLOCK, lambda: threads.run(lambda: a @ b, lambda: b.T @ a.T,
                                                            work=1 << 40))
    assert_close(ab, exact - (c if bias else 0), tolerance, scale)
    assert_close(ba.T, exact - (c if bias else 0), tolerance, scale)


def test_a_big_product_is_shared_at_multiples_of_64(monkeypatch):
    calls = []
    real = threads.share
    monkeypatch.setattr(threads, "share", lambda fn, items: calls.append(items) or real(fn, items))
    threads.set_num_threads(3)
    threads.PIECES = 1
    a, b = np.ones((1000, 256), np.float32), np.ones((256, 300), np.float32)
    assert np.array_equal(threads.matmul(a, b), np.full((1000, 300), 256, np.float32))
    assert calls == [[slice(0, 320), slice(320, 640), slice(640, 1000)]]
    threads.PIECES, threads.MIN_WORK = 4, 1  # 12 pieces (taken by whichever thread is free)
    assert np.array_equal(threads.matmul(a, b), np.full((1000, 300), 256, np.float32))
    cuts = [piece.start for piece in calls[1]] + [1000]
    assert len(calls[1]) == 12 and [piece.stop for piece in calls[1]] == cuts[1:]
    assert cuts[0] == 0 and all(c % 64 == 0 and c < d for c, d in zip(cuts, cuts[1:]))


def test_blocks_cover_the_rows_in_order():
    threads.BLOCK = 10
    rows = threads.blocks(7, 3)  # 21 elements in blocks of ~10: 2 blocks
    assert rows == [(slice(0, 3), ...), (slice(3, 7), ...)]
    assert threads.blocks(5, 100) == [(slice(i, i + 1), ...) for i in range(5)]  # never empty
    assert threads.blocks(200, 100, align=64) == [(slice(0, 64), ...), (slice(64, 128), ...),
                                                   (slice(128, 200), ...)]
    assert threads.blocks(63, 100, align=64) == [(slice(0, 63), ...)]


def test_share_waits_for_every_run_and_then_raises():
    threads.set_num_threads(3)
    done = []

    def work(i):
        if i == 0:
            raise RuntimeError("block 0 failed")
        done.append(i)

    with pytest.raises(RuntimeError, match="block 0 failed"):
        threads.share(work, list(range(6)))
    # the caller takes item 0 and fails; the other threads stop taking items, and share returns
    # only once they have stopped: nothing runs after the error is raised
    finished = list(done)
    threading.Event().wait(0.05)
    assert done == finished and 0 not in done


def test_a_second_caller_thread_computes_the_same_inline():
    threads.set_num_threads(2)
    x = np.random.default_rng(0).normal(size=(64, 33))
    want = F.gelu(Tensor(x)).data
    results = []
    callers = [threading.Thread(target=lambda: results.append(F.gelu(Tensor(x)).data))
               for _ in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert len(results) == 4 and all(np.array_equal(r, want) for r in results)


def _gelu_in_child(queue):
    x = np.linspace(-3, 3, 4096).reshape(64, 64)
    queue.put(F.gelu(Tensor(x)).data)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_forked_child_gets_threads_of_its_own():
    """A child forked after the pool started inherits the pool object but not its threads."""
    threads.set_num_threads(2)
    threads.BLOCK = 256
    x = np.linspace(-3, 3, 4096).reshape(64, 64)
    want = F.gelu(Tensor(x)).data  # starts the pool here
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_gelu_in_child, args=(queue,))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_refuses_what_is_not_a_positive_integer(bad):
    with pytest.raises(ValueError, match="positive integer"):
        threads.set_num_threads(bad)
