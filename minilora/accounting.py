"""Parameter, memory and storage arithmetic: the paper's efficiency claims as numbers.

LoRA on a d_out × d_in weight trains r (d_in + d_out) numbers instead of d_out · d_in. Over
L̂ square d_model × d_model matrices that is 2 · L̂ · d_model · r (Section 4.2). For GPT-3 175B
(d_model 12,288, 96 layers) and Wq alone at r = 8: 2 · 96 · 12,288 · 8 = 18,874,368, stored in
16 bits as ~38 MB next to a ~350 GB checkpoint.

The calculator works on any architecture described by an :class:`Architecture` (GPT-style or
LLaMA-style gated MLP); :func:`measure_training_memory` measures the same quantities for one
real training step of a minilora model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer, described by the sizes that fix its weight matrices."""

    name: str
    d_model: int  # width of the residual stream
    n_layers: int  # transformer blocks
    d_ff: int  # MLP hidden width
    vocab_size: int  # rows of the token embedding (and of lm_head)
    mlp: str = "gelu"  # "gelu": up_proj, down_proj; "gated" (LLaMA): gate_proj, up_proj, down_proj
    n_positions: int = 0  # rows of a learned position table (0: rotary, no table)
    tie_embeddings: bool = False  # lm_head shares the token embedding's weights
    bias: bool = False  # Linear layers carry biases
    norm_params: int = 1  # parameters per channel per norm: 2 LayerNorm (γ, β), 1 RMSNorm (γ)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(out_features, in_features) of each Linear in one block, by PEFT-style name."""
        d, f = self.d_model, self.d_ff
        shapes = {name: (d, d) for name in ATTENTION}
        if self.mlp == "gated":
            shapes["gate_proj"] = (f, d)
        shapes["up_proj"], shapes["down_proj"] = (f, d), (d, f)
        return shapes

    def total_parameters(self) -> int:
        block = sum(o * i + (o if self.bias else 0) for o, i in self.linear_shapes().values())
        block += 2 * self.norm_params * self.d_model
        embeddings = (self.vocab_size + self.n_positions) * self.d_model
        head = 0 if self.tie_embeddings else self.vocab_size * self.d_model
        return self.n_layers * block + embeddings + self.norm_params * self.d_model + head


PRESETS = {
    "gpt3-175b": Architecture("GPT-3 175B", d_model=12288, n_layers=96, d_ff=4 * 12288,
                              vocab_size=50257, n_positions=2048, tie_embeddings=True,
                              bias=True, norm_params=2),
    "gpt2-medium": Architecture("GPT-2 Medium", d_model=1024, n_layers=24, d_ff=4096,
                                vocab_size=50257, n_positions=1024, tie_embeddings=True,
                                bias=True, norm_params=2),
    "llama2-7b": Architecture("LLaMA-2 7B", d_model=4096, n_layers=32, d_ff=11008,
                              vocab_size=32000, mlp="gated"),
}


def from_gpt_config(config) -> Architecture:
    """The Architecture of a minilora ``GPTConfig`` (GELU MLP, learned positions, LayerNorm)."""
    return Architecture("minilora GPT", config.n_embd, config.n_layer,
                        config.mlp_ratio * config.n_embd, config.vocab_size, "gelu",
                        config.block_size, False, config.bias, 2 if config.bias else 1)


def lora_parameters(arch: Architecture, target_modules, r: int) -> int:
    """Trainable LoRA parameters: Σ r (d_in + d_out) over the targeted matrices of every layer.

    ``target_modules`` is a list of names (``"lm_head"`` allowed) or ``"all-linear"`` (every
    Linear but lm_head, as in PEFT).
    """
    from .lora_layer import matches_target

    shapes = arch.linear_shapes()
    known = [*shapes, "lm_head"]
    unknown = [] if isinstance(target_modules, str) else \
        [n for n in target_modules if n not in known]
    if unknown:
        raise ValueError(f"unknown target modules {unknown}; known: {known}")
    names = [n for n in known if matches_target(n, target_modules)]
    if r <= 0:
        raise ValueError(f"r must be a positive integer, got {r}")
    count = sum(arch.n_layers * r * sum(shapes[n]) for n in names if n != "lm_head")
    if "lm_head" in names:
        count += r * (arch.d_model + arch.vocab_size)
    return count


