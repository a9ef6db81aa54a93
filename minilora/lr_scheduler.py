"""Learning-rate schedules: each sets every parameter group's ``lr`` from the step count.

The names are PyTorch's (``LambdaLR``, in ``torch.optim.lr_scheduler``) and Hugging Face's
(``get_cosine_schedule_with_warmup``, ``get_linear_schedule_with_warmup``); minilora.optim
re-exports them. A schedule needs of the optimizer only its ``param_groups``, each with the
``initial_lr`` the optimizer recorded, so this module does not import the optimizers.
"""
from __future__ import annotations

import math


class LambdaLR:
    """Sets each group's ``lr = initial_lr · lr_lambda(step)``; call ``step()`` after each update."""

    def __init__(self, optimizer, lr_lambda):
        self.optimizer, self.lr_lambda, self.last_step = optimizer, lr_lambda, 0
        self._apply()

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self.lr_lambda(self.last_step)

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]


def get_cosine_schedule_with_warmup(optimizer, num_warmup_steps: int,
                                    num_training_steps: int, min_lr_ratio: float = 0.0) -> LambdaLR:
    """Linear warmup from 0, then cosine decay to ``min_lr_ratio`` (Hugging Face's name)."""
    def lr_lambda(step: int) -> float:
        if step < num_warmup_steps:
            return step / max(1, num_warmup_steps)
        progress = min(1.0, (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return LambdaLR(optimizer, lr_lambda)


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps: int,
                                    num_training_steps: int) -> LambdaLR:
    """Linear warmup from 0, then linear decay to 0 (Hugging Face's name)."""
    def lr_lambda(step: int) -> float:
        if step < num_warmup_steps:
            return step / max(1, num_warmup_steps)
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - num_warmup_steps))
    return LambdaLR(optimizer, lr_lambda)
