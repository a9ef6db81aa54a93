# %% [markdown]
# # Lesson 06: how much rank, and which weights
#
# Section 7.1 of the paper asks two practical questions with two tables. Table 6 varies the
# rank $r$ for a given set of adapted matrices; Table 5 fixes the number of trainable
# parameters and varies which matrices get them. On GPT-3: $r = 1$ on $\{W_q, W_v\}$ is as
# good as $r = 64$, $W_q$ alone needs a larger $r$, and a fixed budget is better spread over
# several weight types than spent on a large $r$ for one. This lesson runs a small ablation
# of its own on minilora's experiment setup, then reads the full sweep that
# `minilora figures` committed, and finds where the toy agrees with the paper and where it
# does not.
#
# **What you'll learn**
# - the set-up behind every figure: a cached pre-trained GPT (`load_or_pretrain`), a
#   low-rank downstream task ("rev") and a high-rank one ("perm"), a run described by a
#   `RunSpec`;
# - Table 5's budget arithmetic, $2\,\hat L\, d_{model}\, r$, on our model;
# - running an ablation with `run_one` / `run_specs` and reading it as Table 6;
# - what the committed sweep shows: which rank is enough depends on the task, and which
#   weights to adapt depends on it even more.
#
# **Prerequisites**: lesson 03 (`get_lora_model`, `target_modules`), lesson 05 (Table 5's
# GPT-3 arithmetic).
#
# **Time**: 45 minutes to read and do the exercises; how long it runs (full and
# `MINILORA_FAST=1`, wall and CPU time) is measured in `lessons/README.md`, plus, the first
# time, the base model's pre-training if `minilora figures` has not cached it yet.

# %%
import json
import os
import sys
import time
from pathlib import Path
from statistics import mean

import matplotlib
import numpy as np
from threadpoolctl import threadpool_limits

if "ipykernel" not in sys.modules:  # run as a script: draw into files, open no window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

import minilora
from minilora import tasks
from minilora.experiments.common import base_spec, full_spec, lora_spec, seed_summary, setup_lrs
from minilora.experiments.rank_ablation import smallest_rank, smallest_solving_rank
from minilora.experiments.config import FULL, QUICK, TARGET_SETS
from minilora.experiments.pretrain import load_or_pretrain
from minilora.experiments.runs import run_specs
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT

# One BLAS thread: these matrices are small, so extra threads gain little, and on a busy
# machine a thread waiting for a core makes each product slower (lessons/README.md's times
# were measured so). threadpoolctl sets it for this process only.
threadpool_limits(1)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"  # CI runs every lesson with MINILORA_FAST=1
SETUP = QUICK if FAST else FULL  # the figures' two set-ups (experiments/config.py)
RANKS = (1, 4) if FAST else (1, 4, 16)  # our own ablation's r axis (section 3)
PERM_RANKS = (1, 4) if FAST else (2, 32)  # and the high-rank task's (section 4)
ROOT = Path(minilora.__file__).resolve().parents[1]
FIGURES = ROOT / "figures" / "lessons"

# %% [markdown]
# ## 1. The set-up: one pre-trained model, two downstream tasks
#
# The paper fine-tunes GPT-3; we fine-tune a 2-layer GPT pre-trained on *copyrev*: after a
# flag token F0 it copies the 8 source tokens, after F1 it writes them reversed.
# `load_or_pretrain(config)` trains it once and caches it (in `.minilora-cache/`, keyed by a
# hash of the configuration); every later call, and every run below, reads the same weights.

# %%
start = time.perf_counter()
base_model, info = load_or_pretrain(SETUP.base)
print(f"base model ({SETUP.name} set-up): n_embd {SETUP.base.model.n_embd}, "
      f"{SETUP.base.model.n_layer} layers, {base_model.num_parameters():,} parameters; "
      f"copyrev accuracy {info['accuracy']:.4f} ({time.perf_counter() - start:.1f} s to load)")

