"""The paper's 2021 baselines (Section 5.1): BitFit, PreEmbed and PreLayer.

Oracles: the base GPT itself (BitFit starts equal to it; positions before an infix are computed
as without it), PreEmbed (PreLayer starts equal to it), the paper's parameter-count formulas
checked against the tensors, finite differences, a frozen weight's bytes before and after a step.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minilora import tasks, train
from minilora.accounting import count_parameters
from minilora.baselines.bitfit import apply_bitfit, bias_names, bitfit_parameter_count
from minilora.baselines.prefix import KINDS, add_prefix, prefix_parameter_count
from minilora.model import GPT, GPTConfig
from minilora.optim import SGD, AdamW
from minilora.testing import assert_bits_equal, assert_close, examples, gradcheck, seeds, \
    tiny_gpt, vjp_check

pytestmark = pytest.mark.lesson09

V, T = 11, 6  # tiny_gpt's vocabulary and block_size
kinds = st.sampled_from(KINDS)
lengths = st.integers(1, 4)


def batch(seed: int):
    """(inputs, targets) of shape (2, T) for tiny_gpt."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (2, T)), rng.integers(0, V, (2, T))


def snapshot(model):
    return {name: (p.data.copy(), p.requires_grad) for name, p in model.named_parameters()}


def one_step(model, idx, targets, lr=0.1):
    """One SGD step on the loss; returns the parameters before it."""
    before = snapshot(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = SGD(trainable, lr=lr)
    optimizer.zero_grad()
    train.loss_fn(model, idx, targets).backward()
    optimizer.step()
    return before


def assert_only_these_train(model, before, names):
    """Gradients on ``names`` only; every other tensor has none and keeps its bytes. Returns
    the names whose values changed."""
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in names), name
        if name not in names:
            assert_bits_equal(p.data, before[name][0])
    return {name for name, p in model.named_parameters()
            if not np.array_equal(p.data, before[name][0])}


# -- BitFit -------------------------------------------------------------------------------------
@pytest.mark.law(lesson=9)
@given(seed=seeds)
def test_bitfit_starts_equal_and_only_the_biases_train(seed):
    """BitFit adds nothing, so the model starts bit-identical to its base; after a step only the
    biases b (of every Linear and LayerNorm) have gradients, every W0 keeps its bytes, and every
    bias moves but k_proj's: its gradient is zero, as q·(k_j + b) adds the same q·b to every
    score of a softmax row.

    Source: Ben Zaken et al. 2021, "BitFit" (train only the bias terms); the LoRA paper,
    Section 5.1 ("Bias-only or BitFit"); softmax(z + c) = softmax(z).
    """
    idx, targets = batch(seed)
    base = tiny_gpt(seed)(idx).data
    model = apply_bitfit(tiny_gpt(seed))
    assert_bits_equal(model(idx).data, base)
    before = one_step(model, idx, targets)
    biases = set(bias_names(model))
    moved = assert_only_these_train(model, before, biases)
    key_biases = {name for name in biases if ".k_proj." in name}
    assert biases - key_biases <= moved
    params = dict(model.named_parameters())
    scale = max(np.abs(params[name.replace("k_proj", "q_proj")].grad).max() for name in key_biases)
    for name in key_biases:
        assert np.abs(params[name].grad).max() <= 1e-12 * max(scale, 1.0), name


@pytest.mark.law(lesson=9)
@given(seed=seeds)
def test_bitfit_gradients_match_finite_differences(seed):
    """∂L/∂b from backward() agrees with the central difference of the loss, for all biases at
    once (⟨∂L/∂b, v⟩ = d/dε L(b + ε v)).

    Source: the definition of the derivative; Ben Zaken et al. 2021, "BitFit".
    """
    idx, targets = batch(seed)
    model = apply_bitfit(tiny_gpt(seed))
    biases = [p for p in model.parameters() if p.requires_grad]
    for p in biases:  # away from GPT-2's zero init, so every bias matters
        p.data = np.random.default_rng(seed).normal(0, 0.5, p.shape)
    assert vjp_check(lambda *_: train.loss_fn(model, idx, targets), biases, seed=seed % 1000)


