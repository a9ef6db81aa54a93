"""What ``minilora bench`` prints and writes: the table, and the JSON file (atomically).

:func:`minilora.bench.run_bench` measures; this file only formats its result.
"""
from __future__ import annotations

import json

from ..fileio import atomic_write


def _mib(n: int) -> str:
    return f"{n / 2**20:8.2f}"


def format_table(result: dict) -> str:
    """The bench as a plain-text table (what ``minilora bench`` prints)."""
    env, gemm = result["env"], result["gemm"]
    blas = ", ".join(f"{b['internal_api']} {b['version']} kernel {b['architecture']} "
                     f"({b['num_threads']} threads)" for b in env["blas"]) or "unknown BLAS"
    has_torch = "torch" in env
    lines = [f"minilora bench on {env.get('cpu', 'an unknown CPU')} ({env['cpu_count']} cores"
             + (f", cpuidle {env['cpuidle']})" if env.get("cpuidle") else ")"),
             f"  numpy {env['numpy']}, {blas}, malloc keeps freed memory: "
             f"{env.get('malloc_keeps_freed_memory')}",
             f"  OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}  "
             f"OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}"
             + (f"  | torch {env['torch']} ({env['torch_threads']} threads, "
                f"{env['torch_cpu_capability']})" if has_torch else "  | PyTorch: not measured"),
             f"  minilora shares products and loops among {env['threads']} threads "
             f"(BLAS held to one inside); medians of {result['settings']['repeats']} "
             f"interleaved repeats", "",
             f"  {'GEMM float32, GFLOP/s':<24}{'NumPy':>8}{'engine':>8}{'1 thread':>9}"
             + (f"{'torch':>8}{'1 thread':>9}" if has_torch else "")]
    for row in gemm["sizes"]:
        one = row.get("one_thread_gflops")
        lines.append(f"  {row['shape']:<24}{row['gflops']:8.1f}{row['engine_gflops']:8.1f}"
                     + (f"{one:9.1f}" if one is not None else f"{'-':>9}")
                     + (f"{row['torch_gflops']:8.1f}{row['torch_one_thread_gflops']:9.1f}"
                        if has_torch else ""))
    lines.append(f"  {'peak':<24}{gemm['peak_gflops']:8.1f}{gemm['engine_peak_gflops']:8.1f}"
                 + (f"{'':9}{gemm['torch_peak_gflops']:8.1f}" if has_torch else ""))
    if result.get("handoff_s") is not None:
        lines.append(f"  hand-off: an empty region shared among the threads takes "
                     f"{1e6 * result['handoff_s']:.0f} µs")
    lines += ["", "training step (fwd + CE + bwd + AdamW)",
              f"  {'config':<8}{'mode':<6}{'step ms':>9}{'tok/s':>10}{'GFLOP':>8}{'GFLOP/s':>9}"
              f"{'%peak':>7}{'ref. ms':>9}{'ref/fast':>9}"
              + (f"{'torch ms':>10}{'/torch':>8}" if has_torch else "")]
    for name, cfg in result["configs"].items():
        train = cfg["train"]
        for mode in ("full", "lora"):
            if mode not in train:
                continue
            r = train[mode]
            lines.append(f"  {name:<8}{mode:<6}{1e3 * r['step_s']:9.2f}{r['tokens_per_s']:10.0f}"
                         f"{r['matmul_gflop']:8.2f}{r['gflops']:9.1f}"
                         f"{100 * r['peak_fraction']:6.1f}%"
                         f"{1e3 * r['reference_step_s']:9.2f}{r['reference_over_fast']:9.2f}"
                         + (f"{1e3 * r['torch_step_s']:10.2f}{r['over_torch']:8.2f}"
                            if has_torch else ""))
        if "lora_over_full" in train:
            lines.append(f"  {name:<8}lora/full {train['lora_over_full']:.3f} (matmul FLOPs "
                         f"{train['flops_lora_over_full']:.3f}"
                         + (f"; torch {train['torch_lora_over_full']:.3f})" if has_torch else ")"))
    lines += ["", "where a full fine-tuning step goes: each op's forward + backward, ms per step",
              f"  {'config':<8}{'op':<18}{'x':>4}{'each ms':>9}{'ms/step':>9}"
              + (f"{'torch':>9}{'/torch':>8}" if has_torch else "")]
    for name, cfg in result["configs"].items():
        ops = cfg["ops"]
        for r in ops["ops"]:
            lines.append(f"  {name:<8}{r['op']:<18}{r['per_step']:4d}{1e3 * r['seconds']:9.2f}"
                         f"{1e3 * r['step_seconds']:9.1f}"
                         + (f"{1e3 * r['torch_step_seconds']:9.1f}{r['over_torch']:8.2f}"
                            if has_torch else ""))
        rest, torch_rest = ops["rest_s"], ops.get("torch_rest_s")
        lines.append(f"  {name:<8}{'rest of the step':<22}{'':9}{1e3 * rest:9.1f}"
                     + (f"{1e3 * torch_rest:9.1f}{rest / torch_rest:8.2f}" if has_torch else ""))
        step, torch_step = ops["step_s"], ops.get("torch_step_s")
        lines.append(f"  {name:<8}{'the step, beside them':<22}{'':9}{1e3 * step:9.1f}"
                     + (f"{1e3 * torch_step:9.1f}{step / torch_step:8.2f}" if has_torch else ""))
    lines += ["", "inference forward (no_grad, eval)",
              f"  {'config':<8}{'model':<15}{'ms':>9}{'tok/s':>10}"
              + (f"{'torch ms':>10}" if has_torch else "")]
    for name, cfg in result["configs"].items():
        infer = cfg["infer"]
        for mode in ("base", "lora_unmerged", "lora_merged"):
            if mode in infer:
                r = infer[mode]
                lines.append(f"  {name:<8}{mode:<15}{1e3 * r['forward_s']:9.2f}"
                             f"{r['tokens_per_s']:10.0f}"
                             + (f"{1e3 * r['torch_forward_s']:10.2f}" if has_torch else ""))
        if "merged_over_base" in infer:
            lines.append(f"  {name:<8}merged/base {infer['merged_over_base']:.3f}, "
                         f"unmerged/base {infer['unmerged_over_base']:.3f}")
    lines += ["", "training-step memory, MiB (tracemalloc)",
              f"  {'config':<8}{'mode':<6}{'params':>9}{'grads':>9}{'states':>9}{'activ.':>9}"
              f"{'step pk':>9}{'total':>9}"]
    for name, cfg in result["configs"].items():
        mem = cfg["memory"]
        for mode in ("full", "lora"):
            if mode in mem:
                m = mem[mode]
                lines.append(f"  {name:<8}{mode:<6} {_mib(m['parameters'])} {_mib(m['gradients'])}"
                             f" {_mib(m['optimizer_states'])} {_mib(m['activations'])}"
                             f" {_mib(m['step_peak'])} {_mib(m['total_peak'])}")
        if "lora_over_full" in mem:
            lines.append(f"  {name:<8}lora/full total peak {mem['lora_over_full']:.3f}")
    return "\n".join(lines)