# %% [markdown]
# The downstream tasks change what comes after the separator `|` (`tasks.py`):
#
# - **rev**: reverse for *both* flags. The base model already knows how to reverse; it only has
#   to stop telling F0 from F1. A small change: a low-rank update should do.
# - **perm**: write $\pi(\text{token})$ for a fixed permutation $\pi$ of the 64 content tokens.
#   Every token must come out as another one: a change of high rank (lesson 08).
#
# The same seed gives the same sources and flags for every task; only the answers differ:

# %%
names = {tasks.SEP: "|", tasks.F0: "F0", tasks.F1: "F1"}
for task in ("copyrev", "rev", "perm"):
    for seq in tasks.sequences(task, 2, np.random.default_rng(1)):  # the same rng each task
        print(f"{task:8} " + " ".join(names.get(int(t), f"{int(t):2d}") for t in seq))

# %% [markdown]
# ## 2. Table 5's budget: $2\,\hat L\, d_{model}\, r$
#
# A LoRA update of a $d \times k$ matrix has $r(d + k)$ parameters; for the square
# $d_{model}\times d_{model}$ attention matrices that is $2\,d_{model}\,r$. Adapting $\hat L$
# of them (here: $n_{layer}$ layers × the number of weight types) trains
# $2\,\hat L\, d_{model}\, r$. Table 5 keeps this fixed and trades weight types for rank:
# $W_q$ at $r$, $\{W_q, W_v\}$ at $r/2$, all four at $r/4$. The set-up's budget, counted by
# hand and by `get_lora_model`:

# %%
d_model, n_layer = SETUP.base.model.n_embd, SETUP.base.model.n_layer
budget_counts = {}
for label, r in SETUP.budget:
    L_hat = n_layer * len(TARGET_SETS[label])
    lm = get_lora_model(GPT(SETUP.base.model), LoraConfig(r=r, target_modules=list(
        TARGET_SETS[label])))
    budget_counts[label] = (2 * L_hat * d_model * r, lm.get_nb_trainable_parameters()[0])
    print(f"{label:12} r = {r:2d}: 2 x {L_hat} x {d_model} x {r} = {budget_counts[label][0]:,}"
          f"   get_lora_model: {budget_counts[label][1]:,}")
print(f"full fine-tuning trains {base_model.num_parameters():,} "
      f"({base_model.num_parameters() / budget_counts[SETUP.budget[0][0]][1]:.0f}x the budget)")

# %% [markdown]
# ## 3. Our own Table 6, on "rev"
#
# A run is described completely by a `RunSpec`: base model, task, method, targets, $r$, seed,
# steps, learning rate, batch size. `lora_spec`, `full_spec` and `base_spec` build the
# figures' specs from a `Setup`, with the learning rates `minilora tune` chose
# (`setup_lrs`). The training batches depend only on `(seed, step)`, so runs that differ in
# targets or $r$ see the same data: their comparison is paired.

# %%
lrs = setup_lrs(SETUP)
spec = lora_spec(SETUP, "rev", "Wq,Wv", 4, seed=0, lrs=lrs)
print(spec.label(), "|", {k: getattr(spec, k) for k in ("steps", "lr", "batch_size",
                                                          "lora_alpha", "eval_size")})

# %% [markdown]
# `runs.run_one(spec)` fine-tunes (or, for `base_spec`, only evaluates) and returns plain
# data: the held-out token accuracy, the number of trainable parameters, the training losses,
# and the adapters' A and B (lesson 07 uses those). `run_specs(specs)` runs a list, each
# distinct spec once. (`minilora figures --jobs N` also hands it a pool of worker processes.
# Such "spawn" workers re-run the main script's top-level code unless it sits under
# `if __name__ == "__main__":`, so a plain script like this lesson runs its specs here, one
# after another.)

