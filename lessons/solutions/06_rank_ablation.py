# %% [markdown]
# # Solutions to lesson 06: how much rank, and which weights
#
# `python lessons/solutions/06_rank_ablation.py` runs and checks them (`MINILORA_FAST=1`: the
# small set-up, fewer steps and seeds).
#
# The answers the checks grade are in `ex06.py` beside this file (the same names as in
# `lessons/exercises/ex06.py`); this script runs them and explains what they show.
# `MINILORA_ANSWERS=lessons/solutions pytest lessons/checks/test_06.py` grades them.

# %%
import os
from statistics import mean

import numpy as np
from threadpoolctl import threadpool_limits

from minilora import tasks
from minilora.experiments.common import lora_spec, setup_lrs
from minilora.experiments.config import FULL, QUICK, TARGET_SETS
from minilora.experiments.pretrain import load_or_pretrain
from minilora.experiments.runs import run_specs
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT
from minilora.optim import AdamW, get_cosine_schedule_with_warmup
from minilora.tensor import no_grad
from minilora.train import evaluate, train

threadpool_limits(1)  # one BLAS thread, as in the lessons (see their first code cell)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"
SETUP = QUICK if FAST else FULL
lrs = setup_lrs(SETUP)

# %% [markdown]
# ## 1. Where $W_v$ fails
#
# The run of the budget table, by hand: $W_v$ alone at the budget's rank, the set-up's steps,
# learning rate, batch size and schedule. Then the held-out set split by flag.

# %%
r = dict(SETUP.budget)["Wv"]
setting = SETUP.tasks["rev"]
lm = get_lora_model(load_or_pretrain(SETUP.base)[0],
                    LoraConfig(r=r, lora_alpha=SETUP.lora_alpha, target_modules=["v_proj"]))
optimizer = AdamW(lm.parameters(), lr=lrs[("rev", "Wv")], weight_decay=0.0)
train(lm, optimizer, tasks.batch_fn("rev", SETUP.batch_size, seed=0), setting.steps,
      scheduler=get_cosine_schedule_with_warmup(optimizer, 0, setting.steps))

seqs = tasks.sequences("rev", 1024, np.random.default_rng([tasks.EVAL, 0]))
by_flag = {}
for flag, name in ((tasks.F0, "F0"), (tasks.F1, "F1")):
    held_out = [tasks.inputs_targets(seqs[seqs[:, 0] == flag])]
    with lm.disable_adapter():
        base_accuracy = evaluate(lm, held_out)["accuracy"]
    by_flag[name] = evaluate(lm, held_out)["accuracy"]
    print(f"{name}: base model {base_accuracy:.4f}, Wv r={r} adapter {by_flag[name]:.4f}")

L = tasks.SEQ_LEN
inputs, targets = tasks.inputs_targets(seqs[seqs[:, 0] == tasks.F0])
with no_grad():
    predicted = np.argmax(lm(inputs).numpy(), axis=-1)[:, L + 1:]  # (n, L): the answer y
per_position = np.mean(predicted == targets[:, L + 1:], axis=0)  # (L,)
still_copies = np.mean(predicted == inputs[:, 1:L + 1], axis=0)  # writes x_i, not x_(L-1-i)
print("F0, accuracy at each answer position:", np.round(per_position, 2))
print("F0, share that still copies x_i:     ", np.round(still_copies, 2))

# %% [markdown]
# The adapter keeps F1 (where the base model already reverses) and gets F0 right at some answer
# positions only; at the others it mostly still copies. After F0 the frozen query and key
# projections still make attention read the position a *copy* reads, and a value-only update
# cannot change which position is read, only what is read out of it. Where the residual
# stream at the attended position happens to carry the mirrored token already (layer 0 mixes
# tokens across positions), rewriting the read-out is enough; elsewhere it is not. The change
# "rev" needs is in *where* to look: $W_q$ or $W_k$.

