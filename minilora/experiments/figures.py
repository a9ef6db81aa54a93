"""``minilora figures``: every experiment, one sweep, every figure with its data beside it.

    pretrain (cached) ─► one sweep of all experiments' runs ─► per experiment:
    compute data ─► <figure>.json (+ .csv tables) ─► plot <figure>.png

The learning rates are the setup's (chosen beforehand by ``minilora tune``, see config.py).

The "after LoRA" figures (QLoRA's code books, QLoRA, rsLoRA, DoRA/PiSSA/LoRA+) run their
short fine-tuning runs in the same pool.

Runs shared by several experiments (the {Wq, Wv} runs feed five of them) happen once. The
sweep goes through any ``concurrent.futures.Executor``; results do not depend on which.
"""
from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path

from . import (baselines_budget, curves, data_size, delta_w, forgetting, intruders, latency,
               memory, mitigation, qlora, quantization, rank_ablation, rslora, subspace,
               target_modules, variant_curves)
from . import capacity, lr_sweep  # after the paper: the learning rate LoRA needs, capacity
from .common import lrs_table, setup_lrs, write_csv, write_json
from .findings import write_findings
from .pretrain import load_or_pretrain
from .runs import process_pool, run_specs
from .variant_runs import run_variant

EXPERIMENTS = {
    "rank-ablation": rank_ablation,
    "target-modules": target_modules,
    "subspace": subspace,
    "delta-w": delta_w,
    "intruders": intruders,
    "curves": curves,
    "memory": memory,
}

# After LoRA (variants): each module has run(quick, base=..., ...) and plot(data, png_path);
# those with fine-tuning runs also have specs(quick) and take run(..., results=...). The name
# is also the figure's file stem.
VARIANTS = {
    "quantization": quantization,  # NF4 / FP4 / int4 code books: bits and errors (no runs)
    "qlora": qlora,
    "rslora": rslora,
    "variants": variant_curves,  # DoRA, PiSSA, LoRA+ against LoRA
}


# Two groups with the EXPERIMENTS interface, each run by a flag of its own with its own time
# budget, so the paper's figures keep theirs: `minilora figures --after-paper` (claims made
# since the paper: learning vs forgetting, the learning rate, intruder mitigation, capacity)
# and `--baselines` (the paper's 2021 baselines against LoRA: Figure 2, Tables 2-4).
AFTER_PAPER: dict = {
    "forgetting": forgetting,  # learning vs forgetting, effective rank (Biderman et al. 2024)
    "mitigation": mitigation,  # intruders scaled by λ (Shuttleworth et al. 2024; PEFT's function)
    "lr-sweep": lr_sweep,  # the learning rate LoRA needs against full FT's (LoRA Without Regret)
    "capacity": capacity,  # N key → value pairs: where LoRA falls behind full FT (same)
}
BASELINES: dict = {
    "baselines-budget": baselines_budget,  # accuracy against trainable parameters (Figure 2)
    "data-size": data_size,  # LoRA against FT on finite training sets (the regularization reading)
}
GROUPS = {"after-paper": AFTER_PAPER, "baselines": BASELINES}


def sweep_experiments() -> dict:
    """Every experiment whose runs go through the sweep: the paper's and the two groups'."""
    return {**EXPERIMENTS, **AFTER_PAPER, **BASELINES}


# Timings (Table 1's latency): run(quick) and plot(data, png_path) like VARIANTS, measured in
# this process after the sweep's workers are gone. Their data are measurements of this
# machine: never byte-identical between runs, so kept apart from the data files that are.
TIMINGS = {
    "latency": latency,
}


def findings_registry(timings: bool = False) -> dict:
    """The experiments whose findings() go into FINDINGS.md; ``timings``: only those that time
    this machine (Table 1's latency), whose numbers differ on every run and so stay apart."""
    return dict(TIMINGS) if timings else {**sweep_experiments(), **VARIANTS}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cost(spec) -> float:
    """A rough run time, to start the longest runs first (the sweep then ends evenly)."""
    width = 3.0 if spec.method == "full" else 1.0 + len(spec.targets) * spec.r / 256
    return spec.steps * width


