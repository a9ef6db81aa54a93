"""A GPT-style decoder-only transformer (pre-LayerNorm, as GPT-2), in the layers of ``nn``.

    idx (B, T) ─► wte + wpe ─► [ x + attn(ln_1(x)) ; x + mlp(ln_2(x)) ] × n_layer ─► ln_f ─► lm_head

Module names follow LLaMA/PEFT (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``up_proj``,
``down_proj``, ``lm_head``), so ``target_modules=["q_proj", "v_proj"]`` reads as it does in PEFT.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import backend
from . import functional as F
from .backend import xp
from .nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList
from .tensor import Tensor, no_grad
from .validation import check_int, check_real, check_token_ids


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 67  # number of token ids (the tasks use 64 content tokens + 3 specials)
    block_size: int = 32  # longest sequence the positional table covers
    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads; n_embd must be divisible by it
    n_embd: int = 128  # d_model: the width of the residual stream
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * n_embd
    dropout: float = 0.0  # dropout on embeddings, attention output and MLP output
    bias: bool = True  # biases in Linear layers and LayerNorms
    init_std: float = 0.02  # weights ~ N(0, init_std²), biases zero (GPT-2's init)
    dtype: str = "float32"  # parameter dtype ("float64" for gradient checks)

    def __post_init__(self):
        for field in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "mlp_ratio"):
            if getattr(self, field) <= 0:
                raise ValueError(f"GPTConfig.{field} must be positive, got {getattr(self, field)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} is not divisible by "
                             f"n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")


class CausalSelfAttention(Module):
    """softmax(Q Kᵀ / √d_head + causal mask) V per head, then o_proj."""

    def __init__(self, cfg: GPTConfig, gen: backend.Generator):
        super().__init__()
        self.n_head = cfg.n_head
        linear = lambda: Linear(cfg.n_embd, cfg.n_embd, cfg.bias, generator=gen, dtype=cfg.dtype)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = linear(), linear(), linear(), linear()
        self.dropout = Dropout(cfg.dropout, generator=gen)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        H = self.n_head
        split = lambda t: t.reshape(B, T, H, C // H).transpose(1, 2)  # (B, T, C) -> (B, H, T, C/H)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, C/H)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again: (B, T, C)
        return self.dropout(self.o_proj(y))


class MLP(Module):
    """down_proj(gelu(up_proj(x))), hidden width mlp_ratio · n_embd."""

    def __init__(self, cfg: GPTConfig, gen: backend.Generator):
        super().__init__()
        hidden = cfg.mlp_ratio * cfg.n_embd
        self.up_proj = Linear(cfg.n_embd, hidden, cfg.bias, generator=gen, dtype=cfg.dtype)
        self.down_proj = Linear(hidden, cfg.n_embd, cfg.bias, generator=gen, dtype=cfg.dtype)
        self.dropout = Dropout(cfg.dropout, generator=gen)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.down_proj(F.gelu(self.up_proj(x))))  # (B, T, C) -> (B, T, C)


class Block(Module):
    """Pre-LayerNorm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: GPTConfig, gen: backend.Generator):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, bias=cfg.bias, dtype=cfg.dtype)
        self.attn = CausalSelfAttention(cfg, gen)
        self.ln_2 = LayerNorm(cfg.n_embd, bias=cfg.bias, dtype=cfg.dtype)
        self.mlp = MLP(cfg, gen)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(Module):
    """Token + learned position embeddings, ``n_layer`` blocks, final LayerNorm, ``lm_head``.

    ``GPT(cfg, seed=0)`` is deterministic: the same seed gives the same weights.
    """

    def __init__(self, config: GPTConfig, seed: int = 0):
        super().__init__()
        self.config = config
        gen = backend.Generator(seed)
        self.wte = Embedding(config.vocab_size, config.n_embd, generator=gen, dtype=config.dtype)
        self.wpe = Embedding(config.block_size, config.n_embd, generator=gen, dtype=config.dtype)
        self.drop = Dropout(config.dropout, generator=gen)
        self.layers = ModuleList(Block(config, gen) for _ in range(config.n_layer))
        self.ln_f = LayerNorm(config.n_embd, bias=config.bias, dtype=config.dtype)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False, generator=gen,
                              dtype=config.dtype)
        for name, p in self.named_parameters():  # GPT-2 init: N(0, 0.02²) weights, zero biases
            if name.endswith("bias"):
                p.data = xp.zeros_like(p.data)
            elif not name.split(".")[-2].startswith("ln"):
                p.data = gen.normal(p.shape, std=config.init_std, dtype=config.dtype)

    def forward(self, idx) -> Tensor:
        """Logits (B, T, vocab_size) for token ids ``idx`` (B, T)."""
        B, T = check_token_ids("GPT.forward", idx, self.config.block_size).shape
        positions = xp.arange(T)
        x = self.drop(self.wte(idx) + self.wpe(positions))  # (B, T, C) + (T, C) -> (B, T, C)
        for block in self.layers:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, C) -> (B, T, vocab_size)

    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: backend.Generator | None = None):
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T) and return the ids.

        ``temperature=0`` is greedy decoding; ``top_k`` keeps only the k likeliest tokens.
        """
        out = xp.asarray(check_token_ids("GPT.generate: idx",
                                         idx.data if isinstance(idx, Tensor) else idx))
        check_int("GPT.generate: max_new_tokens", max_new_tokens, low=0)
        check_real("GPT.generate: temperature", temperature, low=0)
        if top_k is not None:
            check_int("GPT.generate: top_k", top_k, low=1)
        gen = generator or backend.default_generator()
        with no_grad():
            for _ in range(max_new_tokens):
                start = max(0, out.shape[1] - self.config.block_size)  # crop to the context
                logits = self(out[:, start:]).data[:, -1, :]  # (B, V)
                if top_k is not None:
                    kth = xp.sort(logits, axis=-1)[:, -min(top_k, logits.shape[-1])]  # (B,)
                    logits = xp.where(logits < kth[:, None], -float("inf"), logits)
                if temperature == 0:
                    nxt = xp.argmax(logits, axis=-1)  # (B,)
                else:
                    p = F._softmax(logits / temperature, -1)  # (B, V)
                    u = gen.uniform((p.shape[0], 1), dtype=str(p.dtype))  # (B, 1)
                    # inverse-CDF sampling: count the cumulative probabilities below u
                    nxt = xp.sum(xp.astype(xp.cumulative_sum(p, axis=-1) < u, out.dtype), axis=-1)
                    nxt = xp.minimum(nxt, p.shape[-1] - 1)
                out = xp.concat([out, xp.astype(nxt, out.dtype)[:, None]], axis=1)
        return out