# -- PreEmbed and PreLayer ---------------------------------------------------------------------
@pytest.mark.law(lesson=9)
@given(seed=seeds, kind=kinds, length=st.integers(0, 3), infix=st.integers(0, 2))
def test_prefix_only_the_virtual_tokens_train(seed, kind, length, infix):
    """Only P (the prefix and infix rows) has gradients and changes under an optimizer step;
    every base weight keeps its bytes, and the logits keep the real tokens' shape (B, T, V).

    Source: the LoRA paper, Section 5.1 (PreEmbed, PreLayer: "the number of trainable
    parameters is" |Θ| of P alone); Li & Liang 2021, "Prefix-Tuning" (the LM's parameters
    frozen, only the prefix trained).
    """
    idx, targets = batch(seed)
    infix = infix if length else max(infix, 1)
    model = add_prefix(tiny_gpt(seed), kind, length, infix, 3 if infix else None, seed)
    assert model(idx).shape == (2, T, V)
    before = one_step(model, idx, targets)
    virtual = {name for name, size in (("prefix", length), ("infix", infix)) if size}
    assert assert_only_these_train(model, before, virtual) == virtual
    for name in virtual:  # PreLayer: the activations before every block l, each row Pˡ
        P, P0 = getattr(model, name).data, before[name][0]
        assert all(not np.array_equal(P[layer], P0[layer]) for layer in range(len(P))), name


@pytest.mark.law(lesson=9)
@examples(10)
@given(seed=seeds, kind=kinds, length=st.integers(0, 2), n_layer=st.integers(1, 2))
def test_prefix_gradients_match_finite_differences(seed, kind, length, n_layer):
    """∂L/∂P from backward() agrees entry by entry with central differences, through the batch
    broadcast, the insertion among the real tokens, attention and the read-out of the real rows.

    Source: the definition of the derivative; the LoRA paper, Section 5.1 (PreEmbed, PreLayer).
    """
    idx, targets = batch(seed)
    model = add_prefix(tiny_gpt(seed, n_layer), kind, length, 1, 2, seed)
    virtual = [p for p in model.parameters() if p.requires_grad]
    assert gradcheck(lambda *_: train.loss_fn(model, idx, targets), virtual, seed=seed % 1000)


@pytest.mark.law(lesson=9)
@given(seed=seeds, length=lengths, n_layer=st.integers(1, 3))
def test_prelayer_starts_equal_to_preembed(seed, length, n_layer):
    """PreLayer initialized with the activations its tokens produce after every layer computes
    what PreEmbed with those token embeddings computes: PreEmbed is PreLayer with the computed
    activations kept. Neither starts at the base model (the softmax over keys gains l_p entries).

    Source: the LoRA paper, Section 5.1 (PreLayer "is an extension to prefix-embedding tuning";
    the activations computed from previous layers are replaced by trainable ones); Li & Liang
    2021, "Full vs Embedding-only" and "Initialization" (with activations of real words).
    """
    idx, _ = batch(seed)
    embed = add_prefix(tiny_gpt(seed, n_layer), "embed", length, seed=seed % 1000)(idx).data
    layer = add_prefix(tiny_gpt(seed, n_layer), "layer", length, seed=seed % 1000)(idx).data
    assert_close(layer, embed)
    assert not np.allclose(embed, tiny_gpt(seed, n_layer)(idx).data, rtol=0, atol=1e-12)


@pytest.mark.law(lesson=9)
@given(seed=seeds, kind=kinds, length=st.integers(0, 2), infix=st.integers(1, 3),
       infix_at=st.integers(1, T - 1))
