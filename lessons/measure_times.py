"""Measure how long each lesson (and solution) takes to run, and write lessons/README.md's table.

    python lessons/measure_times.py                 # every lesson and solution, full and fast
    python lessons/measure_times.py --write-readme  # also rewrite the README's times table
    python lessons/measure_times.py --only 11 --write-readme  # measure lesson 11 alone, keep the rest

Each script runs as a student runs it (``python lessons/NN_name.py``, plots to files), once in
full mode and once with ``MINILORA_FAST=1``; the lessons pin one BLAS thread themselves. Wall
time is what a student waits; CPU time (user + sys of the child process) is what the work
costs, and unlike wall time it barely changes when other programs share the cores, so the
file records the machine's load average beside the numbers. The pre-trained base models are
built first (lessons 06-09 read them from ``.minilora-cache/``), so no lesson's time includes
pre-training. Results go to ``lessons/times.json``.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

LESSONS = Path(__file__).resolve().parent
ROOT = LESSONS.parent
TIMES = LESSONS / "times.json"
README = LESSONS / "README.md"
BEGIN, END = "<!-- times: written by lessons/measure_times.py -->", "<!-- /times -->"


def run(script: Path, fast: bool) -> dict:
    """Wall and CPU seconds of one run of ``script``; raises if the script fails."""
    env = {**os.environ, "MINILORA_FAST": "1" if fast else "0", "MPLBACKEND": "Agg"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise RuntimeError(f"{script.relative_to(ROOT)} (MINILORA_FAST={int(fast)}) failed:\n"
                           f"{done.stderr[-2000:]}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def measure(only=None) -> dict:
    """Every lesson, or with ``only`` (lesson numbers, "11") just those, merged into the
    existing file's rows; a row measured on its own carries its own time stamp."""
    from minilora.experiments.config import FULL, QUICK
    from minilora.experiments.pretrain import load_or_pretrain

    for setup in (FULL, QUICK):
        load_or_pretrain(setup.base)
    lessons = sorted(LESSONS.glob("[0-9][0-9]_*.py"))
    if only:
        unknown = set(only) - {p.name[:2] for p in lessons}
        if unknown:
            raise ValueError(f"--only: no lesson numbered {sorted(unknown)}; lessons are "
                             f"{[p.name[:2] for p in lessons]}")
        data = json.loads(TIMES.read_text())
        for lesson in [p for p in lessons if p.name[:2] in only]:
            row = measure_one(lesson)
            row["measured"] = now()
            data["lessons"][lesson.name[:2]] = row
        data["lessons"] = dict(sorted(data["lessons"].items()))
        return data
    rows = {lesson.name[:2]: measure_one(lesson) for lesson in lessons}
    return {"measured": now(), "cpus": os.cpu_count(), "lessons": rows}


def measure_one(lesson: Path) -> dict:
    """Full and fast mode of the lesson and of its solution, with the load around them."""
    row = {"lesson": lesson.name, "load_before": round(os.getloadavg()[0], 1)}
    row["full"] = run(lesson, fast=False)
    row["fast"] = run(lesson, fast=True)
    row["solution_full"] = run(LESSONS / "solutions" / lesson.name, fast=False)
    row["solution_fast"] = run(LESSONS / "solutions" / lesson.name, fast=True)
    row["load_after"] = round(os.getloadavg()[0], 1)
    print(lesson.name, row, flush=True)
    return row


def table(data: dict) -> str:
    """The README block: one row per lesson, wall and CPU seconds in both modes."""
    loads = [v for row in data["lessons"].values() for v in (row["load_before"], row["load_after"])]
    stamps = {}  # when -> the lessons measured then (a row measured alone has its own stamp)
    for key, row in data["lessons"].items():
        stamps.setdefault(row.get("measured", data["measured"]), []).append(key)
    when = data["measured"] if len(stamps) == 1 else " and ".join(
        f"{stamp} (lesson{'s' if len(keys) > 1 else ''} {', '.join(keys)})"
        for stamp, keys in stamps.items())
    lines = [BEGIN, "",
             f"Measured {when} on a {data['cpus']}-core machine shared with other "
             f"work (load average {min(loads):.0f}–{max(loads):.0f} during the runs, so the wall "
             f"times are inflated; CPU time is the work itself), one BLAS thread, base models "
             f"already cached. Seconds, wall / CPU:", "",
             "| lesson | full | `MINILORA_FAST=1` | solutions, full | solutions, fast |",
             "|---|---|---|---|---|"]
    for row in data["lessons"].values():
        cells = [f"{row[k]['wall_s']:.1f} / {row[k]['cpu_s']:.1f}"
                 for k in ("full", "fast", "solution_full", "solution_fast")]
        lines.append(f"| {row['lesson']} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", END])


def write_readme(data: dict) -> None:
    text = README.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    README.write_text(text[:start] + table(data) + text[end:])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-readme", action="store_true",
                        help="rewrite lessons/README.md's times table from the new numbers")
    parser.add_argument("--readme-only", action="store_true",
                        help="rewrite the README's table from lessons/times.json, measuring nothing")
    parser.add_argument("--only", nargs="+", metavar="NN",
                        help="measure only these lessons (e.g. 11 12), keep the others' rows")
    args = parser.parse_args()
    if args.readme_only:
        data = json.loads(TIMES.read_text())
    else:
        data = measure(args.only)
        tmp = TIMES.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(TIMES)  # atomic: a crash mid-way leaves the old file
    if args.write_readme or args.readme_only:
        write_readme(data)