def run_experiments(setup, names=None, out_dir: str | Path = "figures", jobs: int = 1,
                    executor=None, progress: bool = True, results: dict | None = None) -> dict:
    """Run the named experiments (all by default) and write their figures and data files.

    Names come from EXPERIMENTS, VARIANTS, TIMINGS and the GROUPS (never run by default). Returns ``{"files": [...], "timings": {...}}``;
    timings go to stderr too, never into data. ``results`` (by run key) may hold runs done
    before: they are not run again.
    """
    names = list(names or [*EXPERIMENTS, *VARIANTS, *TIMINGS])
    sweep = sweep_experiments()
    known = [*sweep, *VARIANTS, *TIMINGS]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; choose from {known}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings, start = {}, time.perf_counter()
    load_or_pretrain(setup.base, progress=progress)
    timings["pretrain"] = time.perf_counter() - start
    results = {} if results is None else results
    lrs = setup_lrs(setup)
    quick = setup.name == "quick"
    variant_names = [n for n in names if n in VARIANTS]
    timing_names = [n for n in names if n in TIMINGS]
    names = [n for n in names if n in sweep]
    with process_pool(jobs) if executor is None else nullcontext(executor) as pool:
        t = time.perf_counter()
        # The variant runs are short: queued first, they finish while the long sweep runs.
        variant_specs = list(dict.fromkeys(
            spec for name in variant_names if hasattr(VARIANTS[name], "specs")
            for spec in _flat(VARIANTS[name].specs(quick))))
        variant_futures = {spec: pool.submit(run_variant, spec, setup.base)
                           for spec in variant_specs}
        specs = [spec for name in names for spec in sweep[name].specs(setup, lrs)]
        run_specs(sorted(specs, key=_cost, reverse=True), pool, progress=progress,
                  results=results)
        for name in names:  # experiments that choose runs from runs (lr_sweep: the grid grows)
            while extra := getattr(sweep[name], "more_specs", lambda *a: [])(setup, lrs, results):
                run_specs(sorted(extra, key=_cost, reverse=True), pool, progress=progress,
                          results=results)
        variant_results = {spec: future.result() for spec, future in variant_futures.items()}
        timings["sweep"] = time.perf_counter() - t
    t = time.perf_counter()
    files = [write_json(out_dir / "environment.json", environment())]
    files += [write_json(out_dir / "learning_rates.json",
                         {"setup": setup.name,
                          "chosen_by": "config.py: per (task, target set, r) by minilora tune "
                                       "where recorded (r given), else the task's rate",
                          "learning_rates": lrs_table(lrs)})] if names else []
    for name in names:
        module = sweep[name]
        data = module.compute(setup, lrs, results)
        files += [write_json(out_dir / f"{stem}.json", d) for stem, d in data.items()]
        if hasattr(module, "tables"):
            files += [write_csv(out_dir / f"{stem}.csv", rows)
                      for stem, rows in module.tables(data).items()]
        files += module.plot(data, out_dir)
    for name in variant_names:
        module = VARIANTS[name]
        runs = {"results": variant_results} if hasattr(module, "specs") else {}  # done above
        data = module.run(quick, base=setup.base, **runs)
        files.append(write_json(out_dir / f"{name}.json", data))
        if hasattr(module, "summary"):
            files.append(write_csv(out_dir / f"{name}.csv", module.summary(data)))
        module.plot(data, out_dir / f"{name}.png")
        files.append(out_dir / f"{name}.png")
    files.append(write_findings(out_dir, findings_registry(), findings_registry(timings=True)))
    timings["analysis_and_plots"] = time.perf_counter() - t
    for name in timing_names:
        t, module = time.perf_counter(), TIMINGS[name]
        data = module.run(quick)
        files += [write_json(out_dir / f"{name}.json", data),
                  write_csv(out_dir / f"{name}.csv", module.summary(data))]
        module.plot(data, out_dir / f"{name}.png")
        files.append(out_dir / f"{name}.png")
        timings[name] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    run_seconds = sum(res["seconds"] for res in [*results.values(), *variant_results.values()])
    _log(f"minilora figures ({setup.name}, jobs={jobs}): " + ", ".join(
        f"{k} {v:.1f} s" for k, v in timings.items()) +
        f"; {len(results) + len(variant_results)} runs, {run_seconds:.1f} s of run time")
    return {"files": [str(f) for f in files], "timings": timings}