def test_positions_before_the_infix_do_not_see_it(seed, kind, length, infix, infix_at):
    """Under the causal mask, the logits at real positions t < infix_at are those of the same
    model without the infix, whatever the infix holds (with no prefix: the base model's own).

    Source: the LoRA paper, Section 5.1 (PreEmbed's prefix and infix tokens); Li & Liang 2021,
    "Prefixing vs Infixing"; the decoder's causal mask (Vaswani et al. 2017, Section 3.2.3).
    """
    idx, _ = batch(seed)
    model = add_prefix(tiny_gpt(seed), kind, length, infix, infix_at, seed)
    model.infix.data = np.random.default_rng(seed).normal(0, 1, model.infix.shape)
    if length:
        reference = add_prefix(tiny_gpt(seed), kind, length, seed=seed)
        reference.prefix.data = model.prefix.data.copy()
    else:
        reference = tiny_gpt(seed)
    assert_close(model(idx).data[:, :infix_at], reference(idx).data[:, :infix_at])


@pytest.mark.law(lesson=9)
@given(seed=seeds, length=st.integers(2, 4))
def test_prelayer_virtual_tokens_are_a_set(seed, length):
    """In PreLayer the real tokens read the virtual tokens only as keys and values of a softmax
    over them, and the virtual tokens carry no position: permuting them (the same way at every
    layer) leaves the logits unchanged.

    Source: the LoRA paper, Section 5.1 (PreLayer's trainable activations); softmax attention
    is a permutation-invariant sum over keys (Vaswani et al. 2017, Section 3.2.1).
    """
    idx, _ = batch(seed)
    model = add_prefix(tiny_gpt(seed), "layer", length, seed=seed)
    model.prefix.data = np.random.default_rng(seed).normal(0, 1, model.prefix.shape)
    logits = model(idx).data
    model.prefix.data = model.prefix.data[:, np.random.default_rng(seed).permutation(length)]
    assert_close(model(idx).data, logits)


# -- the trainable parameter counts -------------------------------------------------------------
@st.composite
def configs(draw):
    n_head = draw(st.integers(1, 2))
    return GPTConfig(vocab_size=draw(st.integers(2, 9)), block_size=draw(st.integers(4, 8)),
                     n_layer=draw(st.integers(1, 3)), n_head=n_head,
                     n_embd=n_head * draw(st.integers(1, 4)), mlp_ratio=draw(st.integers(1, 4)))


@pytest.mark.law(lesson=9)
@given(cfg=configs(), length=st.integers(0, 3), infix=st.integers(0, 2))
def test_trainable_counts_are_the_papers_formulas(cfg, length, infix):
    """The trainable parameters the tensors hold are the formulas': PreEmbed |Θ| = d_model ×
    (l_p + l_i), PreLayer |Θ| = L × d_model × (l_p + l_i), BitFit the number of bias entries
    L · (m + 7) · d + d (q, k, v, o, up, down, ln_1, ln_2 per block; ln_f).

    Source: the LoRA paper, Section 5.1 (PreEmbed, PreLayer); Ben Zaken et al. 2021, "BitFit"
    (the bias terms of BERT's layers, here a pre-LayerNorm GPT's).
    """
    bitfit = apply_bitfit(GPT(cfg))
    biases = sum(p.numel() for name, p in bitfit.named_parameters() if name.endswith(".bias"))
    assert count_parameters(bitfit)[0] == biases == bitfit_parameter_count(cfg)
    infix = infix if length else max(infix, 1)
    for kind, layers in (("embed", 1), ("layer", cfg.n_layer)):
        model = add_prefix(GPT(cfg), kind, length, infix, 1 if infix else None)
        expected = layers * cfg.n_embd * (length + infix)
        assert count_parameters(model)[0] == prefix_parameter_count(cfg, kind, length, infix) \
            == expected
        assert count_parameters(model)[1] - expected == count_parameters(GPT(cfg))[1]


def test_bitfit_count_on_the_experiments_model():
    cfg = GPTConfig(vocab_size=tasks.VOCAB_SIZE, block_size=tasks.BLOCK_SIZE)  # d 128, L 2, m 4
    assert bitfit_parameter_count(cfg) == 2 * 11 * 128 + 128 == 2944
    assert bitfit_parameter_count(GPTConfig(bias=False)) == 0
    assert prefix_parameter_count(cfg, "layer", 8, 2) == 2 * 128 * 10


