"""Lesson 05's exercises: write your answers here, then grade them.

    pytest lessons/checks/test_05.py

Replace each ``raise NotImplementedError`` with your code. Worked answers:
``lessons/solutions/ex05.py``.
"""
import numpy as np  # noqa: F401 (you will need these)

from minilora import accounting  # noqa: F401
from minilora.lora import LoraConfig, get_lora_model  # noqa: F401
from minilora.model import GPT  # noqa: F401
from minilora.optim import AdamW  # noqa: F401


def all_linear_lora_parameters(d_model, d_ff, n_layer, r):
    """Exercise 1: by hand, from r(d_in + d_out) per matrix: the parameters LoRA trains with
    ``target_modules="all-linear"`` on a LLaMA-style model (per block: q, k, v, o of
    d_model × d_model, gate_proj and up_proj of d_ff × d_model, down_proj of d_model × d_ff)."""
    raise NotImplementedError("exercise 05.1: write all_linear_lora_parameters "
                              "(lessons/exercises/ex05.py)")


def qlora_training_bytes(total, trainable):
    """Exercise 2: bytes for weights, gradients and Adam state when the ``total`` frozen base
    weights take 0.5 bytes each and the ``trainable`` adapter weights are trained as in
    ``accounting.training_memory``'s defaults (2 + 2 + 8 bytes each)."""
    raise NotImplementedError("exercise 05.2: write qlora_training_bytes")


def lora_to_full_ratio(config, batch, r=8, tokens=16):
    """Exercise 3: with ``accounting.measure_training_memory`` and AdamW, LoRA's (``LoraConfig(r=r)``)
    measured total (parameters + gradients + optimizer_state + activations) divided by full
    fine-tuning's, for a GPT(config, seed=0) and ``batch`` random sequences of ``tokens``
    (``np.random.default_rng(0).integers(0, config.vocab_size, (batch, tokens))``, used as
    inputs and as targets)."""
    raise NotImplementedError("exercise 05.3: write lora_to_full_ratio")
