"""Prefix tuning: the LoRA paper's baselines "PreEmbed" and "PreLayer" (Section 5.1, after Li &
Liang 2021).

**PreEmbed** (prefix-embedding tuning) inserts special tokens among the input tokens: l_p
*prefix* tokens before the input and, optionally, l_i *infix* tokens inside it. They are not in
the vocabulary; their embeddings P ∈ R^{(l_p + l_i) × d} are the only trainable parameters:

    s⁰ = [P_prefix ; x_1 .. x_k ; P_infix ; x_k+1 .. x_T]      x_t = wte[idx_t] + wpe[t]
    sˡ = block_l(sˡ⁻¹),  l = 1 .. L             logits = lm_head(ln_f(s^L))  at the T real rows
    |Θ| = d_model × (l_p + l_i)

**PreLayer** (prefix-layer tuning) "instead of just learning the word embeddings for some special
tokens, we learn the activations after every Transformer layer": the rows of sˡ⁻¹ that belong to
the virtual tokens are replaced by trainable Pˡ before every block l, so what the previous block
computed for them is discarded:

    sˡ⁻¹[virtual rows] := Pˡ   for l = 1 .. L                 |Θ| = L × d_model × (l_p + l_i)

The virtual tokens reach the real ones only through attention (keys and values at their rows).

Three choices, each forced by what the method means on this model:

* **Positions.** The real tokens keep their positions 0 .. T−1 and the virtual tokens take no row
  of ``wpe``. The pretrained model's window is exactly the task's length (block_size = 17), so
  virtual tokens that took positions would not fit, and shifting the real tokens onto rows that
  pretraining never trained would break the base. Nothing is lost: a trainable P_j plus a fixed
  wpe[j] is just another free vector.
* **Masking.** The causal mask is the model's own: every real token sees every prefix token; a
  real token sees the infix only if it comes after it (t >= infix_at); the prompt before the
  infix is computed exactly as without it. For the tasks' ``[F, x, SEP, y]``, ``infix_at =
  tasks.SEQ_LEN + 1`` puts the infix before SEP, so every scored prediction sees it.
* **Loss on the real tokens only.** ``forward(idx)`` takes (B, T) ids and returns (B, T, V) logits
  of the real positions, so ``train.train`` and ``train.evaluate`` score exactly what they score
  for the base model.

Unlike LoRA (B = 0), prefix tuning does not start equal to the base: the softmax over keys gains
l_p entries from the first step. P starts at the embeddings of vocabulary tokens drawn at random
(Li & Liang: initializing with real words works better than random vectors); PreLayer starts at
the activations those tokens produce at every layer, so PreLayer starts equal to PreEmbed.

    model = add_prefix(GPT(config), kind="layer", length=8)
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..backend import xp
from ..model import GPT
from ..nn import Module, Parameter
from ..ops import cat
from ..tensor import Tensor, no_grad
from ..validation import check_choice, check_int, check_token_ids, fail

KINDS = ("embed", "layer")  # PreEmbed, PreLayer


def prefix_parameter_count(config, kind: str, length: int, infix: int = 0) -> int:
    """|Θ| = d_model × (l_p + l_i) for PreEmbed, L × d_model × (l_p + l_i) for PreLayer."""
    layers = 1 if kind == "embed" else config.n_layer
    return layers * config.n_embd * (length + infix)


def _batch(P: Tensor, B: int) -> Tensor:
    """The same virtual tokens for every sequence: (l, C) -> (B, l, C); add's backward sums the
    B copies of the gradient back into P (unbroadcast)."""
    return P + Tensor(xp.zeros((B, 1, 1), dtype=P.dtype))  # (l, C) + (B, 1, 1) -> (B, l, C)


class PrefixTuningModel(Module):
    """A frozen GPT (``self.model``) read with l_p prefix and l_i infix virtual tokens.

    ``prefix`` is (n, l_p, C) and ``infix`` (n, l_i, C), n = 1 for PreEmbed and L for PreLayer
    (row l is what block l reads); either is None when its length is 0. Use :func:`add_prefix`.
    """

    def __init__(self, model: GPT, kind: str, length: int, infix: int = 0,
                 infix_at: int | None = None, seed: int = 0):
        super().__init__()
        self.model, self.config = model, model.config
        self.kind, self.l_p, self.l_i, self.infix_at = kind, length, infix, infix_at
        P = self._initial_activations(seed)  # (n, l_p + l_i, C)
        # each its own buffer, not a view of P
        self.prefix = Parameter(xp.asarray(P[:, :length], copy=True)) if length else None
        self.infix = Parameter(xp.asarray(P[:, length:], copy=True)) if infix else None

    def _initial_activations(self, seed: int):
        """Embeddings of l_p + l_i vocabulary tokens drawn at random and, for PreLayer, the
        activations they produce before every block, read as a sequence of their own (for the
        prefix rows exactly what PreEmbed computes, as nothing before them can be seen)."""
        cfg, gpt = self.config, self.model
        ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, (1, self.l_p + self.l_i))
        was_training = gpt.training
        gpt.eval()
        with no_grad():
            s = gpt.wte(backend.from_numpy(ids, "int64"))  # (1, l_p + l_i, C), no position
            layers = [s.data]
            for block in list(gpt.layers)[:-1] if self.kind == "layer" else []:
                s = block(s)
                layers.append(s.data)
        gpt.train(was_training)
        return xp.concat(layers, axis=0)  # (n, l_p + l_i, C)

    def _insert(self, x: Tensor, layer: int) -> Tensor:
        """(B, T, C) -> (B, l_p + T + l_i, C): the virtual tokens that block ``layer`` reads."""
        B, k = x.shape[0], self.infix_at
        pieces = [_batch(self.prefix[layer], B)] if self.prefix is not None else []
        if self.infix is None:
            return cat(pieces + [x], dim=1)
        return cat(pieces + [x[:, :k], _batch(self.infix[layer], B), x[:, k:]], dim=1)

    def _real(self, s: Tensor) -> Tensor:
        """(B, l_p + T + l_i, C) -> (B, T, C): the rows of the real tokens, in their order."""
        s = s[:, self.l_p:]  # (B, T + l_i, C)
        if self.infix is None:
            return s
        k = self.infix_at
        return cat([s[:, :k], s[:, k + self.l_i:]], dim=1)

    def forward(self, idx) -> Tensor:
        """Logits (B, T, vocab_size) at the real positions of token ids ``idx`` (B, T)."""
        gpt = self.model
        B, T = check_token_ids("PrefixTuningModel.forward", idx, self.config.block_size).shape
        if self.infix is not None and T <= self.infix_at:
            raise ValueError(f"PrefixTuningModel.forward: sequence length {T} leaves no token "
                             f"after infix_at={self.infix_at}; allowed: T > {self.infix_at}")
        x = gpt.wte(idx) + gpt.wpe(xp.arange(T))  # (B, T, C) + (T, C): positions 0 .. T-1
        s = gpt.drop(self._insert(x, 0))  # (B, l_p + T + l_i, C)
        for layer, block in enumerate(gpt.layers):
            if layer > 0 and self.kind == "layer":  # PreLayer: discard what block l-1 computed
                s = self._insert(self._real(s), layer)  # for the virtual rows, read Pˡ instead
            s = block(s)
        return gpt.lm_head(gpt.ln_f(self._real(s)))  # (B, T, C) -> (B, T, vocab_size)

    def extra_repr(self) -> str:
        infix = f", infix={self.l_i}, infix_at={self.infix_at}" if self.l_i else ""
        return f"kind={self.kind!r}, length={self.l_p}{infix}"


def add_prefix(model: GPT, kind: str = "embed", length: int = 8, infix: int = 0,
               infix_at: int | None = None, seed: int = 0) -> PrefixTuningModel:
    """PreEmbed (``kind="embed"``) or PreLayer (``"layer"``) with ``length`` prefix and ``infix``
    infix tokens (the latter inserted before real position ``infix_at``); freezes every base
    weight and returns the wrapper, whose ``prefix`` (and ``infix``) alone train.

    Every argument is checked before the model is changed. ``length`` has no bound from
    ``block_size``: the virtual tokens take no row of the positional table (see above); the
    infix position does, ``1 <= infix_at <= block_size - 1``.
    """
    if not isinstance(model, GPT):
        fail("add_prefix: model", model, "a minilora GPT", TypeError)
    check_choice("add_prefix: kind", kind, KINDS)
    length = check_int("add_prefix: length", length, low=0)
    infix = check_int("add_prefix: infix", infix, low=0)
    if length + infix == 0:
        fail("add_prefix: length", length, "an integer >= 1, or >= 0 with infix >= 1 "
             "(at least one virtual token)")
    if infix:
        if infix_at is None:
            fail("add_prefix: infix_at", infix_at, "the real position the infix goes before, "
                 "an integer in 1 .. block_size - 1, when infix >= 1")
        infix_at = check_int("add_prefix: infix_at", infix_at, low=1,
                             high=model.config.block_size - 1)
    elif infix_at is not None:
        fail("add_prefix: infix_at", infix_at, "None when infix = 0 (there is no infix)")
    seed = check_int("add_prefix: seed", seed, low=0)
    wrapped = PrefixTuningModel(model, kind, length, infix, infix_at, seed)
    model.requires_grad_(False)
    return wrapped


__all__ = ["KINDS", "PrefixTuningModel", "add_prefix", "prefix_parameter_count"]
