"""The fast path: everything in minilora that exists only for speed, behind one switch.

    from minilora import fast
    fast.enable()              # for the rest of the process (the CLI's figures and bench do this)
    with fast.enabled():       # or for a block; fast.disable() turns it off again
        train(...)

Off (the default), every op runs its reference: the formula in :mod:`minilora.functional`,
:mod:`minilora.optim` and the LoRA layer, which is what to read. On, those functions hand
their work to the kernels here, which compute the same numbers faster: row blocks shared among
one set of threads (:mod:`.threads`), fused and in-place kernels (:mod:`.kernels`,
:mod:`.attention`), and an allocator that keeps freed memory (:mod:`.allocator`, applied at the
first ``enable()`` and kept, since it is process-wide). The switch is one table,
``backend.kernels``: a reference function looks up its own name there and, if a kernel is
registered, calls it. tests/test_fast.py proves each kernel equal to its reference.
"""
from __future__ import annotations

from contextlib import contextmanager

from .. import backend
from . import allocator, attention, kernels, threads

KERNELS = {  # the name of the reference function -> its fast kernel
    "linear": kernels.linear,
    "lora_linear": kernels.lora_linear,
    "gelu": kernels.gelu,
    "layer_norm": kernels.layer_norm,
    "scaled_dot_product_attention": attention.scaled_dot_product_attention,
    "adamw_step": kernels.adamw_step,
}


def enable() -> None:
    """Run every op with a fast kernel through it, from now on."""
    allocator.keep_freed_memory()
    backend.kernels.update(KERNELS)


def disable() -> None:
    """Back to the reference ops (the allocator setting, once applied, stays)."""
    backend.kernels.clear()


def is_enabled() -> bool:
    return bool(backend.kernels)


@contextmanager
def enabled(on: bool = True):
    """``with fast.enabled():`` (or ``enabled(False)``) for a block; the switch is set back
    after it. Also a decorator: ``@fast.enabled()``."""
    saved = dict(backend.kernels)
    enable() if on else disable()
    try:
        yield
    finally:
        backend.kernels.clear()
        backend.kernels.update(saved)


__all__ = ["enable", "disable", "enabled", "is_enabled", "threads", "KERNELS"]
