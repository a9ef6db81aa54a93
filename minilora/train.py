"""The training loop: explicit, no globals, deterministic given its inputs.

    for step in range(steps):
        inputs, targets = get_batch(step)          # the data for this step
        loss = cross_entropy(model(inputs), targets, ignore_index=-100)
        optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()

Everything the loop touches is passed in: the same model, optimizer and batches give the same
losses, bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from . import functional as F
from .backend import xp
from .lr_scheduler import LambdaLR
from .nn import Module
from .optim import Optimizer
from .tensor import no_grad

IGNORE_INDEX = -100  # targets equal to this are left out of the loss and the accuracy


@dataclass
class History:
    """What a run produced: the training loss per step and evaluations along the way."""

    loss: list[float] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)


def loss_fn(model: Module, inputs, targets):
    """Mean next-token cross-entropy over the positions whose target is not ignored."""
    return F.cross_entropy(model(inputs), targets, ignore_index=IGNORE_INDEX)


def train(model: Module, optimizer: Optimizer, get_batch: Callable[[int], tuple], steps: int, *,
          scheduler: LambdaLR | None = None, evaluate_fn: Callable[[Module], dict] | None = None,
          eval_every: int = 0, progress: bool = False, desc: str = "train") -> History:
    """Run ``steps`` optimizer steps; ``get_batch(step)`` returns ``(inputs, targets)``.

    A non-finite loss stops the run with ``FloatingPointError`` before the update that would
    spread it into the weights.
    """
    history = History()
    model.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm  # imported where used: only progress bars need it
        bar = tqdm(total=steps, desc=desc, leave=False)
    try:
        for step in range(steps):
            inputs, targets = get_batch(step)
            loss = loss_fn(model, inputs, targets)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {step}; the weights "
                                         f"were not updated (lower the learning rate?)")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            history.loss.append(value)
            if evaluate_fn is not None and eval_every and (step + 1) % eval_every == 0:
                history.evals.append({"step": step + 1, **evaluate_fn(model)})
                model.train()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
    finally:
        if bar is not None:
            bar.close()
    return history


def evaluate(model: Module, batches) -> dict:
    """Mean loss and token accuracy over ``batches`` of ``(inputs, targets)``, in eval mode.

    Accuracy counts positions whose target is not ``IGNORE_INDEX`` and whose argmax logit
    equals the target.
    """
    was_training = model.training
    model.eval()
    total_loss = correct = counted = 0.0
    with no_grad():
        for inputs, targets in batches:
            logits = model(inputs)
            targets = xp.asarray(targets)
            valid = targets != IGNORE_INDEX
            n = float(xp.sum(xp.astype(valid, logits.dtype)))
            total_loss += F.cross_entropy(logits, targets, IGNORE_INDEX).item() * n
            hits = (xp.argmax(logits.data, axis=-1) == targets) & valid
            correct += float(xp.sum(xp.astype(hits, logits.dtype)))
            counted += n
    model.train(was_training)
    return {"loss": total_loss / max(counted, 1.0), "accuracy": correct / max(counted, 1.0)}
