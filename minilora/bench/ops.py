"""The parts of a training step, measured one by one: what the bench's step time is made of.

* GEMM: float32 products through NumPy's BLAS on its own threads, through the engine's shared
  products, and on one thread (the kernel alone) — the machine's limit;
* a hand-off: what it costs to share a region of work with the other threads at all;
* each op of the GPT (the Linear layers at their three shapes, attention, GELU, layer norm),
  forward and backward on inputs of the shapes it has in the model, counted as often as one
  full fine-tuning step runs it. What the ops leave out (embeddings, cross-entropy, residual
  adds, AdamW, the autograd loop itself) is the step's time minus their sum.

Each is timed side by side with the same thing in PyTorch when it is installed.
"""
from __future__ import annotations

import statistics
import time

from .. import backend, functional as F
from ..backend import Generator, synchronize, to_numpy, xp
from ..fast import threads
from ..model import GPTConfig
from ..tensor import Tensor

GEMM_SIZES = ((512, 512, 512), (1024, 1024, 1024),  # the medium config's Linears' products:
              (2048, 256, 256), (2048, 256, 1024), (2048, 1024, 256))  # q/k/v/o, up, down
QUICK_GEMM_SIZES = ((64, 64, 64), (128, 128, 128))
SETTLE_S = 0.15  # pause before each timed sample, so the BLAS threads of the last case sleep


