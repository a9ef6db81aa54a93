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
    return parser


def _add_bench(commands) -> None:
    p = commands.add_parser(
        "bench", help="time training and inference against the GEMM peak (and PyTorch)",
        description="Training-step and inference timings, FLOP rates and memory, full "
                    "fine-tuning vs LoRA, side by side (and against PyTorch if installed).")
    p.add_argument("--quick", action="store_true", help="tiny configs, 1-2 repeats: seconds")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per case (median)")
    p.add_argument("--configs", default="sweep,small,medium",
                   help="comma-separated configs: sweep, small, medium, tiny")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.set_defaults(run=_run_bench)


def _run_bench(args) -> int:
    from . import bench

    if args.repeats < 1:
        raise SystemExit("minilora bench: --repeats must be at least 1")
    configs = tuple(c.strip() for c in args.configs.split(",") if c.strip())
    try:
        result = bench.run_bench(configs, args.repeats, args.quick, not args.no_torch,
                                 log=lambda msg: print(msg, file=sys.stderr))
    except ValueError as err:
        raise SystemExit(f"minilora bench: {err}") from err
    print(bench.format_table(result))
    if args.json:
        bench.write_json(result, args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
