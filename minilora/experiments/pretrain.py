"""Pretraining the base GPT on ``copyrev``, cached on disk by a hash of its configuration.

Every experiment starts from the same pre-trained model, as the paper's start from GPT-3:
``load_or_pretrain(config)`` trains it once and later calls read it back. The cache key is a
hash of everything that determines the weights (model shape, task, steps, optimizer, seed), so
changing any of them trains a new base model and never reuses a stale one.

Cache layout (``.minilora-cache/`` in the repository root, or ``$MINILORA_CACHE``)::

    pretrain-<hash>.safetensors   the weights (safetensors: loading runs no code, unlike pickle)
    pretrain-<hash>.json          the config, the loss curve, the final accuracy, the file's SHA-256

Both are written to a temporary file and renamed into place (atomic), the JSON last: a
half-finished or crashed run leaves no file that a later run would trust.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import fast
from ..fileio import atomic_write
from ..model import GPTConfig
from .. import tasks

FORMAT_VERSION = 1  # bump when the meaning of a cached file changes


@dataclass(frozen=True)
class PretrainConfig:
    model: GPTConfig = field(default_factory=lambda: GPTConfig(
        vocab_size=tasks.VOCAB_SIZE, block_size=tasks.BLOCK_SIZE, n_layer=2, n_head=4, n_embd=128))
    task: str = "copyrev"  # what the base model learns (tasks.py)
    steps: int = 600  # optimizer steps, fresh samples each step
    batch_size: int = 64  # sequences per step
    lr: float = 3e-3  # peak learning rate (AdamW)
    betas: tuple = (0.9, 0.98)  # Adam's moment decay rates
    weight_decay: float = 0.01  # decoupled weight decay
    warmup: int = 100  # linear warm-up steps, then cosine decay to 0
    seed: int = 0  # model init and data stream
    eval_size: int = 1024  # held-out sequences for the reported accuracy

    def digest(self) -> str:
        """12 hex digits of SHA-256 over the config (and the cache format), the cache key."""
        text = json.dumps({"format": FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """``path``, else ``$MINILORA_CACHE``, else ``.minilora-cache`` in the repository root.

    The repository root is the folder holding ``pyproject.toml`` above this package; an
    installed (non-editable) package falls back to the current directory.
    """
    if path is not None:
        return Path(path)
    if os.environ.get("MINILORA_CACHE"):
        return Path(os.environ["MINILORA_CACHE"])
    root = Path(__file__).resolve().parents[2]
    return (root if (root / "pyproject.toml").exists() else Path.cwd()) / ".minilora-cache"


@fast.enabled()  # the experiments' numbers are the fast path's, whoever calls
def pretrain(config: PretrainConfig, progress: bool = False):
    """Train a fresh GPT on ``config.task``; returns ``(model, info)`` (info: losses, accuracy)."""
    from ..model import GPT
    from ..optim import AdamW, get_cosine_schedule_with_warmup
    from ..train import evaluate, train

    model = GPT(config.model, seed=config.seed)
    optimizer = AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                      weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup, config.steps)
    history = train(model, optimizer, tasks.batch_fn(config.task, config.batch_size, config.seed),
                    config.steps, scheduler=scheduler, progress=progress, desc="pretrain")
    metrics = evaluate(model, tasks.eval_set(config.task, config.eval_size, config.seed))
    return model, {"loss_curve": history.loss, **metrics}


def paths(config: PretrainConfig, directory: str | os.PathLike | None = None) -> tuple[Path, Path]:
    stem = cache_dir(directory) / f"pretrain-{config.digest()}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def load_or_pretrain(config: PretrainConfig, directory: str | os.PathLike | None = None,
                     progress: bool = False):
    """The pre-trained model for ``config`` and its info, from the cache or trained now.

    A cache entry is trusted only if its JSON exists, names this config, and records the
    SHA-256 of the weights file next to it; anything else is retrained and overwritten.
    """
    import numpy as np
    from safetensors.numpy import load, save

    from .. import backend
    from ..model import GPT

    weights_path, info_path = paths(config, directory)
    if info_path.exists() and weights_path.exists():
        info = json.loads(info_path.read_text())
        blob = weights_path.read_bytes()
        if info.get("digest") == config.digest() and \
                info.get("sha256") == hashlib.sha256(blob).hexdigest():
            model = GPT(config.model, seed=config.seed)
            model.load_state_dict(load(blob))
            return model, info
    model, info = pretrain(config, progress=progress)
    blob = save({k: np.ascontiguousarray(backend.to_numpy(v))
                 for k, v in model.state_dict().items()}, metadata={"format": "np"})
    info = {"digest": config.digest(), "config": asdict(config),
            "sha256": hashlib.sha256(blob).hexdigest(), **info}
    atomic_write(weights_path, blob)
    atomic_write(info_path, json.dumps(info, indent=1).encode())  # last: marks the entry done
    return model, info
