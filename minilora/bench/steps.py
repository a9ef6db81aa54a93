"""``minilora bench``: how fast the engine trains and infers, measured against the machine's limit.

A GPT training step is mostly matrix products, so the physical limit is the BLAS's float32 GEMM
rate. The bench measures, side by side in one process and as medians over interleaved repeats:

* the GEMM peak through the backend (GFLOP/s at a few sizes), and what handing work to the
  engine's threads costs (:mod:`minilora.bench.ops`);
* a training step (forward, cross-entropy, backward, AdamW), full fine-tuning and LoRA (r = 8 on
  q_proj, v_proj): step time, tokens/s, achieved GFLOP/s from :func:`matmul_flops`, and the
  fraction of the GEMM peak that is; the same step on the reference ops (the fast path off);
* inference: base vs LoRA unmerged vs LoRA merged (Section 4.2: merging adds no latency);
* where the full step's time goes: each op forward and backward, times its count per step
  (:mod:`minilora.bench.ops`);
* memory of one training step (tracemalloc sees NumPy's allocations), with its parts;
* if PyTorch is installed, the identical model in PyTorch eager with the same thread count.

``minilora bench --quick`` runs tiny configs once or twice: a smoke test, not a measurement.
"""
from __future__ import annotations

import os
import platform

from .. import fast, functional as F
from ..accounting import measure_training_memory
from ..backend import Generator, to_numpy, xp
from ..fast import threads
from ..model import GPT, GPTConfig
from ..optim import AdamW
from ..tensor import no_grad
from .ops import (GEMM_SIZES, QUICK_GEMM_SIZES, bench_ops, gemm_peak, handoff_seconds,
                  time_side_by_side)

LORA = dict(r=8, lora_alpha=8, target_modules=("q_proj", "v_proj"))  # W_q, W_v as in Section 7.1

# name -> (model config, batch size); the sequence length is the block size
CONFIGS = {
    "sweep": (GPTConfig(vocab_size=67, block_size=17, n_layer=2, n_head=4, n_embd=128), 32),
    "small": (GPTConfig(vocab_size=64, block_size=64, n_layer=4, n_head=4, n_embd=128), 32),
    "medium": (GPTConfig(vocab_size=64, block_size=128, n_layer=6, n_head=8, n_embd=256), 16),
    "tiny": (GPTConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, n_embd=32), 4),
}
DEFAULT_CONFIGS = ("sweep", "small", "medium")
# -- counting ---------------------------------------------------------------------------------
def matmul_flops(cfg: GPTConfig, batch: int, seq: int, lora_r: int = 0,
                 target_modules=("q_proj", "v_proj")) -> dict:
    """FLOPs (2 per multiply-add) of the matrix products in one step of the GPT.

    Forward: every Linear (2·N·in·out for N = batch·seq tokens) and attention's Q Kᵀ and P V
    (2·B·T²·C each). Backward: dX = g W wherever the input needs a gradient, dW = gᵀ X only for
    a trainable weight; with ``lora_r`` the base is frozen (no dW at all, and below layer 0's
    adapters no dX either) and each adapted layer adds its thin products with A and B.
    """
    N, C, T = batch * seq, cfg.n_embd, seq
    full = lora_r == 0
    flops = {"forward": 0, "backward": 0}

    def linear(fin: int, fout: int, name: str, grad_in: bool) -> bool:
        """Count one Linear; returns whether its output needs a gradient."""
        adapted = not full and name in target_modules
        dense = 2 * N * fin * fout
        flops["forward"] += dense
        flops["backward"] += dense * grad_in + dense * full  # dX; dW only when W trains
        if adapted:  # h = x Aᵀ (N, r), y += s h Bᵀ; backward dB, dh, dA, and dX if needed
            a, b = 2 * N * fin * lora_r, 2 * N * lora_r * fout
            flops["forward"] += a + b
            flops["backward"] += 2 * b + a + a * grad_in
        return grad_in or full or adapted

    attn = 2 * batch * T * T * C  # Q Kᵀ over all heads: B·H·T·T·(C/H) multiply-adds
    stream = full  # does the residual stream need a gradient? (embeddings train in full FT)
    for _ in range(cfg.n_layer):
        q, k, v = (linear(C, C, n, stream) for n in ("q_proj", "k_proj", "v_proj"))
        flops["forward"] += 2 * attn  # S = Q Kᵀ, O = P V
        flops["backward"] += attn * (v + (q or k) + q + k)  # dV, dP, dQ, dK
        o = linear(C, C, "o_proj", q or k or v)
        stream = stream or o
        up = linear(C, cfg.mlp_ratio * C, "up_proj", stream)
        down = linear(cfg.mlp_ratio * C, C, "down_proj", up)
        stream = stream or down
    linear(C, cfg.vocab_size, "lm_head", stream)
    flops["total"] = flops["forward"] + flops["backward"]
    return flops


