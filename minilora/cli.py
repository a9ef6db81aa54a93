"""The ``minilora`` command. Each subcommand imports what it needs when it runs."""
from __future__ import annotations

import argparse
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minilora",
        description="LoRA (Hu et al. 2021) from scratch in NumPy: train, adapt, measure, plot.")
    parser.add_argument("--version", action="version", version=f"minilora {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_bench(commands)
    _add_calc(commands)
    from .experiments.commands import add_commands  # argparse only: figures, pretrain, ...
    add_commands(commands)
    return parser


def _add_calc(commands) -> None:
    p = commands.add_parser(
        "calc", help="LoRA parameter, storage and memory arithmetic for a model",
        description="The paper's efficiency arithmetic for a preset or a free architecture: "
                    "trainable parameters, adapter and checkpoint size, training memory.")
    p.add_argument("--preset", default="gpt3-175b",
                   help="gpt3-175b, gpt2-medium or llama2-7b (sizes below override it)")
    p.add_argument("--d-model", type=int, help="width of the residual stream")
    p.add_argument("--layers", type=int, help="number of transformer blocks")
    p.add_argument("--d-ff", type=int, help="MLP hidden width")
    p.add_argument("--mlp", choices=["gelu", "gated"], help="MLP kind (gated = LLaMA)")
    p.add_argument("--vocab", type=int, help="vocabulary size")
    p.add_argument("--targets", nargs="+", default=["q_proj", "v_proj"],
                   help="module names (q_proj k_proj v_proj o_proj up_proj down_proj gate_proj "
                        "lm_head) or all-linear")
    p.add_argument("--r", type=int, nargs="+", default=[1, 2, 4, 8, 64], help="ranks to tabulate")
    p.set_defaults(run=_run_calc)


def _run_calc(args) -> int:
    from dataclasses import replace

    from . import accounting as acc

    if args.preset not in acc.PRESETS:
        raise SystemExit(f"minilora calc: unknown preset {args.preset!r}; "
                         f"choose from {sorted(acc.PRESETS)}")
    overrides = {k: v for k, v in dict(d_model=args.d_model, n_layers=args.layers, d_ff=args.d_ff,
                                       mlp=args.mlp, vocab_size=args.vocab).items() if v}
    arch = replace(acc.PRESETS[args.preset], **overrides)
    if overrides:
        arch = replace(arch, name=f"{arch.name} (modified: {', '.join(overrides)})")
    targets = "all-linear" if args.targets == ["all-linear"] else args.targets
    try:  # check every input before printing anything
        rows = [acc.summary(arch, targets, r) for r in args.r]
    except ValueError as err:
        raise SystemExit(f"minilora calc: {err}") from err
    total = arch.total_parameters()
    print(f"{arch.name}: d_model {arch.d_model:,}, {arch.n_layers} layers, d_ff {arch.d_ff:,} "
          f"({arch.mlp}), vocab {arch.vocab_size:,}: {total:,} parameters, checkpoint "
          f"{acc.format_bytes(2 * total)} (fp16); full fine-tuning with Adam "
          f"{acc.format_bytes(acc.training_memory(total, total)['total'])} (2+2+8 bytes/param)")
    print(f"LoRA on {targets}:")
    print(f"{'r':>5} {'trainable':>15} {'% of all':>9} {'adapter (fp16)':>15} {'training memory':>16}")
    for r, row in zip(args.r, rows):
        print(f"{r:>5} {row['lora_parameters']:>15,} {row['trainable_percent']:>9.4f} "
              f"{acc.format_bytes(row['adapter_bytes']):>15} "
              f"{acc.format_bytes(row['lora_training_bytes']):>16}")
    return 0


def _add_bench(commands) -> None:
    p = commands.add_parser(
        "bench", help="time training and inference against the GEMM peak (and PyTorch)",
        description="Training-step and inference timings, FLOP rates and memory, full "
                    "fine-tuning vs LoRA, each op of a step on its own, side by side (and "
                    "against PyTorch if installed).")
    p.add_argument("--quick", action="store_true", help="tiny configs, 1-2 repeats: seconds")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per case (median)")
    p.add_argument("--configs", help="comma-separated configs from sweep, small, medium, tiny "
                                      "(default: sweep,small,medium; with --quick: tiny)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.set_defaults(run=_run_bench)


def _run_bench(args) -> int:
    from .bench import report, run_bench

    if args.repeats < 1:
        raise SystemExit("minilora bench: --repeats must be at least 1")
    configs = tuple(c.strip() for c in args.configs.split(",") if c.strip()) \
        if args.configs else None
    try:
        result = run_bench(configs, args.repeats, args.quick, not args.no_torch,
                           log=lambda msg: print(msg, file=sys.stderr))
    except ValueError as err:
        raise SystemExit(f"minilora bench: {err}") from err
    print(report.format_table(result))
    if args.json:
        report.write_json(result, args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from . import fast
    with fast.enabled():  # the commands compute with the fast path; the library has it off
        return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
