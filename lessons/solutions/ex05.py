"""Answers to lesson 05's exercises, in the form the checks grade (`lessons/checks/test_05.py`).

`lessons/solutions/05_memory.py` runs them and explains what they show.
"""
import numpy as np

from minilora import accounting
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT
from minilora.optim import AdamW


def all_linear_lora_parameters(d_model, d_ff, n_layer, r):
    """Exercise 1: LoRA's trainable parameters with "all-linear" on a LLaMA-style model: per
    block four d×d attention matrices, gate_proj and up_proj (d_ff × d), down_proj (d × d_ff),
    each r(d_in + d_out)."""
    per_layer = 4 * r * (d_model + d_model) + 2 * r * (d_model + d_ff) + r * (d_ff + d_model)
    return n_layer * per_layer


def qlora_training_bytes(total, trainable):
    """Exercise 2: weights, gradients and Adam state with a 4-bit frozen base (0.5 bytes per
    parameter) and a 16-bit adapter with fp32 moments (2 + 2 + 8 bytes per trainable one)."""
    base = accounting.training_memory(total, 0, weight_bytes=0.5)["total"]  # weights only
    return base + accounting.training_memory(trainable, trainable)["total"]


def lora_to_full_ratio(config, batch, r=8, tokens=16):
    """Exercise 3: LoRA's measured training memory over full fine-tuning's (parameters,
    gradients, optimizer state and activations) for ``batch`` sequences of ``tokens``."""
    inputs = np.random.default_rng(0).integers(0, config.vocab_size, (batch, tokens))
    totals = []
    for model in (GPT(config, seed=0), get_lora_model(GPT(config, seed=0), LoraConfig(r=r))):
        m = accounting.measure_training_memory(model, AdamW(model.parameters()), inputs, inputs)
        totals.append(m["parameters"] + m["gradients"] + m["optimizer_state"] + m["activations"])
    return totals[1] / totals[0]
