"""One set of threads for the fast path's CPU work, as in PyTorch.

NumPy runs a big matrix product on all cores (OpenBLAS has its own threads) but an element-wise
operation (exp, tanh, +, *) on one. So the fast kernels cut their rows into blocks
(:func:`blocks`) and share the blocks among a few threads (:func:`share`); NumPy lets go of the
GIL inside its loops, so the blocks really run at once. Products are shared the same way
(:func:`matmul`), with the BLAS held to one thread, so that OpenBLAS's own threads do not spin
on the cores the element-wise work needs (docs/fast.md has the measurements).

Same numbers: a block is computed by exactly the operations the whole array's would be, no
output element depends on another row, and the BLAS runs on one thread inside, so the results
are bit for bit those of one thread (tests/test_fast.py). A shared matrix product is the
exception, as with any threaded BLAS (see :func:`matmul`): runs that must agree to the last bit
use the same thread count, and the experiments use one.
"""
from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from .. import backend
from ..backend import xp

BLOCK = 1 << 18  # elements per block: a block's temporaries stay in the core's cache
MIN_WORK = 1 << 23  # multiply-adds (or element operations) per thread, and per piece of a
# shared product: less does not pay for handing work to a thread and waiting for it, and
# OpenBLAS's kernels for small matrices would sum in another order

PIECES = 4  # a shared product is cut into this many pieces per thread, each taken by the next
# free thread (see share): late or slow threads take fewer

_num_threads: int | None = None  # None: as many as the BLAS would use, read on first use
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # a forked child inherits the pool object but not its threads
_busy = threading.Lock()  # one region at a time; a caller on another thread runs inline


def num_threads() -> int:
    """How many threads the engine's CPU work is shared among (``torch.get_num_threads``).

    By default the BLAS's own count, which follows OMP_NUM_THREADS / OPENBLAS_NUM_THREADS and
    the cores this process may use: the experiments' one-thread workers stay on one thread.
    """
    global _num_threads
    if _num_threads is None:
        counts = [lib.num_threads for lib in _blas_libraries()]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1  # the cores this process may use (Linux), or all of them
        _num_threads = max(1, min(counts)) if counts else cores
    return _num_threads


def set_num_threads(n: int) -> None:
    """Share the engine's CPU work among ``n`` threads (1: all of it on the caller's)."""
    global _num_threads, _pool
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: need a positive integer, got {n!r}")
    if _pool is not None:
        _pool.shutdown()
        _pool = None
    _num_threads = n