# %%
targets = ("Wq", "Wq,Wv")
specs = [base_spec(SETUP, "rev"), full_spec(SETUP, "rev", seed=0)]
specs += [lora_spec(SETUP, "rev", label, r, seed=0, lrs=lrs) for label in targets for r in RANKS]
start = time.perf_counter()
results = dict(zip([s.key() for s in specs], run_specs(specs, progress=False)))
print(f"{len(specs)} runs in {time.perf_counter() - start:.1f} s")


def accuracy(spec):
    return results[spec.key()]["accuracy"]


rev_base = accuracy(base_spec(SETUP, "rev"))
rev_full = accuracy(full_spec(SETUP, "rev", seed=0))
table = {label: {r: accuracy(lora_spec(SETUP, "rev", label, r, 0, lrs)) for r in RANKS}
         for label in targets}
print(f"\n'rev', {SETUP.tasks['rev'].steps} steps, seed 0: token accuracy on held-out sequences")
print(f"{'weights':10}" + "".join(f"{'r=' + str(r):>8}" for r in RANKS))
for label in targets:
    print(f"{label:10}" + "".join(f"{table[label][r]:8.4f}" for r in RANKS))
print(f"base model {rev_base:.4f}, full fine-tuning {rev_full:.4f}")

# %% [markdown]
# The base model scores a little over half: right on F1, where it already reverses, wrong on
# most of F0. In the full set-up every adapter closes the gap even at $r = 1$: a rank-1
# update of the query (or query and value) projections is enough to make the model stop
# telling the two flags apart, which is all "rev" asks. This is the paper's Table 6 pattern:
# more rank buys nothing once the update's "intrinsic rank" is covered. (In fast mode the
# model is smaller and trains for only a few steps: its numbers are not findings.)
#
# ## 4. The high-rank task
#
# The same experiment on "perm", with $\{W_q, W_v\}$ at a small and a larger rank. "perm" needs
# many more steps (compare the step counts printed), because the model first sits on a
# plateau where it has unlearned copying and not yet found $\pi$.

# %%
perm_specs = [base_spec(SETUP, "perm")] + [lora_spec(SETUP, "perm", "Wq,Wv", r, 0, lrs)
                                           for r in PERM_RANKS]
start = time.perf_counter()
perm = [res["accuracy"] for res in run_specs(perm_specs, progress=False)]
print(f"'perm', {SETUP.tasks['perm'].steps} steps ({time.perf_counter() - start:.1f} s): "
      f"base {perm[0]:.4f}, " + ", ".join(f"Wq,Wv r={r}: {acc:.4f}"
                                          for r, acc in zip(PERM_RANKS, perm[1:])))

# %% [markdown]
# Here rank matters: the small adapter barely leaves the base model's score, the larger one
# learns a large part of the map. One seed is noisy on this task (escaping the plateau is partly
# luck), which is why the committed sweep uses five and counts them.
#
# ## 5. The committed sweep (Table 6)
#
# `minilora figures` runs the whole grid: each task's rows (config.py: on "rev" $W_q$ and
# $\{W_q, W_v\}$, on "perm" $\{W_q, W_v\}$) at every rank × 5 seeds, plus full fine-tuning
# and the base model, and writes `figures/rank_ablation.json` (and the `.csv` and `.png`
# beside it). On "perm" every $r$ has its own learning rate, chosen by `minilora tune` on
# tuning seeds from a grid that brackets it: a rank that falls short does so at its own best
# rate, not at a rate tuned for another $r$. Because "perm" runs either escape the plateau or not, a
# mean alone misleads; `seed_summary` gives each cell's mean, min, max and how many seeds
# escaped (accuracy above 0.1) and solved the task (above 0.99):

# %%
ablation_path = ROOT / "figures" / "rank_ablation.json"
sweep = json.loads(ablation_path.read_text()) if ablation_path.exists() else None


def cell(values):
    return seed_summary(values, sweep["escape_accuracy"], sweep["solve_accuracy"])