# -- timing -----------------------------------------------------------------------------------
def time_side_by_side(cases: dict, repeats: int, min_sample_s: float) -> dict:
    """Median seconds per call of each ``cases[name]()``, repeats interleaved across cases.

    Interleaving spreads a noisy neighbour's load over every case alike. One sample runs a case
    ``inner`` times back to back, enough to last ``min_sample_s``: the steady state of a training
    loop, and no timer noise for short steps. Each sample starts after a pause of ``SETTLE_S``
    and one untimed call: OpenBLAS's and OpenMP's worker threads spin for a while after a call,
    and would otherwise steal the cores from the next case (measured here: PyTorch's GEMM at
    half speed right after a NumPy one); the untimed call wakes this case's own threads.
    """
    inner = {}
    for name, fn in cases.items():  # warm-up: allocates optimizer state, fills caches
        fn()
        synchronize()
        t0 = time.perf_counter()
        fn()
        synchronize()
        inner[name] = max(1, round(min_sample_s / max(time.perf_counter() - t0, 1e-9)))
    samples = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            if min_sample_s:
                time.sleep(SETTLE_S)
                fn()
                synchronize()
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            synchronize()  # a GPU queues its kernels: wait for them before reading the clock
            samples[name].append((time.perf_counter() - t0) / inner[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def gemm_peak(sizes, repeats: int, min_sample_s: float, torch=None) -> dict:
    """float32 ``(m, k) @ (k, n)`` GFLOP/s through the backend's own threads (the peak), through
    the engine's shared products (:func:`minilora.threads.matmul`), on one thread (the BLAS's
    kernel alone, no threads to share among), and each in PyTorch if given.

    The one-thread rates tell the kernels apart: NumPy's OpenBLAS and PyTorch's MKL (on x86)
    differ by machine, and no sharing of work among threads makes up for a slower kernel.
    """
    gen = Generator(0)
    cases, flops = {}, {}
    for m, k, n in sizes:
        a, b = gen.normal((m, k)), gen.normal((k, n))
        key = f"{m}x{k}x{n}"
        flops[key] = 2 * m * k * n
        cases[key] = lambda a=a, b=b: xp.matmul(a, b)
        cases["engine " + key] = lambda a=a, b=b: threads.matmul(a, b)
        if backend.is_numpy():
            cases["1 thread " + key] = lambda a=a, b=b: _one_thread_matmul(a, b)
        if torch is not None:
            ta, tb = torch.from_numpy(to_numpy(a)), torch.from_numpy(to_numpy(b))
            cases["torch " + key] = lambda ta=ta, tb=tb: torch.matmul(ta, tb)
            cases["torch 1 thread " + key] = lambda ta=ta, tb=tb: _torch_one_thread(torch, ta, tb)
    times = time_side_by_side(cases, repeats, min_sample_s)
    rate = {name: flops[name.rsplit(" ", 1)[-1]] / t / 1e9 for name, t in times.items()}
    rows = []
    for key in flops:
        row = {"shape": key, "seconds": times[key], "gflops": rate[key],
               "engine_gflops": rate["engine " + key],
               "one_thread_gflops": rate.get("1 thread " + key)}
        if torch is not None:
            row["torch_gflops"] = rate["torch " + key]
            row["torch_one_thread_gflops"] = rate["torch 1 thread " + key]
        rows.append(row)
    return {"sizes": rows, "peak_gflops": max(r["gflops"] for r in rows),
            "engine_peak_gflops": max(r["engine_gflops"] for r in rows),
            "torch_peak_gflops": max(r["torch_gflops"] for r in rows) if torch else None}


def _one_thread_matmul(a, b):
    with threads.one_blas_thread():
        return xp.matmul(a, b)


def _torch_one_thread(torch, a, b):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.matmul(a, b)
    finally:
        torch.set_num_threads(threads)


def handoff_seconds(repeats: int, min_sample_s: float) -> float | None:
    """Median seconds of a region with no work in it: the caller hands a share to the other
    threads and waits for them to finish it, which is all that sharing work costs beyond the
    work (None with one thread). A training step at the medium config has ~125 regions."""
    if threads.num_threads() == 1 or not backend.is_numpy():
        return None
    empty = [0] * threads.num_threads()
    return time_side_by_side({"handoff": lambda: threads.share(_nothing, empty)}, repeats,
                             min_sample_s)["handoff"]


def _nothing(_):
    return None


# -- the GPT's ops ----------------------------------------------------------------------------
def op_shapes(cfg: GPTConfig, batch: int) -> dict:
    """name -> (what the op takes, how many times one full fine-tuning step runs it)."""
    C, T, L = cfg.n_embd, cfg.block_size, cfg.n_layer
    H, hidden = cfg.n_head, cfg.mlp_ratio * cfg.n_embd
    return {f"linear {C}->{C}": ((batch, T, C, C), 4 * L),  # q, k, v, o projections
            f"linear {C}->{hidden}": ((batch, T, C, hidden), L),  # up_proj
            f"linear {hidden}->{C}": ((batch, T, hidden, C), L),  # down_proj
            "lm_head": ((batch, T, C, cfg.vocab_size), 1),  # a Linear without bias
            "attention": ((batch, T, H, C // H), L),
            "gelu": ((batch, T, hidden), L),
            "layer_norm": ((batch, T, C), 2 * L + 1)}  # ln_1, ln_2 per block; ln_f


def _is_linear(name: str) -> bool:
    return name.startswith(("linear", "lm_head"))


def _inputs(gen: Generator, name: str, shape: tuple) -> tuple:
    """The op's inputs and the gradient of its output, as the model would hand them over."""
    if _is_linear(name):
        B, T, fin, fout = shape
        bias = (gen.normal((fout,)),) if name.startswith("linear") else ()
        return (gen.normal((B, T, fin)), gen.normal((fout, fin)) * fin ** -0.5) + bias, \
            gen.normal((B, T, fout))
    if name == "attention":  # heads split from (B, T, H, D): transposed views, as in the model
        B, T, H, D = shape
        return tuple(gen.normal((B, T, H, D)).transpose(0, 2, 1, 3) for _ in range(3)), \
            gen.normal((B, H, T, D))
    if name == "gelu":
        return (gen.normal(shape),), gen.normal(shape)
    return (gen.normal(shape), gen.normal(shape[-1:]), gen.normal(shape[-1:])), \
        gen.normal(shape)  # layer_norm: x, weight, bias


def _minilora_op(name: str, args: tuple, grad):
    def run():
        ts = [Tensor(a, requires_grad=True) for a in args]
        if _is_linear(name):
            out = F.linear(*ts)
        elif name == "attention":
            out = F.scaled_dot_product_attention(*ts, is_causal=True)
        elif name == "gelu":
            out = F.gelu(*ts)
        else:
            out = F.layer_norm(ts[0], ts[0].shape[-1], ts[1], ts[2])
        out.backward(grad)
    return run


def _torch_op(torch, name: str, args: tuple, grad):
    tf = torch.nn.functional
    ts = [torch.from_numpy(to_numpy(a)).requires_grad_(True) for a in args]
    g = torch.from_numpy(to_numpy(grad))

    def run():
        for t in ts:
            t.grad = None
        if _is_linear(name):
            out = tf.linear(*ts)
        elif name == "attention":
            out = tf.scaled_dot_product_attention(*ts, is_causal=True)
        elif name == "gelu":
            out = tf.gelu(ts[0], approximate="tanh")
        else:
            out = tf.layer_norm(ts[0], ts[0].shape[-1:], ts[1], ts[2])
        out.backward(g)
    return run


def bench_ops(cfg: GPTConfig, batch: int, step, repeats: int, min_sample_s: float,
              torch=None, torch_step=None) -> dict:
    """Forward + backward of each op, its count per step and its seconds per step, timed side
    by side with ``step()`` (a full fine-tuning step), whose time the ops leave is the rest."""
    gen = Generator(2)
    shapes, cases = op_shapes(cfg, batch), {"step": step}
    for name, (shape, _) in shapes.items():
        args, grad = _inputs(gen, name, shape)
        cases[name] = _minilora_op(name, args, grad)
        if torch is not None:
            cases["torch " + name] = _torch_op(torch, name, args, grad)
    if torch is not None:
        cases["torch step"] = torch_step
    times = time_side_by_side(cases, repeats, min_sample_s)
    rows = []
    for name, (shape, count) in shapes.items():
        row = {"op": name, "shape": list(shape), "per_step": count, "seconds": times[name],
               "step_seconds": count * times[name]}
        if torch is not None:
            row["torch_seconds"] = times["torch " + name]
            row["torch_step_seconds"] = count * times["torch " + name]
            row["over_torch"] = times[name] / times["torch " + name]
        rows.append(row)
    result = {"ops": rows, "step_s": times["step"],
              "rest_s": times["step"] - sum(r["step_seconds"] for r in rows)}
    if torch is not None:
        result.update(torch_step_s=times["torch step"], torch_rest_s=times["torch step"]
                      - sum(r["torch_step_seconds"] for r in rows))
    return result


__all__ = ["GEMM_SIZES", "QUICK_GEMM_SIZES", "time_side_by_side", "gemm_peak",
           "handoff_seconds", "op_shapes", "bench_ops"]
