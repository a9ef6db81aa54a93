"""Lesson 06's exercises: write your answers here, then grade them.

    pytest lessons/checks/test_06.py

Replace the ``raise NotImplementedError`` with your code. Worked answers:
``lessons/solutions/ex06.py``. (Exercises 1-3 are experiments: their answers are what you
observe, in ``lessons/solutions/06_rank_ablation.py``.)
"""
from minilora import tasks  # noqa: F401 (you will need these)
from minilora.experiments.common import lora_spec, setup_lrs  # noqa: F401
from minilora.experiments.pretrain import load_or_pretrain  # noqa: F401
from minilora.experiments.runs import ALL_LINEAR  # noqa: F401
from minilora.lora import LoraConfig, get_lora_model  # noqa: F401
from minilora.optim import AdamW, get_cosine_schedule_with_warmup  # noqa: F401
from minilora.train import evaluate, train  # noqa: F401


def my_table6_row(setup, task, label, ranks, seed=0):
    """Exercise 4: your own row of Table 6, {r: held-out token accuracy}, for LoRA on the
    weights ``label`` names (e.g. "Wq,Wv") of the set-up's pre-trained model, one run per r.

    Write the loop yourself, without ``run_one``: for each r take the run's settings from
    ``spec = lora_spec(setup, task, label, r, seed, setup_lrs(setup))`` and

    1. load a fresh copy of the pre-trained model (``load_or_pretrain(spec.base)[0]``);
    2. ``get_lora_model`` with r, ``spec.lora_alpha`` and ``spec.targets`` (``ALL_LINEAR``
       means ``"all-linear"``), seeded with ``spec.init_seed()``;
    3. AdamW (``spec.lr``, ``spec.betas``, no weight decay), a cosine schedule with
       ``spec.warmup`` warm-up steps, ``train`` for ``spec.steps`` on
       ``tasks.batch_fn(task, spec.batch_size, spec.seed)``;
    4. ``evaluate`` on ``tasks.eval_set(task, spec.eval_size, seed=spec.eval_seed)``.

    Done this way, your numbers equal the harness's to the last digit: a run is its spec.
    """
    raise NotImplementedError("exercise 06.4: write my_table6_row (lessons/exercises/ex06.py)")
