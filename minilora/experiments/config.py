"""What the experiments run: one :class:`Setup` for the full reproduction, one for ``--quick``.

Every number an experiment uses lives here, so the README can cite them and a reader can
change one place. ``FULL`` follows the PyTorch prototype's findings (shared/design notes):
d_model 128 (so r = 64 is well below it), 2 layers, AdamW without weight decay, cosine decay,
batch 32; "rev" converges in 100 steps, "perm" gets 400 (it has a plateau at loss ln 64 to
escape; 400 rather than 500 keeps the whole of ``minilora figures`` within 10 minutes on a
2-core machine). ``QUICK`` is a miniature of the same (d_model 64, fewer ranks, seeds and
steps) that checks the whole pipeline in seconds; its numbers are not findings.

Learning rates. On "perm" the better of 5e-3 and 1e-2 can differ between target sets (with 500
steps, 5e-3 won for {Wq,Wk,Wv,Wo} and all-linear, which could stall on the plateau at 1e-2),
and a single rate would favour some rows of the tables. So each (task, target set) has its own
rate, from ``lr_grid`` by ``minilora tune``: every candidate at r = ``tuning_rank`` on the
``tuning_seeds`` (seeds no reported run uses), scored by mean accuracy on a separate
validation set. Its choice is written into ``TaskSetting.lrs`` below (and its runs into
figures/learning_rate_tuning.json), so the figures do not repeat the search; ``minilora tune``
says if the two ever disagree. Three tuning seeds, because escaping the plateau is partly
luck: one seed's accuracy can be 0.03 and another's 0.76 at the same rate. At 400 steps
1e-2 wins for every target set that learns at all; where both rates fail (Wq, Wk, {Wq,Wk})
the choice means nothing.
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
    lr: float = 1e-2  # LoRA learning rate of the target sets not in ``lrs``
    lrs: tuple = ()  # (target set, lr) pairs chosen by ``minilora tune``
    lr_grid: tuple = (1e-2,)  # the candidates ``minilora tune`` tries; one entry: no tuning
    full_lr: float = 3e-3  # full fine-tuning's learning rate (the prototype's)

    def lr_for(self, label: str) -> float:
        return dict(self.lrs).get(label, self.lr)


@dataclass(frozen=True)
class Setup:
    name: str  # "full" or "quick"
    base: PretrainConfig  # the pre-trained model every run starts from
    tasks: dict  # task name -> TaskSetting, in the order the figures show them
    ranks: tuple  # Table 6's r axis
    seeds: tuple  # reported seeds (data stream and, hashed, LoRA's init)
    ablation_targets: tuple = ("Wq", "Wq,Wv", "Wq,Wk,Wv,Wo", "all-linear")  # Table 6's rows
    budget: tuple = (("Wq", 8), ("Wk", 8), ("Wv", 8), ("Wo", 8), ("Wq,Wk", 4), ("Wq,Wv", 4),
                     ("Wq,Wk,Wv,Wo", 2))  # Table 5: same parameter count, 2·L̂·d·r = 2·2·128·8
    subspace_ranks: tuple = (8, 64)  # Figure 3: φ(A_{r=8}, A_{r=64}); Figure 4 uses the larger
    delta_w_ranks: tuple = (4, 64)  # Table 7's rows
    lora_alpha: float = 8.0  # scaling = alpha / r; alpha = the first r tried, as in the paper
    batch_size: int = 32  # sequences per fine-tuning step
    eval_size: int = 512  # held-out sequences (4,096 answer tokens) for each accuracy
    tuning_rank: int = 8  # r at which each learning rate is chosen
    tuning_seeds: tuple = (100, 101, 102)  # seeds of the tuning runs (never reported seeds)
    curve_ranks: tuple = (1, 8, 64)  # {Wq,Wv} ranks whose training curves are drawn
    curve_points: int = 10  # evaluations along each curve
    intruder_k: int = 10  # top singular vectors examined for intruders
    intruder_threshold: float = 0.5  # max |cosine| below this: an intruder dimension
    intruder_full_lrs: tuple = (3e-3, 3e-4)  # full fine-tuning rates compared there
    random_seed: int = 12345  # the random Gaussian references (Figure 4, Table 7)
    wide_base: PretrainConfig | None = None  # Figures 3-4 once more on this wider base model

    def targets(self, label: str) -> tuple:
        return TARGET_SETS[label]


FULL = Setup(
    name="full",
    base=PretrainConfig(),
    tasks={"rev": TaskSetting(steps=100),
           "perm": TaskSetting(steps=400, lr_grid=(5e-3, 1e-2),
                               lrs=(("Wq", 5e-3),))},
    ranks=(1, 2, 4, 8, 16, 32, 64),
    seeds=(0, 1, 2, 3, 4),
    wide_base=PretrainConfig(model=GPTConfig(vocab_size=tasks.VOCAB_SIZE,
                                             block_size=tasks.BLOCK_SIZE, n_layer=2, n_head=4,
                                             n_embd=256)),  # r = 64 is a quarter of d_model
)

QUICK = Setup(
    name="quick",
    base=PretrainConfig(model=GPTConfig(vocab_size=tasks.VOCAB_SIZE, block_size=tasks.BLOCK_SIZE,
                                        n_layer=2, n_head=4, n_embd=64),
                        steps=500, batch_size=32, lr=1e-2, warmup=50),
    tasks={"rev": TaskSetting(steps=30), "perm": TaskSetting(steps=40)},
    ranks=(1, 4, 16),
    seeds=(0, 1),
    budget=(("Wq", 4), ("Wv", 4), ("Wq,Wv", 2), ("Wq,Wk,Wv,Wo", 1)),
    subspace_ranks=(4, 16),
    delta_w_ranks=(1, 16),
    eval_size=256,
    tuning_rank=4,
    curve_ranks=(1, 16),
    curve_points=5,
    tuning_seeds=(100,),
    wide_base=PretrainConfig(model=GPTConfig(vocab_size=tasks.VOCAB_SIZE,
                                             block_size=tasks.BLOCK_SIZE, n_layer=2, n_head=4,
                                             n_embd=128),
                             steps=200, batch_size=32, lr=1e-2, warmup=20),
)

SETUPS = {"full": FULL, "quick": QUICK}