def markdown_table(result: dict, config: str = "medium") -> str:
    """The README's table for one config: fast path, reference and PyTorch, side by side."""
    train, infer = result["configs"][config]["train"], result["configs"][config]["infer"]
    memory = result["configs"][config]["memory"]
    has_torch = "torch_step_s" in train["full"]

    def ms(seconds: float) -> str:
        return f"{1e3 * seconds:.0f} ms"

    def row(label: str, *cells: str) -> str:
        return f"| {label} | " + " | ".join(cells[:3 if has_torch else 2]) + " |"

    lines = [row("", "fast path (on)", "reference (off)", f"PyTorch {result['env'].get('torch')}"),
             row("---", "---", "---", "---")]
    has_reference = "reference_step_s" in train["full"]  # runs before the column lack it
    for mode, label in (("full", "full fine-tuning step"), ("lora", "LoRA step")):
        r = train[mode]
        lines.append(row(label, f"{ms(r['step_s'])} ({r['gflops']:.0f} GFLOP/s)",
                         f"{ms(r['reference_step_s'])} ({r['reference_over_fast']:.2f} × fast)"
                         if has_reference else "not in this run",
                         f"{ms(r.get('torch_step_s', 0))} (fast: {r.get('over_torch', 0):.2f} ×)"))
    lines.append(row("LoRA / full", f"{train['lora_over_full']:.3f} (matrix-product FLOPs "
                                    f"{train['flops_lora_over_full']:.3f})",
                     f"{train['lora']['reference_step_s'] / train['full']['reference_step_s']:.3f}"
                     if has_reference else "",
                     f"{train.get('torch_lora_over_full', 0):.3f}"))
    lines.append(row("inference merged / unmerged / base", f"{infer['merged_over_base']:.3f} / "
                     f"{infer['unmerged_over_base']:.3f} / 1", "", ""))
    lines.append(row("step peak memory, LoRA / full", f"{memory['lora_over_full']:.3f}", "", ""))
    return "\n".join(lines)


def write_json(result: dict, path: str) -> None:
    """Write atomically (fileio.atomic_write): a reader sees the old file or the new one."""
    atomic_write(path, (json.dumps(result, indent=2) + "\n").encode())