# -- the models under test --------------------------------------------------------------------
def _lora_api():
    try:
        from ..lora import LoraConfig, get_lora_model
    except ImportError:
        return None
    return LoraConfig, get_lora_model


def _minilora_model(cfg: GPTConfig, mode: str):
    """A GPT with ``mode`` "full", "lora" (unmerged) or "merged"."""
    model = GPT(cfg, seed=0)
    if mode == "full":
        return model
    LoraConfig, get_lora_model = _lora_api()
    lm = get_lora_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["lora_alpha"],
                                          target_modules=list(LORA["target_modules"])), seed=0)
    if mode == "merged":
        lm.merge_adapter()
    return lm


def _minilora_step(model, opt, x, y):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _reference_step(model, opt, x, y):
    """The same step on the reference ops: the fast path switched off for it."""
    with fast.enabled(False):
        _minilora_step(model, opt, x, y)


def _torch_step(torch, model, opt, x, y):
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()


def training_memory(model, x, y) -> dict:
    """Bytes of one training step, with its parts (:func:`minilora.accounting.measure_training_memory`,
    after a first step has allocated the optimizer state): ``total_peak`` adds the parameters
    and optimizer state, which exist before the step, to the step's own peak."""
    opt = AdamW(model.parameters(), lr=1e-3)
    _minilora_step(model, opt, x, y)  # allocates the optimizer state
    m = measure_training_memory(model, opt, x, y, loss_fn=lambda model, x, y:
                                F.cross_entropy(model(x), y))
    return {"parameters": m["parameters"], "gradients": m["gradients"],
            "optimizer_states": m["optimizer_state"], "activations": m["activations"],
            "step_peak": m["peak_step"],
            "total_peak": m["parameters"] + m["optimizer_state"] + m["peak_step"]}


def _same_model(mine, theirs, mode: str) -> None:
    """The PyTorch twin must have the very parameter counts of the minilora model."""
    counts = [(mine.num_parameters(only_trainable=True), mine.num_parameters()),
              (sum(p.numel() for p in theirs.parameters() if p.requires_grad),
               sum(p.numel() for p in theirs.parameters()))]
    if counts[0] != counts[1]:
        raise RuntimeError(f"bench: the PyTorch twin is not the same model ({mode}: "
                           f"(trainable, all) = {counts[0]} vs {counts[1]})")


def _step_cases(cfg: GPTConfig, x, y, modes, torch=None) -> tuple[dict, dict]:
    """One training step of each mode as a callable (and of its PyTorch twin), and the models."""
    models = {mode: _minilora_model(cfg, mode) for mode in modes}
    cases = {}
    for mode, model in models.items():
        opt = AdamW(model.parameters(), lr=1e-3)
        cases[mode] = lambda m=model, o=opt: _minilora_step(m, o, x, y)
        cases["reference " + mode] = lambda m=model, o=opt: _reference_step(m, o, x, y)
    if torch is not None:
        from . import torch_twin
        tx, ty = torch.from_numpy(to_numpy(x)), torch.from_numpy(to_numpy(y))
        for mode in modes:
            tm = torch_twin.build(cfg, lora_r=LORA["r"] if mode == "lora" else 0)
            _same_model(models[mode], tm, mode)
            topt = torch.optim.AdamW([p for p in tm.parameters() if p.requires_grad], lr=1e-3)
            cases["torch " + mode] = lambda tm=tm, o=topt: _torch_step(torch, tm, o, tx, ty)
    return cases, models


