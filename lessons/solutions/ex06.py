"""Answers to lesson 06's exercises, in the form the checks grade (`lessons/checks/test_06.py`).

`lessons/solutions/06_rank_ablation.py` runs them and explains what they show.
"""
from minilora import tasks
from minilora.experiments.common import lora_spec, setup_lrs
from minilora.experiments.pretrain import load_or_pretrain
from minilora.experiments.runs import ALL_LINEAR
from minilora.lora import LoraConfig, get_lora_model
from minilora.optim import AdamW, get_cosine_schedule_with_warmup
from minilora.train import evaluate, train


def my_table6_row(setup, task, label, ranks, seed=0):
    """Exercise 4: {r: held-out token accuracy} of LoRA on ``label``'s weights, one run per r,
    each fine-tuned here as the set-up's RunSpec says (the same numbers as ``run_one``)."""
    lrs = setup_lrs(setup)
    row = {}
    for r in ranks:
        spec = lora_spec(setup, task, label, r, seed, lrs)  # steps, lr, batch size, alpha, ...
        model = load_or_pretrain(spec.base)[0]  # a fresh copy of the pre-trained GPT
        targets = "all-linear" if spec.targets == ALL_LINEAR else list(spec.targets)
        model = get_lora_model(model, LoraConfig(r=r, lora_alpha=spec.lora_alpha,
                                                 target_modules=targets), seed=spec.init_seed())
        optimizer = AdamW(model.parameters(), lr=spec.lr, betas=spec.betas, weight_decay=0.0)
        scheduler = get_cosine_schedule_with_warmup(optimizer, spec.warmup, spec.steps)
        train(model, optimizer, tasks.batch_fn(task, spec.batch_size, spec.seed), spec.steps,
              scheduler=scheduler)
        held_out = tasks.eval_set(task, spec.eval_size, seed=spec.eval_seed)
        row[r] = evaluate(model, held_out)["accuracy"]
    return row