# %%
if not FAST:
    assert by_flag["F1"] > 0.95 and by_flag["F0"] < 0.8
    assert per_position.max() > 0.95 and per_position.min() < 0.3  # some positions, not all

# %% [markdown]
# ## 2. The all-linear budget
#
# Per block: four $d \times d$ attention matrices, $4 \cdot r(d + d)$; `up_proj`
# ($4d \times d$) and `down_proj` ($d \times 4d$), $2 \cdot r(d + 4d)$. With $d = 128$ that is
# $2304\,r$ per block, $4608\,r$ for two blocks.

# %%
d, n_layer = FULL.base.model.n_embd, FULL.base.model.n_layer
hidden = FULL.base.model.mlp_ratio * d
by_hand = n_layer * (4 * (d + d) + (d + hidden) + (hidden + d))  # at r = 1
lm = get_lora_model(GPT(FULL.base.model), LoraConfig(r=1, target_modules="all-linear"))
counted = lm.get_nb_trainable_parameters()[0]
budget = 2 * n_layer * len(TARGET_SETS["Wq"]) * d * 8  # Table 5's: Wq at r = 8
print(f"all-linear at r = 1: by hand {by_hand:,}, get_lora_model {counted:,}; "
      f"Table 5's budget {budget:,}")
assert by_hand == counted == 4608 and counted > budget

# %% [markdown]
# Even $r = 1$ overshoots the budget by an eighth: with the MLP's wide matrices in the set, the
# smallest all-linear adapter costs more than Table 5 allows (which is also why the committed
# sweep leaves all-linear out: it is the most expensive row to run).
#
# ## 3. Is the gap bigger than the noise?

# %%
seeds = (0, 1) if FAST else (0, 1, 2)
specs = [lora_spec(SETUP, "rev", label, 1, seed, lrs) for label in ("Wq", "Wq,Wv")
         for seed in seeds]
results = run_specs(specs, progress=False)
acc = {label: [res["accuracy"] for spec, res in zip(specs, results)
               if spec.targets == TARGET_SETS[label]] for label in ("Wq", "Wq,Wv")}
for label, values in acc.items():
    print(f"{label:6} r = 1, seeds {seeds}: " + " ".join(f"{a:.4f}" for a in values)
          + f"  mean {mean(values):.4f}, spread {max(values) - min(values):.4f}")
gap = mean(acc["Wq,Wv"]) - mean(acc["Wq"])
print(f"difference of the means: {gap:.4f}")

# %% [markdown]
# In the full set-up $\{W_q, W_v\}$ is better than $W_q$ for every seed, but the difference is
# of the same order as $W_q$'s own spread between seeds: at $r = 1$ on "rev" both are close to
# the ceiling, and the paired comparison (same batches per seed) is what makes the small gap
# visible at all.

# %%
if not FAST:
    assert all(a > b for a, b in zip(acc["Wq,Wv"], acc["Wq"]))  # paired: better for each seed
    assert gap < 0.05

# %% [markdown]
# ## 4. Your own sweep loop
#
# `my_table6_row` in `ex06.py` beside this file: one fresh copy of the base model per rank,
# `get_lora_model` seeded with the spec's `init_seed()`, AdamW with a cosine schedule, `train`,
# `evaluate` on the spec's held-out set. Every setting comes from the spec, so the row equals
# the harness's exactly.

# %%
from ex06 import my_table6_row  # this folder's ex06.py

ranks = (1, 4) if FAST else (1, 4, 16)
row = my_table6_row(SETUP, "rev", "Wq,Wv", ranks)
harness = [res["accuracy"] for res in run_specs([lora_spec(SETUP, "rev", "Wq,Wv", r, 0, lrs)
                                                 for r in ranks], progress=False)]
print("my_table6_row, 'rev', Wq,Wv:", {r: round(a, 4) for r, a in row.items()})
assert list(row.values()) == harness  # a run is its spec: the same numbers to the last digit