def bench_training(cfg: GPTConfig, x, steps: dict, models: dict, repeats: int,
                   min_sample_s: float) -> dict:
    """Step time, tokens/s and achieved GFLOP/s of full fine-tuning and LoRA, side by side
    (``steps`` and ``models`` from :func:`_step_cases`)."""
    batch, seq = x.shape
    modes, has_torch = tuple(models), "torch full" in steps
    times = time_side_by_side(steps, repeats, min_sample_s)
    result = {}
    for mode in modes:
        flops = matmul_flops(cfg, batch, seq, LORA["r"] if mode == "lora" else 0,
                             LORA["target_modules"])["total"]
        t = times[mode]
        row = {"step_s": t, "tokens_per_s": batch * seq / t, "matmul_gflop": flops / 1e9,
               "gflops": flops / t / 1e9,
               "trainable_params": models[mode].num_parameters(only_trainable=True),
               "reference_step_s": times["reference " + mode],
               "reference_over_fast": times["reference " + mode] / t}
        if has_torch:
            row["torch_step_s"] = times["torch " + mode]
            row["over_torch"] = t / times["torch " + mode]
        result[mode] = row
    if "lora" in modes:
        result["lora_over_full"] = times["lora"] / times["full"]
        result["flops_lora_over_full"] = (result["lora"]["matmul_gflop"]
                                          / result["full"]["matmul_gflop"])
        if has_torch:
            result["torch_lora_over_full"] = times["torch lora"] / times["torch full"]
    return result


def bench_inference(cfg: GPTConfig, x, modes, repeats: int, min_sample_s: float,
                    torch=None) -> dict:
    """Forward time (no_grad, eval) of the base model, LoRA unmerged and LoRA merged."""
    names = {"full": "base", "lora": "lora_unmerged", "merged": "lora_merged"}
    modes = ("full", "lora", "merged") if "lora" in modes else ("full",)

    def forward(model):
        with no_grad():
            model(x)

    cases = {mode: (lambda m=_minilora_model(cfg, mode).eval(): forward(m)) for mode in modes}
    if torch is not None:
        from . import torch_twin
        tx = torch.from_numpy(to_numpy(x))

        def torch_forward(model):
            with torch.inference_mode():
                model(tx)

        for mode in modes:
            tm = torch_twin.build(cfg, lora_r=LORA["r"] if mode != "full" else 0,
                                   merged=mode == "merged").eval()
            cases["torch " + mode] = lambda m=tm: torch_forward(m)
    times = time_side_by_side(cases, repeats, min_sample_s)
    batch, seq = x.shape
    result = {}
    for mode in modes:
        row = {"forward_s": times[mode], "tokens_per_s": batch * seq / times[mode]}
        if torch is not None:
            row["torch_forward_s"] = times["torch " + mode]
        result[names[mode]] = row
    if "lora" in modes:
        result["unmerged_over_base"] = times["lora"] / times["full"]
        result["merged_over_base"] = times["merged"] / times["full"]
    return result


def bench_config(name: str, repeats: int, min_sample_s: float, torch=None) -> dict:
    """Training, inference and memory for one of :data:`CONFIGS`."""
    cfg, batch = CONFIGS[name]
    seq = cfg.block_size
    gen = Generator(1)
    x, y = (gen.integers(0, cfg.vocab_size, (batch, seq)) for _ in range(2))  # (B, T) token ids
    modes = ("full", "lora") if _lora_api() else ("full",)
    memory = {mode: training_memory(_minilora_model(cfg, mode), x, y) for mode in modes}
    if "lora" in modes:
        memory["lora_over_full"] = memory["lora"]["total_peak"] / memory["full"]["total_peak"]
    steps, models = _step_cases(cfg, x, y, modes, torch)
    train = bench_training(cfg, x, steps, models, repeats, min_sample_s)
    # the ops are timed beside the full step again, so that the rest is step minus ops of one run
    breakdown = bench_ops(cfg, batch, steps["full"], repeats, min_sample_s,
                          torch, steps.get("torch full"))
    return {"config": {k: getattr(cfg, k) for k in ("vocab_size", "n_embd", "n_layer", "n_head",
                                                    "mlp_ratio")},
            "batch": batch, "seq": seq, "tokens": batch * seq, "train": train,
            "ops": breakdown,
            "infer": bench_inference(cfg, x, modes, repeats, min_sample_s, torch),
            "memory": memory}