def blocks(n_rows: int, row_size: int, align: int = 1) -> list[tuple]:
    """Indices ``x[lo:hi, ...]`` of contiguous blocks of about ``BLOCK`` elements (rows of
    ``row_size``) covering the first axis of length ``n_rows``, cut at multiples of ``align``
    rows; on a backend other than NumPy a single block (a GPU runs whole arrays)."""
    k = max(1, min(n_rows // align, n_rows * row_size // BLOCK)) if backend.is_numpy() else 1
    bounds = [0] + [n_rows * i // k // align * align for i in range(1, k)] + [n_rows]
    return [(slice(lo, hi), ...) for lo, hi in zip(bounds, bounds[1:])]


def share(fn, items: list, *per_item) -> list:
    """``[fn(items[i], *(p[i] for p in per_item)) for i ...]``, the items (row blocks, say)
    shared among the threads; the BLAS runs on one thread meanwhile.

    Each thread, the caller's among them, takes the next item not yet taken until none is
    left (OpenMP's dynamic schedule). So a thread that wakes late, or a core that a noisy
    neighbour slows down, simply does fewer items, instead of everyone waiting for it. After an
    item fails no thread takes another; the error is raised once every thread has stopped.
    """
    if len(items) == 1:  # the common case at small sizes: no thread, no lists
        with _one_blas_thread:
            return [fn(items[0], *(p[0] for p in per_item))]
    args = [(item,) + tuple(p[i] for p in per_item) for i, item in enumerate(items)]
    k = min(num_threads(), len(args)) if backend.is_numpy() else 1
    with _one_blas_thread:
        if k <= 1 or not _busy.acquire(blocking=False):
            return [fn(*a) for a in args]
        try:
            results, errors = [None] * len(args), []
            take = itertools.count()  # next(take) hands each item out once: atomic (GIL)

            def work():
                while (i := next(take)) < len(args) and not errors:  # none left, or a failure
                    try:
                        results[i] = fn(*args[i])
                    except BaseException as err:
                        errors.append(err)
                        return

            futures = [_get_pool().submit(work) for _ in range(k - 1)]
            work()
            for f in futures:
                f.result()
            if errors:
                raise errors[0]
            return results
        finally:
            _busy.release()


def matmul(a, b, bias=None):
    """``a @ b (+ bias)`` for 2-D ``a`` (M, K), ``b`` (K, N) and ``bias`` (N,), as
    ``torch.addmm``: the rows of the product (its columns, if it is wider than tall) shared
    among the threads, each a one-thread BLAS product that adds its part of the bias at once.

    Only a big product is shared, cut at multiples of 64 rows (or columns). Like a product
    OpenBLAS shares among its own threads, a block may round differently from the whole on
    some kernels (seen: OpenBLAS's Haswell sgemm, its SkylakeX dgemm; its SkylakeX sgemm, which
    the figures were made with, gives the same bits); the sums are the same, their order is not.
    """
    M, N = a.shape[0], b.shape[1]
    big = max(M, N)
    k = 1 if num_threads() == 1 or not backend.is_numpy() \
        else min(PIECES * num_threads(), big // 64, M * N * a.shape[1] // MIN_WORK)
    if k <= 1:
        with _one_blas_thread:
            out = xp.matmul(a, b)
        if bias is not None:
            out += bias  # in place on the fresh product: no second (M, N) array
        return out
    out = xp.empty((M, N), dtype=xp.result_type(a, b))

    def rows(r):  # (M_i, K) @ (K, N) -> rows M_i of the output
        xp.matmul(a[r], b, out=out[r])  # out= is NumPy's, as is k > 1
        if bias is not None:
            out[r] += bias

    def columns(c):  # (M, K) @ (K, N_i) -> columns N_i of the output
        xp.matmul(a, b[:, c], out=out[:, c])
        if bias is not None:
            out[:, c] += bias[c]

    cut = [0] + [big * i // k // 64 * 64 for i in range(1, k)] + [big]
    share(rows if M >= N else columns, [slice(lo, hi) for lo, hi in zip(cut, cut[1:])])
    return out


def run(*jobs, work: int) -> list:
    """``[job() for job in jobs]`` for independent jobs, such as a Linear layer's dW, dX and
    db: side by side, each thread taking the next job not yet taken (see :func:`share`), if their
    ``work`` (multiply-adds, say) in all is worth it; else one after another. Put the longest
    job first: the caller's thread takes it, as it starts before the others' threads wake."""
    if work < 2 * MIN_WORK:
        with _one_blas_thread:
            return [job() for job in jobs]
    return share(lambda job: job(), list(jobs))


class Output:
    """An op's output, written block by block, in place, by the threads that compute it.

    On NumPy the whole array is made first and each block is computed straight into its rows
    (``out=``), while they are in the computing thread's cache: no block is ever copied. Other
    namespaces have no ``out=`` (and run a single block): there the block is the array.
    """

    def __init__(self, shape: tuple[int, ...], dtype, like=None):
        """``like``: an array of this shape whose memory layout the output takes (a transposed
        view's gradient laid out as the view, so that transposing it back is free)."""
        self.array = None if not backend.is_numpy() else xp.empty(shape, dtype=dtype) \
            if like is None else xp.empty_like(like)

    def write(self, r, fn, *args):
        """``array[r] = fn(*args)`` for an array function ``fn`` (``xp.matmul``, ``xp.add``):
        computed in those rows; returns them, for in-place steps to follow."""
        if not backend.is_numpy():
            self.array = fn(*args)
            return self.array
        return fn(*args, out=self.array[r])

    def put(self, r, block):
        """``array[r] = block``, a copy (``block`` stays as it was); returns those rows."""
        if not backend.is_numpy():
            self.array = xp.asarray(block, copy=True)
            return self.array
        self.array[r] = block
        return self.array[r]


# -- the machinery -----------------------------------------------------------------------------
def _get_pool() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(num_threads() - 1, thread_name_prefix="minilora")
        _pool_pid = os.getpid()
    return _pool


_blas: list | None = None


def _blas_libraries() -> list:
    """threadpoolctl's handles on the BLAS libraries loaded in this process (NumPy's)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas


class _OneBlasThread:
    """Holds the BLAS to one thread from the first ``with`` to the last (nested or not)."""

    def __init__(self):
        self.lock, self.depth, self.saved = threading.Lock(), 0, []

    def __enter__(self):
        with self.lock:
            if self.depth == 0:  # the counts are read each time: the user may change them
                self.saved = [(lib, lib.get_num_threads()) for lib in _blas_libraries()]
                for lib, n in self.saved:
                    if n != 1:
                        lib.set_num_threads(1)
            self.depth += 1

    def __exit__(self, *exc):
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                for lib, n in self.saved:
                    if n != 1:
                        lib.set_num_threads(n)


_one_blas_thread = _OneBlasThread()


def one_blas_thread() -> _OneBlasThread:
    """``with one_blas_thread(): ...`` runs the block with the BLAS on one thread (as the
    engine's own work does), then gives it back its thread count."""
    return _one_blas_thread


__all__ = ["num_threads", "set_num_threads", "blocks", "share", "run", "matmul", "Output",
           "one_blas_thread"]
