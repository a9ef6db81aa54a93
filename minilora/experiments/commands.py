"""The experiment subcommands of ``minilora``: ``figures``, ``pretrain`` and one per experiment.

Only argparse here; each command imports the experiment code when it runs.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

EXPERIMENT_HELP = {
    "rank-ablation": "accuracy against r per set of adapted weights (Table 6)",
    "target-modules": "which weights to adapt under a fixed parameter budget (Table 5)",
    "subspace": "subspace similarity between adapters (Figures 3 and 4)",
    "delta-w": "how ΔW relates to W: projections and amplification (Table 7)",
    "intruders": "intruder dimensions against r (Shuttleworth et al. 2024)",
    "curves": "training curves: pretraining and fine-tuning",
    "memory": "trainable parameters, storage and training memory (arithmetic)",
    "quantization": "NF4, FP4 and int4 code books: bits per parameter and error (QLoRA)",
    "qlora": "LoRA on a 4-bit base: quality and stored bytes against the fp32 base",
    "rslora": "training curves across r under scaling α/r and α/√r (rsLoRA)",
    "variants": "DoRA, PiSSA and LoRA+ against LoRA: the first steps of fine-tuning",
    "latency": "inference latency of adapter layers against LoRA, merged and not (Table 1)",
    "forgetting": "learning against forgetting of the pretraining task, and ΔW's effective rank",
    "mitigation": "intruder dimensions scaled by λ: forgetting recovered against accuracy lost",
    "lr-sweep": "held-out loss against learning rate per r, at α/r and α/√r, and full fine-tuning",
    "capacity": "memorizing N key → value pairs: accuracy against N per r and full fine-tuning",
    "baselines-budget": "accuracy against trainable parameters: LoRA, FT, BitFit, prefix, "
                        "adapters (Figure 2)",
    "data-size": "LoRA against full fine-tuning on finite training sets (the regularization "
                 "reading)",
}


def _common(p) -> None:
    p.add_argument("--quick", action="store_true",
                   help="a miniature of every experiment: checks the pipeline in seconds")
    p.add_argument("--out", default="figures", metavar="DIR",
                   help="folder for the PNGs and their data files (default: figures)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                   help="worker processes for the sweep (default: 2, or 1 on a 1-core machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the sweep on a Dask cluster (tcp://host:8786; needs the cluster "
                        "extra) instead of --jobs local processes")


def add_commands(commands) -> None:
    p = commands.add_parser(
        "figures", help="run every experiment and write every figure with its data",
        description="Pretrain (cached), run the sweep once, write figures/*.png with a .json "
                    "(and .csv tables) beside each.")
    _common(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--after-paper", dest="group", action="store_const", const="after-paper",
                       help="instead: the claims made since the paper (learning vs forgetting, "
                            "the learning rate LoRA needs, intruder mitigation, capacity)")
    group.add_argument("--baselines", dest="group", action="store_const", const="baselines",
                       help="instead: LoRA against the paper's 2021 baselines (Figure 2)")
    p.set_defaults(run=_run_figures, experiments=None, group=None)
    p = commands.add_parser(
        "tune", help="choose the learning rate of each (task, target set, r) on tuning seeds",
        description="The learning-rate search whose choice config.py records: every "
                    "candidate for every (target set, r) the tables report, on the tuning seeds, "
                    "scored on a validation set; the grid grows past an edge winner.")
    _common(p)
    p.add_argument("--baselines", dest="group", action="store_const", const="baselines",
                   help="instead: each method of Figure 2 (the 2021 baselines and LoRA) on "
                        "each task, at its middle budget")
    p.set_defaults(run=_run_tune, group=None)
    p = commands.add_parser(
        "findings", help="write figures/FINDINGS.md (and the README's findings blocks) "
                         "from the data files, rerunning nothing",
        description="Every experiment's findings() on its data files in --out: FINDINGS.md; "
                    "with --write-readme also the README blocks between <!-- findings:NAME --> "
                    "and <!-- /findings:NAME -->; with --check, exit 1 if the README differs.")
    p.add_argument("--out", default="figures", metavar="DIR", help="the data files' folder")
    p.add_argument("--readme", default="README.md", metavar="PATH", help="default: README.md")
    p.add_argument("--write-readme", action="store_true", help="rewrite the README's blocks")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if FINDINGS.md or a README block differs")
    p.set_defaults(run=_run_findings)
    p = commands.add_parser(
        "pretrain", help="pretrain the base GPT on copy/reverse (cached by config hash)",
        description="Train the base model every experiment starts from, or read it from the "
                    "cache (.minilora-cache/ or $MINILORA_CACHE).")
    p.add_argument("--quick", action="store_true", help="the small base model of --quick")
    p.set_defaults(run=_run_pretrain)
    for name, text in EXPERIMENT_HELP.items():
        p = commands.add_parser(name, help=text, description=f"Run one experiment: {text}.")
        _common(p)
        p.set_defaults(run=_run_figures, experiments=[name])


def _setup(args):
    from .config import FULL, QUICK
    return QUICK if args.quick else FULL


def _run_figures(args) -> int:
    from .figures import run_experiments

    if args.jobs < 1:
        raise SystemExit("minilora: --jobs must be at least 1")
    _check_out(args.out)
    names = args.experiments
    if getattr(args, "group", None):
        from .figures import GROUPS
        names = list(GROUPS[args.group])
        if not names:
            raise SystemExit(f"minilora: no experiments in the group {args.group!r} yet")
    with _executor(args.scheduler) as executor:
        result = run_experiments(_setup(args), names, args.out, args.jobs,
                                 executor=executor, progress=not args.no_progress)
    for path in result["files"]:
        print(path)
    return 0


@contextmanager
def _executor(scheduler: str | None):
    """None (local processes), or a Dask cluster's ``concurrent.futures`` executor.

    Each run reads the pretrained base from the cache (``$MINILORA_CACHE``), which the command
    fills before the sweep: workers on other machines need that folder on a shared file system.
    Dask's workers (nanny processes) use one BLAS thread each, so the numbers are the same bytes
    as a local run's.
    """
    if scheduler is None:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise SystemExit("minilora: --scheduler needs Dask's distributed: "
                         "pip install 'minilora[cluster]'") from None
    try:
        client = Client(scheduler, timeout=10)
    except (OSError, TimeoutError, ValueError) as err:
        raise SystemExit(f"minilora: --scheduler {scheduler!r}: cannot reach the scheduler "
                         f"({err})") from None
    with client:
        yield client.get_executor()


def _check_out(out: str) -> None:
    """Refuse an --out that cannot be a folder before any work starts."""
    from pathlib import Path

    for folder in (Path(out), *Path(out).parents):
        if folder.exists() and not folder.is_dir():
            raise SystemExit(f"minilora: --out {out!r}: {str(folder)!r} is a file, not a folder")


def _run_tune(args) -> int:
    from .figures import run_tuning

    _check_out(args.out)
    with _executor(args.scheduler) as executor:
        result = run_tuning(_setup(args), args.out, args.jobs, executor=executor,
                            progress=not args.no_progress, group=args.group)
    for (task, label, r), c in result["chosen"].items():
        note = "" if c["learns"] else "  (no candidate leaves the plateau: the choice means nothing)"
        note += "  (at an edge of the grid)" if c["edge"] and c["learns"] else ""
        print(f"{task:6} {label:14} r={r:<3} lr {c['lr']:g}  val accuracy {c['val_accuracy']:.3f}{note}")
    by_task: dict = {}
    for (task, label, r), c in result["chosen"].items():
        by_task.setdefault(task, []).append((label, r, c["lr"]))
    for task, triples in by_task.items():
        if args.group == "baselines":
            print(f"config.py, {task}: baseline_lrs={tuple((m, lr) for m, _, lr in triples)!r}")
        else:
            print(f"config.py, {task}: lrs={tuple(triples)!r}")
    for line in result["disagree"]:
        print(f"differs from config.py: {line}")
    return 1 if result["disagree"] else 0


def _run_findings(args) -> int:
    from pathlib import Path

    from .figures import findings_registry
    from .findings import (findings_markdown, readme_blocks, render_readme, sections,
                           write_findings, write_readme)

    registry, timed = findings_registry(), findings_registry(timings=True)
    if args.check:
        stale = []
        md = Path(args.out) / "FINDINGS.md"
        if not md.exists() or md.read_text() != findings_markdown(sections(args.out, registry)):
            stale.append(str(md))
        text = Path(args.readme).read_text()
        new = readme_blocks(render_readme(text, sections(args.out, {**registry, **timed})))
        stale += [f"{args.readme}: block {name}" for name, body in readme_blocks(text).items()
                  if new[name] != body]
        for line in stale:
            print(f"differs from the data: {line}")
        return 1 if stale else 0
    print(write_findings(args.out, registry, timed))
    if args.write_readme and write_readme(args.readme, args.out, {**registry, **timed}):
        print(args.readme)
    return 0


def _run_pretrain(args) -> int:
    import time

    from .pretrain import load_or_pretrain, paths

    setup, start = _setup(args), time.perf_counter()
    _, info = load_or_pretrain(setup.base, progress=True)
    print(f"base model {setup.base.digest()}: accuracy {info['accuracy']:.4f}, loss "
          f"{info['loss']:.4f} on '{setup.base.task}' ({time.perf_counter() - start:.1f} s); "
          f"{paths(setup.base)[0]}")
    return 0
