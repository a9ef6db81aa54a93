"""What the experiments run: one :class:`Setup` for the full reproduction, one for ``--quick``.

Every number an experiment uses lives here, so the README can cite them and a reader can
change one place. ``FULL`` follows the PyTorch prototype's findings (shared/design notes):
d_model 128 (so r = 64 is well below it), 2 layers, AdamW without weight decay, cosine decay,
batch 32; "rev" converges in 100 steps, "perm" gets 400 (it has a plateau at loss ln 64 to
escape). Five seeds per reported cell: on "perm" a run escapes the plateau or it does not, so
a cell is a count of escapes as much as a mean. ``QUICK`` is a miniature of the same (d_model
64, fewer ranks, seeds and steps) that checks the whole pipeline in seconds; its numbers are
not findings.

What is cut to fit the budget (``minilora figures`` within 10 minutes on 2 cores): Table 6's
{Wq,Wk,Wv,Wo} row (on "rev" every cell of it was 1.0; Table 5 keeps all four at r = 2), Wq
alone on "perm" (at chance at every r and rate tried; Table 5 keeps Wq at r = 8), and
all-linear (not in the paper's table; its runs are the most expensive).

Learning rates. Scaling α/r under Adam makes every r learn at about the same pace, so a rate
tuned at one r is not the best rate of another, and "r = 64 falls short" could mean "r = 64
had the wrong rate". So on "perm" every r of Table 6's {Wq,Wv} row (``tuned_rows``) has its own
rate, chosen by ``minilora tune``: each candidate of ``lr_grid`` on the ``tuning_seeds``
(seeds no reported run uses), scored by mean accuracy on a separate validation set; where the
winner sits at an edge of its grid and learns at all, the grid grows past that edge (×2 or ÷2,
up to ``lr_extensions`` times), so the choice is bracketed by two rates that did worse. Its
choices are written into ``TaskSetting.lrs`` below (and its runs into
figures/learning_rate_tuning.json), so the figures do not repeat the search; ``minilora tune``
says if the two ever disagree. Cells where no candidate leaves the plateau keep the winner of
the grid, which then means nothing. "rev" (at its ceiling) and Table 5's other cells use the
task's rate, 1e-2, untuned; full fine-tuning 3e-3, untuned.

The baselines' group (``minilora figures --baselines``: Figure 2 and the data-size sweep) has
one rate per (task, method), LoRA and FT included, chosen by ``minilora tune --baselines`` the
same way (the method's middle budget, the tuning seeds, a grid grown past an edge winner) and
recorded in ``TaskSetting.baseline_lrs``; its runs are in figures/baselines_lr_tuning.json.
What is cut to fit its budget (10 minutes on 2 cores): prefix lengths above 16 (the sequence,
and the attention's cost, grows with l_p), LoRA {Wq,Wv} at three ranks, all-linear LoRA and the
adapters at two budgets each (their middle budget, where the rate was tuned, and 1), and the
data-size sweep on "rev" only (five sizes, three cells).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import tasks
from ..model import GPTConfig
from .pretrain import PretrainConfig
from .runs import ALL_LINEAR

# The paper's weight types, in its notation, and the module names they adapt (model.py).
TARGET_SETS = {
    "Wq": ("q_proj",),
    "Wk": ("k_proj",),
    "Wv": ("v_proj",),
    "Wo": ("o_proj",),
    "Wq,Wk": ("q_proj", "k_proj"),
    "Wq,Wv": ("q_proj", "v_proj"),
    "Wq,Wk,Wv,Wo": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "all-linear": ALL_LINEAR,
}


@dataclass(frozen=True)
class TaskSetting:
    steps: int  # optimizer steps of every fine-tuning run on this task
    rows: tuple  # Table 6's rows: (target set, ranks) pairs; ranks () means all of Setup.ranks
    lr: float = 1e-2  # LoRA learning rate of every (target set, r) not in ``lrs``
    lrs: tuple = ()  # (target set, r, lr) triples chosen by ``minilora tune``
    lr_grid: tuple = (1e-2,)  # the first candidates ``minilora tune`` tries; one entry: no tuning
    tuned_rows: tuple = ()  # the rows whose every r gets its own rate from ``minilora tune``
    full_lr: float = 3e-3  # full fine-tuning's learning rate (the prototype's)
    baseline_lrs: tuple = ()  # (method, lr) pairs for Figure 2, chosen by minilora tune --baselines


@dataclass(frozen=True)
class Setup:
    name: str  # "full" or "quick"
    base: PretrainConfig  # the pre-trained model every run starts from
    tasks: dict  # task name -> TaskSetting, in the order the figures show them
    ranks: tuple  # Table 6's r axis
    seeds: tuple  # reported seeds (data stream and, hashed, LoRA's init)
    ablation_targets: tuple = ("Wq", "Wq,Wv", "Wq,Wk,Wv,Wo", "all-linear")  # every row's label
    budget: tuple = (("Wq", 8), ("Wk", 8), ("Wv", 8), ("Wo", 8), ("Wq,Wk", 4), ("Wq,Wv", 4),
                     ("Wq,Wk,Wv,Wo", 2))  # Table 5: same parameter count, 2·L̂·d·r, L̂ = layers × types
    subspace_ranks: tuple = (8, 64)  # Figure 3: φ(A_{r=8}, A_{r=64}); Figure 4 uses the larger
    delta_w_ranks: tuple = (4, 64)  # Table 7's rows
    lora_alpha: float = 8.0  # scaling = alpha / r; alpha = the first r tried, as in the paper
    batch_size: int = 32  # sequences per fine-tuning step
    eval_size: int = 512  # held-out sequences (4,096 answer tokens) for each accuracy
    tuning_seeds: tuple = (100, 101)  # seeds of the tuning runs (never reported seeds)
    lr_extensions: int = 2  # times ``minilora tune`` may double the grid past an edge winner
    escape_accuracy: float = 0.1  # a run above this has left the plateau (chance is 1/64)
    solve_accuracy: float = 0.99  # a run above this has learned the task
    curve_ranks: tuple = (1, 8, 64)  # {Wq,Wv} ranks whose training curves are drawn
    curve_points: int = 10  # evaluations along each curve
    intruder_k: int = 10  # top singular vectors examined for intruders
    intruder_threshold: float = 0.5  # max |cosine| below this: an intruder dimension
    intruder_full_lrs: tuple = (3e-3, 3e-4)  # full fine-tuning rates compared there
    random_seed: int = 12345  # the random Gaussian references (Figure 4, Table 7)
    wide_base: PretrainConfig | None = None  # Figures 3-4 once more on this wider base model
    # After the paper: learning vs forgetting (forgetting.py) and intruder mitigation (mitigation.py)
    forgetting_targets: tuple = ("Wq,Wv", "all-linear")  # LoRA's rows, each at forgetting_ranks
    forgetting_ranks: tuple = (1, 8, 64)
    forgetting_full_lrs: tuple = (1e-4, 3e-4, 3e-3)  # full fine-tuning: little to all learned
    effective_energy: float = 0.9  # effective rank: singular values holding 90% of ‖ΔW‖_F²
    mitigation_tasks: tuple = ("perm",)  # the forgetting runs whose adapters are mitigated
    mitigation_lambdas: tuple = (0.0, 0.25, 0.5, 0.75, 1.0)  # 0.75: PEFT's default
    # After the paper: the learning rate LoRA needs (lr_sweep.py) and capacity (capacity.py)
    sweep_task: str = "rev"  # held-out loss keeps falling after accuracy saturates: a U in lr
    sweep_targets: str = "Wq,Wv"
    sweep_ranks: tuple = (1, 4, 16, 64)  # at α/r and α/√r, α = lora_alpha fixed
    sweep_lora_lrs: tuple = (2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2)  # ×2 apart: the first grid
    sweep_full_lrs: tuple = (6.25e-4, 1.25e-3, 2.5e-3, 5e-3, 1e-2)  # on the same lattice
    sweep_extensions: int = 3  # times a grid may grow by ×2 or ÷2 past an edge winner
    capacity_pairs: tuple = (16, 64, 256)  # N of kv<N>
    capacity_targets: str = "Wq,Wv"  # the rank ablation's; all-linear learned kv64 less here
    capacity_ranks: tuple = (1, 8, 64)
    capacity_steps: int = 200
    capacity_lora_lr: float = 4e-2  # best of {1e-2, 2e-2, 4e-2} on kv64, r = 16, one seed
    capacity_full_lr: float = 3e-3  # best of {1e-3, 3e-3, 1e-2} on kv256, one seed
    # The 2021 baselines against LoRA (baselines_budget.py, Figure 2): (method, budgets) pairs;
    # a budget is LoRA's r, the prefix length l_p or the adapters' bottleneck (0: none)
    baseline_budgets: tuple = (("LoRA Wq,Wv", (1, 16, 64)), ("LoRA all-linear", (1, 8)),
                               ("PreEmbed", (1, 4, 16)), ("PreLayer", (1, 4, 16)),
                               ("AdapterH", (1, 8)), ("AdapterL", (1, 8)),
                               ("BitFit", (0,)), ("FT", (0,)))
    # minilora tune --baselines: each method's first candidates, tried at its middle budget
    baseline_lr_grids: tuple = (("LoRA Wq,Wv", (5e-3, 1e-2, 2e-2)),
                                ("LoRA all-linear", (5e-3, 1e-2, 2e-2)),
                                ("PreEmbed", (1e-2, 3e-2, 1e-1)), ("PreLayer", (1e-2, 3e-2, 1e-1)),
                                ("AdapterH", (1e-3, 3e-3, 1e-2)), ("AdapterL", (1e-3, 3e-3, 1e-2)),
                                ("BitFit", (3e-3, 1e-2, 3e-2)), ("FT", (3e-4, 1e-3, 3e-3)))
    baseline_lr_extensions: int = 4  # as lr_extensions, for minilora tune --baselines
    # The data-size sweep (data_size.py): these (method, budget) cells of Figure 2 trained on
    # finite sets of these sizes (same steps: many passes over a small set)
    data_tasks: tuple = ("rev",)
    data_sizes: tuple = (4, 16, 64, 512, 4096)  # from sets FT can memorize to ones as good as the stream
    data_cells: tuple = (("LoRA Wq,Wv", 1), ("LoRA Wq,Wv", 16), ("FT", 0))

    def targets(self, label: str) -> tuple:
        return TARGET_SETS[label]

    def row_ranks(self, task: str, label: str) -> tuple:
        """The ranks Table 6 has for ``label`` on ``task``."""
        return dict(self.tasks[task].rows)[label] or self.ranks


FULL_RANKS = (1, 2, 4, 8, 16, 32, 64)

FULL = Setup(
    name="full",
    base=PretrainConfig(),
    tasks={"rev": TaskSetting(steps=100, rows=(("Wq", ()), ("Wq,Wv", ())),
                              baseline_lrs=(("LoRA Wq,Wv", 0.02), ("LoRA all-linear", 0.02),
                                            ("PreEmbed", 0.01), ("PreLayer", 0.03),
                                            ("AdapterH", 0.04), ("AdapterL", 0.01),
                                            ("BitFit", 0.12), ("FT", 0.006))),
           "perm": TaskSetting(steps=400, rows=(("Wq,Wv", ()),),
                               lr_grid=(1e-2, 2e-2), tuned_rows=("Wq,Wv",),
                               lrs=(("Wq,Wv", 1, 1e-2), ("Wq,Wv", 2, 2e-2), ("Wq,Wv", 4, 2e-2),
                                    ("Wq,Wv", 8, 2e-2), ("Wq,Wv", 16, 2e-2),
                                    ("Wq,Wv", 32, 1e-2), ("Wq,Wv", 64, 1e-2)),
                               baseline_lrs=(("LoRA Wq,Wv", 0.02), ("LoRA all-linear", 0.005),
                                             ("PreEmbed", 0.1), ("PreLayer", 0.1),
                                             ("AdapterH", 0.01), ("AdapterL", 0.01),
                                             ("BitFit", 0.003), ("FT", 0.003)))},
    ranks=FULL_RANKS,
    seeds=(0, 1, 2, 3, 4),
    wide_base=PretrainConfig(model=GPTConfig(vocab_size=tasks.VOCAB_SIZE,
                                             block_size=tasks.BLOCK_SIZE, n_layer=2, n_head=4,
                                             n_embd=256),  # r = 64 is a quarter of d_model
                             steps=300),  # copyrev accuracy 1.0 already; half the default's cost
)

QUICK = Setup(
    name="quick",
    base=PretrainConfig(model=GPTConfig(vocab_size=tasks.VOCAB_SIZE, block_size=tasks.BLOCK_SIZE,
                                        n_layer=2, n_head=4, n_embd=64),
                        steps=500, batch_size=32, lr=1e-2, warmup=50),
    tasks={"rev": TaskSetting(steps=30, rows=(("Wq", ()), ("Wq,Wv", ()))),
           # all-linear at two ranks: exercises a row swept on fewer ranks than the others
           "perm": TaskSetting(steps=40, rows=(("Wq,Wv", ()), ("all-linear", (1, 16))),
                               lr_grid=(1e-2, 2e-2), tuned_rows=("Wq,Wv",), lrs=())},
    ranks=(1, 4, 16),
    seeds=(0, 1),
    budget=(("Wq", 4), ("Wv", 4), ("Wq,Wv", 2), ("Wq,Wk,Wv,Wo", 1)),
    subspace_ranks=(4, 16),
    delta_w_ranks=(1, 16),
    eval_size=256,
    curve_ranks=(1, 16),
    curve_points=5,
    tuning_seeds=(100,),
    lr_extensions=1,
    forgetting_ranks=(1, 16),
    forgetting_full_lrs=(3e-4, 3e-3),
    mitigation_lambdas=(0.0, 0.75, 1.0),
    sweep_ranks=(1, 16),
    sweep_lora_lrs=(5e-3, 1e-2, 2e-2),
    sweep_full_lrs=(1.25e-3, 2.5e-3, 5e-3),
    sweep_extensions=1,
    capacity_pairs=(16, 64),
    capacity_ranks=(1,),
    capacity_steps=40,
    baseline_budgets=(("LoRA Wq,Wv", (1, 4)), ("PreEmbed", (1, 4)), ("PreLayer", (2,)),
                      ("AdapterH", (1, 4)), ("AdapterL", (2,)), ("BitFit", (0,)), ("FT", (0,))),
    data_sizes=(16, 256),
    data_cells=(("LoRA Wq,Wv", 1), ("FT", 0)),
    wide_base=PretrainConfig(model=GPTConfig(vocab_size=tasks.VOCAB_SIZE,
                                             block_size=tasks.BLOCK_SIZE, n_layer=2, n_head=4,
                                             n_embd=128),
                             steps=200, batch_size=32, lr=1e-2, warmup=20),
)

SETUPS = {"full": FULL, "quick": QUICK}
