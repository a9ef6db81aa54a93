"""Where a training step's time goes: the GPT's ops one by one, forward and backward.

The bench's step time is one number; this splits it. Each op of the model (the Linear layers
at their three shapes, attention, GELU, layer norm) runs forward and backward on inputs of the
shapes it has in the model, side by side with the same op in PyTorch, and is counted as often
as one training step runs it. What the ops leave out (embeddings, cross-entropy, residual
adds, AdamW, the autograd loop itself) is the step's time minus their sum.
"""
from __future__ import annotations

from . import functional as F
from .backend import Generator, to_numpy
from .model import GPTConfig
from .tensor import Tensor


def op_shapes(cfg: GPTConfig, batch: int) -> dict:
    """name -> (what the op takes, how many times one full fine-tuning step runs it)."""
    C, T, L = cfg.n_embd, cfg.block_size, cfg.n_layer
    H, hidden = cfg.n_head, cfg.mlp_ratio * cfg.n_embd
    return {f"linear {C}->{C}": ((batch, T, C, C), 4 * L),  # q, k, v, o projections
            f"linear {C}->{hidden}": ((batch, T, C, hidden), L),  # up_proj
            f"linear {hidden}->{C}": ((batch, T, hidden, C), L),  # down_proj
            "lm_head": ((batch, T, C, cfg.vocab_size), 1),  # a Linear without bias
            "attention": ((batch, T, H, C // H), L),
            "gelu": ((batch, T, hidden), L),
            "layer_norm": ((batch, T, C), 2 * L + 1)}  # ln_1, ln_2 per block; ln_f


def _inputs(gen: Generator, name: str, shape: tuple) -> tuple:
    """The op's inputs and the gradient of its output, as the model would hand them over."""
    if name.startswith(("linear", "lm_head")):
        B, T, fin, fout = shape
        bias = (gen.normal((fout,)),) if name.startswith("linear") else ()
        return (gen.normal((B, T, fin)), gen.normal((fout, fin)) * fin ** -0.5) + bias, \
            gen.normal((B, T, fout))
    if name == "attention":  # heads split from (B, T, H, D): transposed views, as in the model
        B, T, H, D = shape
        return tuple(gen.normal((B, T, H, D)).transpose(0, 2, 1, 3) for _ in range(3)), \
            gen.normal((B, H, T, D))
    if name == "gelu":
        return (gen.normal(shape),), gen.normal(shape)
    return (gen.normal(shape), gen.normal(shape[-1:]), gen.normal(shape[-1:])), \
        gen.normal(shape)  # layer_norm: x, weight, bias


def _minilora_op(name: str, args: tuple, grad):
    def run():
        ts = [Tensor(a, requires_grad=True) for a in args]
        if name.startswith(("linear", "lm_head")):
            out = F.linear(*ts)
        elif name == "attention":
            out = F.scaled_dot_product_attention(*ts, is_causal=True)
        elif name == "gelu":
            out = F.gelu(*ts)
        else:
            out = F.layer_norm(ts[0], ts[0].shape[-1], ts[1], ts[2])
        out.backward(grad)
    return run


def _torch_op(torch, name: str, args: tuple, grad):
    tf = torch.nn.functional
    ts = [torch.from_numpy(to_numpy(a)).requires_grad_(True) for a in args]
    g = torch.from_numpy(to_numpy(grad))

    def run():
        for t in ts:
            t.grad = None
        if name.startswith(("linear", "lm_head")):
            out = tf.linear(*ts)
        elif name == "attention":
            out = tf.scaled_dot_product_attention(*ts, is_causal=True)
        elif name == "gelu":
            out = tf.gelu(ts[0], approximate="tanh")
        else:
            out = tf.layer_norm(ts[0], ts[0].shape[-1:], ts[1], ts[2])
        out.backward(g)
    return run


def bench_ops(cfg: GPTConfig, batch: int, time_side_by_side, repeats: int, min_sample_s: float,
              torch=None) -> list[dict]:
    """Forward + backward of each op, its count per step and its milliseconds per step."""
    gen = Generator(2)
    shapes, cases = op_shapes(cfg, batch), {}
    for name, (shape, _) in shapes.items():
        args, grad = _inputs(gen, name, shape)
        cases[name] = _minilora_op(name, args, grad)
        if torch is not None:
            cases["torch " + name] = _torch_op(torch, name, args, grad)
    times = time_side_by_side(cases, repeats, min_sample_s)
    rows = []
    for name, (shape, count) in shapes.items():
        row = {"op": name, "shape": list(shape), "per_step": count, "seconds": times[name],
               "step_seconds": count * times[name]}
        if torch is not None:
            row["torch_seconds"] = times["torch " + name]
            row["torch_step_seconds"] = count * times["torch " + name]
            row["over_torch"] = times[name] / times["torch " + name]
        rows.append(row)
    return rows


__all__ = ["op_shapes", "bench_ops"]
