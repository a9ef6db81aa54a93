"""Checks for lesson 06: your sweep loop reproduces the experiment harness's Table 6 row.

Run: `pytest lessons/checks/test_06.py` (your answers in lessons/exercises/ex06.py). It uses
the small ("quick") set-up; the first run pre-trains its base model (a few seconds).
"""
from grading import answers, check
from minilora.experiments.common import lora_spec, setup_lrs
from minilora.experiments.config import QUICK
from minilora.experiments.runs import run_specs

ex = answers("06")


def test_exercise_4_your_sweep_is_the_harness():
    ranks = (1, 2)
    for label in ("Wq,Wv", "all-linear"):
        mine = ex.my_table6_row(QUICK, "rev", label, ranks, seed=0)
        specs = [lora_spec(QUICK, "rev", label, r, 0, setup_lrs(QUICK)) for r in ranks]
        harness = {r: res["accuracy"] for r, res in zip(ranks, run_specs(specs, progress=False))}
        check(sorted(mine) == list(ranks), f"{label}: expected one accuracy per rank {ranks}, "
              f"got keys {sorted(mine)}", "return {r: accuracy} for every r in ranks")
        for r in ranks:
            check(abs(mine[r] - harness[r]) < 1e-9,
                  f"{label}, r = {r}: expected run_one's accuracy {harness[r]:.6f}, got "
                  f"{mine[r]:.6f}", "every setting comes from the spec: lr, betas, warmup, "
                  "steps, batch size and seed, lora_alpha, the init seed spec.init_seed(), and "
                  "the held-out set tasks.eval_set(task, spec.eval_size, seed=spec.eval_seed)")
