"""Lesson 02, training: the optimizers are PyTorch's update rules, the schedules hit their key
values, optimizer state is held for trainable parameters only, and the loop is deterministic,
learns, and stops before a non-finite loss reaches the weights.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora import Tensor
from minilora.model import GPT, GPTConfig
from minilora.nn import Module, Parameter
from minilora.optim import (SGD, AdamW, get_cosine_schedule_with_warmup,
                            get_linear_schedule_with_warmup)
from minilora.train import evaluate, train
from minilora.testing import examples

pytestmark = pytest.mark.lesson02

CFG = GPTConfig(vocab_size=7, block_size=8, n_layer=2, n_head=2, n_embd=16)


def fixed_batch(seed=0):
    """Four sequences of 9 tokens with distinct first tokens, so every prefix is unique and a
    model can memorize every next token: (inputs, targets) of shape (4, 8)."""
    gen = np.random.default_rng(seed)
    seq = gen.integers(0, CFG.vocab_size, (4, 9))
    seq[:, 0] = gen.permutation(CFG.vocab_size)[:4]
    return seq[:, :-1], seq[:, 1:]


# -- the loop ---------------------------------------------------------------------------------
def test_a_tiny_gpt_overfits_a_fixed_batch():
    x, y = fixed_batch()
    model = GPT(CFG, seed=0)
    history = train(model, AdamW(model.parameters(), lr=1e-2, weight_decay=0.0),
                    lambda step: (x, y), steps=200)
    assert history.loss[0] > 1.5  # about log(7) at the start: the model knew nothing
    assert history.loss[-1] < 0.05


def test_the_same_seed_gives_bit_identical_losses():
    x, y = fixed_batch()

    def run():
        model = GPT(GPTConfig(**{**CFG.__dict__, "dropout": 0.1}), seed=3)
        optimizer = AdamW(model.parameters(), lr=1e-2)
        history = train(model, optimizer, lambda step: (x, y), steps=15,
                        scheduler=get_cosine_schedule_with_warmup(optimizer, 3, 15))
        return history.loss, {n: p.data for n, p in model.named_parameters()}

    (loss_a, weights_a), (loss_b, weights_b) = run(), run()
    assert loss_a == loss_b
    for name in weights_a:
        np.testing.assert_array_equal(weights_a[name], weights_b[name])


class Scaled(Module):
    """A GPT whose logits are multiplied by ``scale``: setting it to NaN poisons one step."""

    def __init__(self, seed=0):
        super().__init__()
        self.gpt, self.scale = GPT(CFG, seed=seed), 1.0

    def forward(self, idx):
        return self.gpt(idx) * self.scale


def test_a_non_finite_loss_stops_training_before_the_update():
    """Steps 0-2 train; step 3's loss is NaN. The weights must be exactly those after three
    steps: the poisoned gradient never reached them."""
    x, y = fixed_batch()
    poisoned, clean = Scaled(), Scaled()

    def poison_at_3(step):
        poisoned.scale = math.nan if step == 3 else 1.0
        return x, y

    with pytest.raises(FloatingPointError, match="step 3"):
        train(poisoned, AdamW(poisoned.parameters(), lr=1e-2), poison_at_3, steps=10)
    train(clean, AdamW(clean.parameters(), lr=1e-2), lambda step: (x, y), steps=3)
    for (name, p), q in zip(poisoned.named_parameters(), clean.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_evaluations_run_on_schedule_and_training_mode_returns():
    x, y = fixed_batch()
    model = GPT(CFG)
    history = train(model, AdamW(model.parameters()), lambda step: (x, y), steps=4,
                    evaluate_fn=lambda m: {"training": m.training}, eval_every=2)
    assert history.evals == [{"step": 2, "training": True}, {"step": 4, "training": True}]
    assert model.training


class CopyModel(Module):
    """Predicts that the next token repeats this one: logit 2 on the input token, 0 elsewhere."""

    def forward(self, idx):
        return Tensor(2.0 * np.eye(5)[idx])  # (B, T) -> (B, T, 5)


def test_evaluate_accuracy_and_loss_on_a_known_case():
    """Batch 1: 3 of 4 counted targets are copies; batch 2: 1 of 2 (one ignored). So 4 of 6
    hits, and the loss is the count-weighted mean of −log p over the 6 counted positions."""
    batches = [(np.array([[0, 1], [2, 3]]), np.array([[0, 1], [2, 4]])),
               (np.array([[4, 4, 1]]), np.array([[4, 0, -100]]))]
    model = CopyModel().eval()
    result = evaluate(model, batches)
    assert result["accuracy"] == pytest.approx(4 / 6, abs=1e-12)
    log_z = math.log(math.exp(2) + 4)
    hit, miss = log_z - 2, log_z  # −log p for a copied and a non-copied target
    assert result["loss"] == pytest.approx((4 * hit + 2 * miss) / 6, rel=1e-6)
    assert not model.training  # evaluate() restores the mode it found


# -- optimizers against the PyTorch update rule ------------------------------------------------
def reference_sgd(p, grads, lr, momentum, weight_decay):
    """torch.optim.SGD (dampening 0, no Nesterov), written out."""
    buf = None
    for g in grads:
        d = g + weight_decay * p
        buf = d if buf is None else momentum * buf + d
        p = p - lr * buf
    return p


def reference_adamw(p, grads, lr, betas, eps, weight_decay):
    """torch.optim.AdamW, written out: decoupled decay, bias-corrected moments."""
    m = v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * weight_decay)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def run_optimizer(make, p0, grads):
    p = Parameter(p0.copy())
    optimizer = make([p])
    for g in grads:
        p.grad = g.copy()
        optimizer.step()
    return p.data


@pytest.mark.law(lesson=2)
@examples(10)
@given(st.integers(0, 2 ** 32 - 1), st.floats(1e-3, 0.5), st.floats(0.0, 0.95),
       st.floats(0.0, 0.1))
def test_sgd_with_momentum_matches_the_reference(seed, lr, momentum, weight_decay):
    """SGD with momentum μ and weight decay λ: b ← μ b + (g + λ p), p ← p − η b, step by step,
    equal to a NumPy reference.

    Source: PyTorch's ``torch.optim.SGD`` update rule (Sutskever et al. 2013 momentum).
    """
    gen = np.random.default_rng(seed)
    p0, grads = gen.normal(size=(3, 4)), [gen.normal(size=(3, 4)) for _ in range(5)]
    ours = run_optimizer(lambda ps: SGD(ps, lr, momentum, weight_decay), p0, grads)
    np.testing.assert_allclose(ours, reference_sgd(p0, grads, lr, momentum, weight_decay),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.law(lesson=2)
@examples(10)
@given(st.integers(0, 2 ** 32 - 1), st.floats(1e-4, 0.1), st.floats(0.0, 0.2))
def test_adamw_matches_the_reference(seed, lr, weight_decay):
    """AdamW: p ← p − η λ p, then p ← p − η m̂ / (√v̂ + ε) with bias-corrected moments, step by
    step, equal to a NumPy reference.

    Source: Loshchilov and Hutter 2019 (decoupled weight decay), Algorithm 2; PyTorch's
    ``torch.optim.AdamW``.
    """
    gen = np.random.default_rng(seed)
    p0, grads = gen.normal(size=(3, 4)), [gen.normal(size=(3, 4)) for _ in range(5)]
    betas, eps = (0.9, 0.95), 1e-8
    ours = run_optimizer(lambda ps: AdamW(ps, lr, betas, eps, weight_decay), p0, grads)
    np.testing.assert_allclose(ours, reference_adamw(p0, grads, lr, betas, eps, weight_decay),
                               rtol=1e-12, atol=1e-14)


def test_parameter_groups_keep_their_own_learning_rates():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    optimizer = SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad = b.grad = np.ones(2)
    optimizer.step()
    np.testing.assert_allclose(a.data, [0.9, 0.9])
    np.testing.assert_allclose(b.data, [0.5, 0.5])


def test_a_parameter_without_a_gradient_is_left_alone():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    optimizer = AdamW([a, b], lr=0.1, weight_decay=0.5)
    a.grad = np.ones(2)
    optimizer.step()
    np.testing.assert_array_equal(b.data, np.ones(2))  # not even weight decay
    assert len(optimizer.state) == 1


# -- schedules --------------------------------------------------------------------------------
def lr_at(scheduler, step):
    for _ in range(step - scheduler.last_step):
        scheduler.step()
    return scheduler.get_last_lr()


@pytest.mark.parametrize("make, min_ratio, expected", [
    (get_cosine_schedule_with_warmup, 0.0, {0: 0, 5: 0.5, 10: 1, 60: 0.5, 110: 0, 200: 0}),
    (get_cosine_schedule_with_warmup, 0.1, {0: 0, 10: 1, 60: 0.55, 110: 0.1, 200: 0.1}),
    (get_linear_schedule_with_warmup, None, {0: 0, 5: 0.5, 10: 1, 60: 0.5, 110: 0, 200: 0}),
])
def test_schedule_values_at_key_steps(make, min_ratio, expected):
    """Warmup 10 of 110 steps: 0 at the start, the peak after warmup, half-way down at step
    60, the floor at the end and after it. Every group scales its own initial lr."""
    a, b = Parameter(np.ones(1)), Parameter(np.ones(1))
    optimizer = SGD([{"params": [a]}, {"params": [b], "lr": 3.0}], lr=2.0)
    extra = {} if min_ratio is None else {"min_lr_ratio": min_ratio}
    scheduler = make(optimizer, 10, 110, **extra)
    for step, factor in expected.items():
        assert lr_at(scheduler, step) == pytest.approx([2.0 * factor, 3.0 * factor], abs=1e-12)


# -- optimizer state --------------------------------------------------------------------------
def partly_frozen_gpt():
    """A GPT with everything frozen but the final LayerNorm and the attention projections."""
    model = GPT(CFG)
    model.requires_grad_(False)
    model.ln_f.requires_grad_(True)
    for block in model.layers:
        block.attn.requires_grad_(True)
    return model


@pytest.mark.parametrize("make, floats_per_param", [
    (lambda ps: AdamW(ps), 2),                 # exp_avg and exp_avg_sq
    (lambda ps: SGD(ps, 0.1, momentum=0.9), 1),  # the momentum buffer
    (lambda ps: SGD(ps, 0.1), 0),              # plain SGD keeps nothing
])
def test_state_bytes_count_trainable_parameters_only(make, floats_per_param):
    x, y = fixed_batch()
    model = partly_frozen_gpt()
    trainable = model.num_parameters(only_trainable=True)
    assert 0 < trainable < model.num_parameters()
    optimizer = make(model.parameters())
    held = [p for group in optimizer.param_groups for p in group["params"]]
    assert all(p.requires_grad for p in held) and sum(p.numel() for p in held) == trainable
    assert optimizer.state_bytes() == 0  # state is allocated lazily
    train(model, optimizer, lambda step: (x, y), steps=1)
    assert optimizer.state_bytes() == floats_per_param * 4 * trainable
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_an_optimizer_over_frozen_parameters_only_is_refused():
    model = GPT(CFG).requires_grad_(False)
    for make in (AdamW, SGD):
        with pytest.raises(ValueError, match="frozen"):
            make(model.parameters())