# -- training: a few steps on a task lower the held-out loss ---------------------------------
@pytest.fixture(scope="module")
def pretrained():
    """A small GPT trained 150 steps on copyrev: it has learned something to adapt."""
    cfg = GPTConfig(vocab_size=tasks.VOCAB_SIZE, block_size=tasks.BLOCK_SIZE, n_layer=2,
                    n_head=2, n_embd=32)
    base = GPT(cfg, seed=0)
    train.train(base, AdamW(base.parameters(), lr=1e-2, weight_decay=0.0),
                tasks.batch_fn("copyrev", 32, 1), 150)
    state = {name: array.copy() for name, array in base.state_dict().items()}

    def fresh():
        model = GPT(cfg, seed=0)
        model.load_state_dict(state)
        return model
    return fresh


@pytest.mark.parametrize("adapt", [
    apply_bitfit,
    lambda m: add_prefix(m, "embed", 4),
    lambda m: add_prefix(m, "layer", 4),
    lambda m: add_prefix(m, "layer", 2, infix=2, infix_at=tasks.SEQ_LEN + 1),
], ids=["bitfit", "preembed", "prelayer", "prelayer-infix"])
def test_a_few_steps_lower_the_held_out_loss_on_rev(pretrained, adapt):
    model = adapt(pretrained())
    held_out = tasks.eval_set("rev", n=256)
    before = train.evaluate(model, held_out)["loss"]
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2,
                      weight_decay=0.0)
    train.train(model, optimizer, tasks.batch_fn("rev", 32, 0), 30)
    assert train.evaluate(model, held_out)["loss"] < before - 0.02


# -- bad arguments: clear errors, the model unchanged ------------------------------------------
@pytest.mark.parametrize("kwargs, error, field", [
    (dict(kind="prefix"), ValueError, "kind"),
    (dict(kind="Embed"), ValueError, "kind"),
    (dict(length=-1), ValueError, "length"),
    (dict(length=0), ValueError, "length"),
    (dict(length=1.5), TypeError, "length"),
    (dict(length=True), TypeError, "length"),
    (dict(infix=-2), ValueError, "infix"),
    (dict(infix=2), ValueError, "infix_at"),
    (dict(infix=2, infix_at=0), ValueError, "infix_at"),
    (dict(infix=2, infix_at=T), ValueError, "infix_at"),
    (dict(infix=2, infix_at=2.0), TypeError, "infix_at"),
    (dict(infix_at=2), ValueError, "infix_at"),
    (dict(seed=-1), ValueError, "seed"),
])
def test_add_prefix_refuses_bad_arguments_before_changing_the_model(kwargs, error, field):
    model = tiny_gpt(0)
    before = snapshot(model)
    with pytest.raises(error, match=f"add_prefix: {field}: got"):
        add_prefix(model, **kwargs)
    after = snapshot(model)
    assert after.keys() == before.keys()
    for name, (data, requires_grad) in before.items():
        assert after[name][1] == requires_grad
        assert_bits_equal(after[name][0], data)


def test_add_prefix_and_apply_bitfit_refuse_what_they_cannot_adapt():
    with pytest.raises(TypeError, match="add_prefix: model"):
        add_prefix(add_prefix(tiny_gpt(0), "embed", 2), "embed", 2)  # a wrapper is not a GPT
    with pytest.raises(TypeError, match="apply_bitfit: model"):
        apply_bitfit(np.zeros(3))
    model = GPT(GPTConfig(vocab_size=V, block_size=T, n_embd=8, n_head=2, bias=False))
    with pytest.raises(ValueError, match="no bias parameters"):
        apply_bitfit(model)
    assert all(p.requires_grad for p in model.parameters())


def test_forward_refuses_sequences_that_do_not_fit():
    model = add_prefix(tiny_gpt(0), "embed", 2, infix=1, infix_at=4)
    with pytest.raises(ValueError, match="leaves no token after infix_at=4"):
        model(np.zeros((1, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(np.zeros((1, T + 1), dtype=np.int64))
    assert model(np.zeros((1, 5), dtype=np.int64)).shape == (1, 5, V)