def training_memory(total: int, trainable: int, weight_bytes: int = 2, grad_bytes: int = 2,
                    optimizer_bytes: int = 8) -> dict[str, int]:
    """Bytes for weights, gradients and Adam state (activations excluded).

    Defaults are 16-bit training with fp32 Adam moments: 2 + 2 + 8 = 12 bytes per trainable
    parameter, 2 per frozen one. Frozen weights need no gradient and no optimizer state.
    """
    parts = {"weights": total * weight_bytes, "gradients": trainable * grad_bytes,
             "optimizer": trainable * optimizer_bytes}
    return {**parts, "total": sum(parts.values())}


def summary(arch: Architecture, target_modules, r: int, bytes_per_param: int = 2) -> dict:
    """The paper's table for one setting: counts, storage and training memory, full vs LoRA."""
    total = arch.total_parameters()
    trainable = lora_parameters(arch, target_modules, r)
    return {
        "architecture": arch.name, "r": r,
        "target_modules": target_modules if isinstance(target_modules, str) else list(target_modules),
        "total_parameters": total, "lora_parameters": trainable,
        "trainable_percent": 100.0 * trainable / total,
        "checkpoint_bytes": total * bytes_per_param,
        "adapter_bytes": trainable * bytes_per_param,
        "full_training_bytes": training_memory(total, total)["total"],
        "lora_training_bytes": training_memory(total + trainable, trainable)["total"],
    }


def format_bytes(n: float) -> str:
    """Decimal units, as the paper writes them (350 GB, 35 MB)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError("unreachable")


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters of a minilora Module, counted from its tensors."""
    return model.num_parameters(only_trainable=True), model.num_parameters()


def measure_training_memory(model, optimizer, inputs, targets, loss_fn=None) -> dict[str, int]:
    """Peak bytes NumPy allocates during one training step, and its parts.

    tracemalloc sees every NumPy allocation, so ``peak_step`` is what the step really needed
    beyond what existed before it; ``activations`` is what the graph holds after the forward
    pass (the arrays saved for backward). The peak is not split by subtraction: gradients and
    Adam's lazily allocated state need not be live (or traced) when it occurs. Parameters are
    reported separately (they exist anyway). NumPy backend only.
    """
    import tracemalloc

    from . import backend
    from .train import loss_fn as default_loss

    if not backend.is_numpy():
        raise RuntimeError("measure_training_memory traces host (NumPy) allocations only")
    loss_fn = loss_fn or default_loss
    optimizer.zero_grad()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        loss = loss_fn(model, inputs, targets)
        activations, _ = tracemalloc.get_traced_memory()
        loss.backward()
        optimizer.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    params = list(model.parameters())
    gradients = sum(p.grad.nbytes for p in params if p.grad is not None)
    states = optimizer.state_bytes()
    optimizer.zero_grad()
    return {"parameters": sum(p.data.nbytes for p in params), "gradients": gradients,
            "optimizer_state": states, "peak_step": peak - start,
            "activations": activations - start}


def gpt3_paper_numbers() -> dict[str, int]:
    """Section 4.2's arithmetic for GPT-3 175B, reproduced (tests pin each number)."""
    arch = PRESETS["gpt3-175b"]
    return {
        "wq_r8": lora_parameters(arch, ["q_proj"], 8),  # 18,874,368: the "18M" budget
        "wq_wv_r1": lora_parameters(arch, ["q_proj", "v_proj"], 1),  # ~4.7M
        "wq_wv_r8": lora_parameters(arch, ["q_proj", "v_proj"], 8),  # ~37.7M
        "total": arch.total_parameters(),  # ~175B
        "checkpoint_bytes": 2 * arch.total_parameters(),  # ~350 GB in fp16
    }


def rank_for_budget(arch: Architecture, target_modules, budget: int) -> int:
    """The largest r whose LoRA parameter count fits in ``budget`` (Table 5's fixed budget)."""
    per_rank = lora_parameters(arch, target_modules, 1)
    return max(1, math.floor(budget / per_rank))
