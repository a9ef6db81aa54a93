"""The same GPT, and the same LoRA, in PyTorch eager: the bench's reference point.

Used only by ``minilora bench`` when PyTorch is installed (``pip install 'minilora[bench]'``).
Shapes, names and the pre-LayerNorm layout match :mod:`minilora.model` layer for layer, so a
step of either model does the same matrix products; the bench checks the parameter counts agree.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class TorchLoraLinear(nn.Module):
    """y = W0 x + b + scaling · B (A x), with W0 and b frozen (Hu et al. 2021, eq. 3)."""

    def __init__(self, base: nn.Linear, r: int, lora_alpha: float):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        self.scaling = lora_alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The plain Linear with W0 + scaling · B A: zero extra inference latency."""
        self.base.weight += self.scaling * (self.lora_B @ self.lora_A)
        return self.base


class TorchAttention(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        B, T, C = x.shape
        split = lambda t: t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, C/H)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class TorchMLP(nn.Module):
    def __init__(self, d: int, mlp_ratio: int):
        super().__init__()
        self.up_proj, self.down_proj = nn.Linear(d, mlp_ratio * d), nn.Linear(mlp_ratio * d, d)

    def forward(self, x):
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class TorchBlock(nn.Module):
    def __init__(self, d: int, n_head: int, mlp_ratio: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = TorchAttention(d, n_head)
        self.mlp = TorchMLP(d, mlp_ratio)  # minilora's module path, so state dicts (and PEFT's keys) match

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                 mlp_ratio: int = 4):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.layers = nn.ModuleList(TorchBlock(n_embd, n_head, mlp_ratio) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.layers:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def build(cfg, lora_r: int = 0, lora_alpha: float = 8, target_modules=("q_proj", "v_proj"),
          merged: bool = False) -> TorchGPT:
    """A torch GPT for a minilora ``GPTConfig``; with ``lora_r`` > 0 only the adapters train."""
    model = TorchGPT(cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.mlp_ratio)
    if lora_r:
        model.requires_grad_(False)
        for block in model.layers:
            for name in target_modules:
                lora = TorchLoraLinear(getattr(block.attn, name), lora_r, lora_alpha)
                setattr(block.attn, name, lora.merged() if merged else lora)
    return model