def environment() -> dict:
    """What made the numbers, beside them: the BLAS library and the kernel it runs
    (threadpoolctl's ``architecture``), NumPy's version, and ``OPENBLAS_CORETYPE`` if set.

    Data files are byte-identical across ``--jobs`` on one kernel, not across kernels: a
    different kernel adds in a different order and rounds differently. Thread counts are left
    out (they differ between this process and the workers, and do not change the numbers).
    """
    import os

    import numpy
    from threadpoolctl import threadpool_info

    blas = [{k: lib.get(k) for k in ("internal_api", "version", "architecture")}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return {"numpy": numpy.__version__, "blas": blas,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}


def _flat(specs) -> list:
    """A variant module's specs: a list, or a dict of lists (one per variant)."""
    return [s for group in specs.values() for s in group] if isinstance(specs, dict) else specs


def run_tuning(setup, out_dir: str | Path = "figures", jobs: int = 1, executor=None,
               progress: bool = True, group: str | None = None) -> dict:
    """``minilora tune``: the learning-rate search; writes learning_rate_tuning.json/.csv
    (``group="baselines"``: Figure 2's methods, baselines_lr_tuning.json/.csv).

    Every (task, target set, r) the tables report, on each candidate of the task's grid and
    every tuning seed. Where the winner sits at an edge of its grid (and learns at all), the
    grid grows by one candidate past that edge (×2 or ÷2) and the search goes on, up to
    ``setup.lr_extensions`` times, so a reported rate is bracketed by two that did worse.
    Returns ``{"chosen": {...}, "recorded": {...}, "disagree": [...]}``: what the search
    picks against what config.py records.
    """
    from .common import choose_lrs, extend_grids, first_grids, tuning_spec, tuning_specs

    out_dir = Path(out_dir)
    load_or_pretrain(setup.base, progress=progress)
    results: dict = {}
    if group == "baselines":
        from . import baselines_budget as search
        grids, spec_of, stem = search.first_grids(setup), search.tuning_spec, "baselines_lr_tuning"
        recorded = search.recorded_lrs(setup)
    else:
        grids, spec_of, stem = first_grids(setup), tuning_spec, "learning_rate_tuning"
        lrs = setup_lrs(setup)
        recorded = {cell: lrs.get(cell, lrs[cell[:2]]) for cell in grids}
    extensions = setup.baseline_lr_extensions if group == "baselines" else setup.lr_extensions
    with process_pool(jobs) if executor is None else nullcontext(executor) as pool:
        for round_ in range(extensions + 1):
            run_specs(tuning_specs(setup, grids, spec_of), pool, progress=progress,
                      results=results)
            chosen, table = choose_lrs(setup, grids, results, spec_of)
            wider = extend_grids(setup, grids, chosen)
            if wider == grids or round_ == extensions:  # the grids written are those run
                break
            grids = wider
    disagree = [f"{task} {label} r={r}: search {c['lr']:g}, config {recorded[(task, label, r)]}"
                for (task, label, r), c in chosen.items() if c["lr"] != recorded[(task, label, r)]]
    write_json(out_dir / f"{stem}.json",
               {"setup": setup.name, "tuning_seeds": list(setup.tuning_seeds),
                "chosen": [{"task": t, "targets": label, "r": r, "grid": grids[(t, label, r)], **c}
                           for (t, label, r), c in chosen.items()],
                "runs": table})
    if table:
        write_csv(out_dir / f"{stem}.csv", table)
    return {"chosen": chosen, "recorded": recorded, "disagree": disagree}
