"""Fine-tuning runs for the "after LoRA" figures: one :class:`VariantSpec` per run.

A spec says everything a run depends on: the LoRA settings, which variant (rsLoRA scaling,
DoRA, PiSSA init, LoRA+ learning-rate ratio, a 4-bit QLoRA base) and the training budget.
Runs start from the cached pre-trained GPT (``pretrain.py``) and see the batches of
``(seed, step)`` (``tasks.py``), so variants of one seed are compared on the same data; the
adapter's init is drawn from a hash of the spec. Plain data comes back (losses, evaluations,
accuracy, stored bytes), the same whatever executor runs the specs.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from functools import partial

from .. import fast
from .pretrain import PretrainConfig


@dataclass(frozen=True)
class VariantSpec:
    task: str = "rev"  # downstream task (tasks.py)
    targets: tuple = ("q_proj", "v_proj")  # LoRA's target_modules
    r: int = 4  # LoRA rank
    lora_alpha: float = 8.0  # scaling = lora_alpha / r (or / √r with use_rslora)
    use_rslora: bool = False  # rsLoRA's scaling lora_alpha / √r
    use_dora: bool = False  # DoRA's magnitude vector
    init_lora_weights: object = True  # True (A Kaiming, B = 0) or "pissa"
    loraplus_lr_ratio: float = 1.0  # LoRA+: lr of B / lr of A (1: plain LoRA)
    quant_type: str | None = None  # "nf4", "fp4", "int4": QLoRA on a 4-bit base; None: fp32
    double_quant: bool = True  # double quantization of the 4-bit base's constants
    steps: int = 100  # optimizer steps (AdamW, no weight decay, cosine decay to 0)
    lr: float = 1e-2  # learning rate (of A, with LoRA+)
    batch_size: int = 32  # sequences per step
    seed: int = 0  # data stream (and, hashed with the rest, the adapter's init)
    eval_every: int = 0  # evaluate every this many steps (a curve); 0: only at the end
    eval_size: int = 512  # held-out sequences per evaluation

    def init_seed(self) -> int:
        key = json.dumps(asdict(self), sort_keys=True, default=str)
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


FULL_STEPS, QUICK_STEPS = 40, 8  # the step budget of every variant figure


def baseline(quick: bool = False, **changes) -> VariantSpec:
    """The figures' shared setting, changed as asked: LoRA r = 4 on q_proj, v_proj, the
    low-rank task, lr 2e-3 (below LoRA's best, so differences in speed show). Figures that ask
    for the same spec share the run."""
    base = VariantSpec(task="rev", r=4, lr=2e-3, eval_size=256,
                       steps=QUICK_STEPS if quick else FULL_STEPS)
    return replace(base, **changes)


@fast.enabled()  # the experiments' numbers are the fast path's, whoever calls
def run_variant(spec: VariantSpec, base: PretrainConfig | None = None,
                cache: str | None = None) -> dict:
    """Fine-tune the pre-trained GPT as ``spec`` says; returns plain data."""
    from .. import tasks
    from ..variants.linear4bit import BitsAndBytesConfig, quantize_model, weight_bytes
    from ..lora import LoraConfig, get_lora_model
    from ..variants.loraplus import loraplus_param_groups
    from ..optim import AdamW, get_cosine_schedule_with_warmup
    from ..train import evaluate, train
    from .runs import _base_model

    start = time.perf_counter()
    model = _base_model(base or PretrainConfig(), cache)
    eval_batches = tasks.eval_set(spec.task, spec.eval_size, seed=0)
    if spec.quant_type is not None:
        quantize_model(model, BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=spec.quant_type,
            bnb_4bit_use_double_quant=spec.double_quant))
    before = evaluate(model, eval_batches)  # the (quantized) base model, not yet adapted
    config = LoraConfig(r=spec.r, lora_alpha=spec.lora_alpha, target_modules=list(spec.targets),
                        use_rslora=spec.use_rslora, use_dora=spec.use_dora,
                        init_lora_weights=spec.init_lora_weights)
    lm = get_lora_model(model, config, seed=spec.init_seed())
    optimizer = AdamW(loraplus_param_groups(lm, spec.lr, spec.loraplus_lr_ratio), lr=spec.lr,
                      weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, 0, spec.steps)
    history = train(lm, optimizer, tasks.batch_fn(spec.task, spec.batch_size, spec.seed),
                    spec.steps, scheduler=scheduler, eval_every=spec.eval_every,
                    evaluate_fn=(lambda m: evaluate(m, eval_batches)) if spec.eval_every else None)
    final = evaluate(lm, eval_batches)
    return {"spec": asdict(spec), "base_accuracy": before["accuracy"],
            "accuracy": final["accuracy"], "loss": final["loss"], "train_loss": history.loss,
            "curve": history.evals, "weight_bytes": weight_bytes(lm),
            "trainable": lm.num_parameters(only_trainable=True),
            "seconds": time.perf_counter() - start}


def run_variants(specs: list[VariantSpec], executor=None, base: PretrainConfig | None = None,
                 cache: str | None = None, progress: bool = False,
                 results: dict | None = None) -> list[dict]:
    """Results of ``specs`` in their order, each distinct spec run once.

    ``executor``: any ``concurrent.futures.Executor`` (None: here, one after another).
    ``results`` (by spec) lets figures share runs: specs already in it are not run again.
    """
    from .pretrain import load_or_pretrain
    from .runs import execute

    results = {} if results is None else results
    load_or_pretrain(base or PretrainConfig(), cache)  # here, once: workers only read it
    todo = {spec: spec for spec in specs if spec not in results}  # by spec: each runs once
    execute(partial(run_variant, base=base), todo, executor, results, cache,
            "variant runs" if progress else None)
    return [results[spec] for spec in specs]


def moving_average(values: list[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each step (fewer at the start): readable curves."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out