# -- the environment --------------------------------------------------------------------------
def _cpu_model() -> str:
    """The processor's name (results differ between machines of one kind: an earlier run of
    this bench on an AMD EPYC and one on an Intel Xeon, both 2-core VMs, disagree by 40%)."""
    try:
        with open("/proc/cpuinfo") as f:  # Linux; platform.processor() is often empty there
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def _cpuidle() -> str | None:
    """How an idle core waits (Linux): a VM whose idle cores halt at once (haltpoll with
    guest_halt_poll_ns 0) pays a trip through the hypervisor to wake a thread, ~0.1 ms on
    the Intel VM of the committed run, and sharing work among threads costs that much more."""
    root = "/sys/devices/system/cpu/cpuidle/current_driver"
    try:
        with open(root) as f:
            driver = f.read().strip()
    except OSError:
        return None
    try:
        with open("/sys/module/haltpoll/parameters/guest_halt_poll_ns") as f:
            return f"{driver} (guest_halt_poll_ns {f.read().strip()})"
    except OSError:
        return driver


def environment() -> dict:
    """Versions, the BLAS library and kernel that runs, threads, and the OpenBLAS variables."""
    import numpy

    from ..fast import allocator
    env = {"python": platform.python_version(), "machine": platform.machine(),
           "cpu": _cpu_model(), "cpuidle": _cpuidle(), "cpu_count": os.cpu_count(),
           "numpy": numpy.__version__,
           "backend": xp.name,
           "malloc_keeps_freed_memory": allocator.applied,
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
           "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE")}
    from threadpoolctl import threadpool_info

    env["blas"] = [{k: info.get(k) for k in ("internal_api", "version", "architecture",
                                              "num_threads", "threading_layer")}
                   for info in threadpool_info() if info.get("user_api") == "blas"]
    env["threads"] = threads.num_threads()  # the engine's threads, products and loops alike
    return env


def _import_torch(threads: int):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)  # the same thread count as minilora's
    return torch


# -- the run (report.py prints it and writes the file) --------------------------------
def run_bench(configs=None, repeats: int = 7, quick: bool = False, use_torch: bool = True,
              log=print) -> dict:
    """Everything the bench measures, as one JSON-ready dict (``configs`` None: the defaults)."""
    if configs is None:
        configs = ("tiny",) if quick else DEFAULT_CONFIGS
    if quick:
        repeats = min(repeats, 2)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown bench config(s) {unknown}; choose from {sorted(CONFIGS)}")
    min_sample_s = 0.0 if quick else 0.25
    env = environment()
    torch = _import_torch(env["threads"]) if use_torch else None
    if torch is not None:
        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                   torch_cpu_capability=torch.backends.cpu.get_cpu_capability())
    result = {"settings": {"repeats": repeats, "quick": quick, "configs": list(configs),
                           "lora": {**LORA, "target_modules": list(LORA["target_modules"])},
                           "lora_available": _lora_api() is not None},
              "env": env}
    log("measuring the GEMM peak ...")
    result["gemm"] = gemm_peak(QUICK_GEMM_SIZES if quick else GEMM_SIZES, repeats, min_sample_s,
                               torch)
    result["handoff_s"] = handoff_seconds(repeats, min_sample_s)
    result["configs"] = {}
    for name in configs:
        log(f"measuring config {name!r} ...")
        row = bench_config(name, repeats, min_sample_s, torch)
        for mode in ("full", "lora"):
            if mode in row["train"]:
                row["train"][mode]["peak_fraction"] = (row["train"][mode]["gflops"]
                                                       / result["gemm"]["peak_gflops"])
        result["configs"][name] = row
    return result