if sweep:
    for task in sweep["task_order"]:
        t = sweep["tasks"][task]
        print(f"'{task}' ({t['steps']} steps, {len(sweep['seeds'])} seeds): base "
              f"{t['base']:.4f}, full fine-tuning {mean(t['full']):.4f}")
        print(f"  {'weights':11}" + "".join(f"{'r=' + str(r):>11}" for r in sweep["ranks"])
              + "   (mean, seeds escaped/solved)")
        for row in t["rows"]:
            texts = []
            for r in sweep["ranks"]:
                c = cell(row["accuracy"][str(r)]) if str(r) in row["accuracy"] else None
                texts.append(f"{c['mean']:.3f} {c['escaped']}/{c['solved']}".rjust(11) if c
                             else " " * 11)
            print(f"  {row['targets']:11}" + "".join(texts))
    per_seed = {row["targets"]: row["accuracy"] for row in sweep["tasks"]["perm"]["rows"]}
    print("perm, Wq,Wv, per seed at each r:")
    for r in sweep["ranks"]:
        print(f"  r = {r:>2}: " + " ".join(f"{a:.3f}" for a in per_seed["Wq,Wv"][str(r)]))
    print(f"chance on 'perm': 1/{tasks.N_CONTENT} = {1 / tasks.N_CONTENT:.4f}")

# %% [markdown]
# What the sweep shows (`figures/FINDINGS.md` states the same, computed from the same file):
#
# - **"rev" is Table 6's finding.** Near the ceiling the differences are in the error rate:
#   $W_q$ alone errs more at small $r$ than $\{W_q, W_v\}$, and more rank helps $W_q$.
# - **"perm" is the contrast.** At the smallest $r$ no seed leaves the plateau at any
#   learning rate of its grid; from a middle $r$ on every seed does (`smallest_rank(sweep,
#   row, "escaped")` finds that $r$ from the data), but within the sweep's steps no $r$ solves
#   the task on every seed, while full fine-tuning does. The training curves (`minilora
#   curves`) show the large ranks still climbing at the end: part of that gap is speed.
# - **Seeds matter on "perm".** Around the boundary the per-seed numbers are far apart: some
#   runs escaped the plateau within the budget and some did not. The mean of such a bimodal
#   result is a poor summary, and a single seed could tell either story.
#
# ## 6. The committed budget table (Table 5)

# %%
budget_path = ROOT / "figures" / "target_modules.json"
budget = json.loads(budget_path.read_text()) if budget_path.exists() else None
if budget:
    print(f"{'weights':12} {'r':>2} {'trainable':>9}" + "".join(f"{t:>8}" for t in budget["tasks"]))
    for c in budget["configs"]:
        print(f"{c['weights']:12} {c['r']:2d} {c['trainable']:9,}"
              + "".join(f"{mean(c[t]):8.3f}" for t in budget["tasks"]))

# %% [markdown]
# (`figures/target_modules.json` is written by `minilora target-modules` or `minilora figures`;
# if this checkout has none, run one of them.) What to look for, and why it may differ by task:
#
# - on **"rev"**, reversing for both flags means changing *where* the model attends (which
#   source position it reads), which is decided by the attention scores $q \cdot k$: expect
#   $W_q$ or $W_k$ to matter more than $W_v$ or $W_o$;
# - on **"perm"** the model keeps where it reads but changes *what* it writes, which lives in
#   the value and output path: expect the opposite.
#
# The paper found $W_q$ or $W_k$ alone the worst choice and $\{W_q, W_v\}$ or all four the best;
# the reason behind it, if the toy bears it out, is that the best weights to adapt are the ones
# that carry the change the task needs. Spreading the budget over several types
# ($\{W_q, W_v\}$ at $r = 4$, all four at $r = 2$) is the safe choice when one does not know
# which those are. The self-checks below test both expectations whenever the file exists.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
for label in targets:
    axes[0].plot(RANKS, [table[label][r] for r in RANKS], "o-", label=f"LoRA {label}")
