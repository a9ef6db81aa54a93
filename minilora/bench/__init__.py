"""``minilora bench``: training and inference timed against the GEMM peak and PyTorch.

:mod:`.steps` runs the bench (:func:`run_bench`), :mod:`.ops` times the parts of a step,
:mod:`.torch_twin` is the same GPT in PyTorch, :mod:`.report` prints the table and writes JSON.
"""
from .steps import run_bench

__all__ = ["run_bench"]