axes[0].axhline(rev_full, color="black", linestyle="--", label="full fine-tuning")
axes[0].axhline(rev_base, color="gray", linestyle=":", label="base model")
axes[0].set(xlabel="r", ylabel="token accuracy", title="our runs: 'rev', seed 0")
axes[0].set_xscale("log", base=2)
axes[0].set_xticks(RANKS, [str(r) for r in RANKS])
axes[0].legend(fontsize=8)
if sweep:
    for row in sweep["tasks"]["perm"]["rows"]:
        rs = row["ranks"]
        axes[1].plot(rs, [mean(row["accuracy"][str(r)]) for r in rs], "o-", label=row["targets"])
        axes[1].fill_between(rs, [min(row["accuracy"][str(r)]) for r in rs],
                             [max(row["accuracy"][str(r)]) for r in rs], alpha=0.15)
    axes[1].set(xlabel="r", ylabel="token accuracy",
                title=f"committed sweep: 'perm', {len(sweep['seeds'])} seeds (min–max)")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xticks(sweep["ranks"], [str(r) for r in sweep["ranks"]])
    axes[1].legend(fontsize=8)
fig.tight_layout()
if not FAST:
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "06_rank_ablation.png", dpi=120)
plt.show()

# %% [markdown]
# ## Self-checks

# %%
assert all(by_hand == counted for by_hand, counted in budget_counts.values())
assert len({counted for _, counted in budget_counts.values()}) == 1  # one budget for all rows
assert all(results[s.key()]["trainable"] == (0 if s.method == "base" else
                                             base_model.num_parameters() if s.method == "full"
                                             else 2 * n_layer * len(s.targets) * d_model * s.r)
           for s in specs)
assert 0.3 < rev_base < 0.7  # right on F1, wrong on F0
assert perm[0] < 0.05  # the base model copies: π(x) is almost never x's token
if not FAST:
    assert min(table["Wq,Wv"].values()) > 0.95 and rev_full > 0.99  # r = 1 already suffices
    assert perm[2] > perm[1] + 0.2  # on "perm", rank matters
if sweep:  # what the README and figures/FINDINGS.md state about the committed sweep
    rev = {row["targets"]: row["accuracy"] for row in sweep["tasks"]["rev"]["rows"]}
    prm = {row["targets"]: row for row in sweep["tasks"]["perm"]["rows"]}
    n_seeds = len(sweep["seeds"])
    assert n_seeds >= 5
    assert mean(rev["Wq,Wv"]["1"]) > 0.99  # rev: r = 1 on {Wq, Wv} is enough
    assert 1 - mean(rev["Wq"]["1"]) > 2 * (1 - mean(rev["Wq,Wv"]["1"]))  # Wq alone errs more
    wqwv = prm["Wq,Wv"]["accuracy"]
    assert all(cell(wqwv[str(r)])["escaped"] == 0 for r in (1, 2))  # small r never escapes
    assert cell(wqwv["64"])["escaped"] == n_seeds  # ... large r always does
    assert smallest_rank(sweep, prm["Wq,Wv"], "escaped") >= 4
    assert smallest_solving_rank(sweep, prm["Wq,Wv"]) is None or \
        smallest_solving_rank(sweep, prm["Wq,Wv"]) >= 8
    full_perm = cell(sweep["tasks"]["perm"]["full"])
    assert full_perm["solved"] == n_seeds and mean(wqwv["64"]) < full_perm["mean"]
if budget:
    acc = {c["weights"]: {t: mean(c[t]) for t in budget["tasks"]} for c in budget["configs"]}
    assert min(acc["Wq"]["rev"], acc["Wk"]["rev"]) > max(acc["Wv"]["rev"], acc["Wo"]["rev"])
    assert min(acc["Wv"]["perm"], acc["Wo"]["perm"]) > max(acc["Wq"]["perm"], acc["Wk"]["perm"])
print("all self-checks passed")

# %% [markdown]
# ## Exercises
#
# Solutions are in `lessons/solutions/06_rank_ablation.py`.
# Graded: exercise 4 (below; 1-3 are experiments whose answer is what you observe). Write your
# answers in `lessons/exercises/ex06.py` (each function's docstring says what to compute) and
# run `pytest lessons/checks/test_06.py`: a wrong answer fails with what was expected and a
# hint.
#
# 1. **Where $W_v$ fails.** The budget table has $W_v$ alone at $r = 8$ far below 1.0 on "rev".
#    Train that adapter (`get_lora_model` on the cached base model, `train` with
#    `tasks.batch_fn`) and measure its accuracy separately on F0 and on F1 sequences. Which
#    flag does it get wrong, and what does that say about what a value-only update can change?
# 2. **The all-linear budget.** How many parameters does `target_modules="all-linear"` train at
#    $r = 1$ on the full set-up's model? Count it by hand from the shapes of the six Linears of
#    a block ($r(d_{in} + d_{out})$ each) and check with `get_lora_model`. Can all-linear fit
#    Table 5's budget at all?
# 3. **Is the gap bigger than the noise?** Run `Wq` and `Wq,Wv` at $r = 1$ on "rev" for three
#    seeds each and compare the difference of the means with the spread between seeds.
#
# ### 4. Your own sweep loop (graded)
#
# The runs above went to `run_specs`. Now write the loop that the harness runs:
# `my_table6_row(setup, task, label, ranks)` in `lessons/exercises/ex06.py` fine-tunes one
# adapter per rank with `get_lora_model`, `AdamW`, `train` and `evaluate`, taking every
# setting (learning rate, steps, batch size, $\alpha$, the seeds) from the run's `RunSpec`,
# and returns your row of Table 6, {r: accuracy}. Grade it with
# `pytest lessons/checks/test_06.py`: it must reproduce `run_one`'s numbers to the last digit,
# because a run is nothing but its spec. Once it is written, the cell below prints your row
# next to the harness's (it says so until then).
#
# **For the PyTorch reader.** The loop is the one you would write with PEFT and PyTorch;
# line for line:
#
# | here | PEFT / PyTorch / transformers |
# |---|---|
# | `get_lora_model(model, LoraConfig(r=r, lora_alpha=a, target_modules=t))` | `get_peft_model(model, LoraConfig(r=r, lora_alpha=a, target_modules=t))` |
# | `AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=0.0)` | `torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=0.0)` |
# | `get_cosine_schedule_with_warmup(optimizer, warmup, steps)` | `transformers.get_cosine_schedule_with_warmup(optimizer, warmup, steps)` |
# | `train(model, optimizer, batch_fn, steps, scheduler=...)` | `for step in range(steps): loss.backward(); optimizer.step(); scheduler.step(); optimizer.zero_grad()` |

# %%
from exercises.ex06 import my_table6_row  # your answer: lessons/exercises/ex06.py

try:
    my_row = my_table6_row(SETUP, "rev", "Wq,Wv", (1, 4))
    harness_row = [res["accuracy"] for res in run_specs(
        [lora_spec(SETUP, "rev", "Wq,Wv", r, 0, setup_lrs(SETUP)) for r in (1, 4)], progress=False)]
    print("your Table 6 row, 'rev', Wq,Wv:", {r: round(a, 4) for r, a in my_row.items()},
          "| the harness's:", dict(zip((1, 4), (round(a, 4) for a in harness_row))))
    assert list(my_row.values()) == harness_row, \
        "your sweep differs from the harness's: pytest lessons/checks/test_06.py says how"
except NotImplementedError as todo:
    print(f"my_table6_row is not written yet ({todo}); pytest lessons/checks/test_06.py grades it")
