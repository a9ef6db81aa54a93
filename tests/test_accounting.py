"""The paper's efficiency arithmetic (Section 4.2) and the measured memory of a real step."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minilora import accounting as acc
from minilora.cli import main
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT, GPTConfig
from minilora.optim import AdamW

pytestmark = pytest.mark.lesson05


def test_gpt3_numbers_match_the_paper():
    n = acc.gpt3_paper_numbers()
    assert n["wq_r8"] == 18_874_368  # "18M" budget: Wq at r = 8 over 96 layers
    assert round(n["wq_wv_r1"] / 1e6, 1) == 4.7
    assert round(n["wq_wv_r8"] / 1e6, 1) == 37.7
    assert 174e9 < n["total"] < 176e9  # "175B"
    assert round(n["checkpoint_bytes"] / 1e9, -1) == 350  # "350GB" in fp16


def test_gpt3_adapter_is_tens_of_megabytes_and_training_memory_drops():
    s = acc.summary(acc.PRESETS["gpt3-175b"], ["q_proj"], 8)
    assert s["adapter_bytes"] == 2 * 18_874_368  # 37.7 MB = 36.0 MiB (the paper: "35MB")
    assert 30e6 < s["adapter_bytes"] < 40e6
    assert round(s["lora_training_bytes"] / 1e9, -1) == 350  # the paper's "350GB" with LoRA
    # Full fine-tuning with 16-bit Adam: 2 + 2 + 8 = 12 bytes per parameter.
    assert s["full_training_bytes"] == 12 * s["total_parameters"]


def test_llama2_7b_numbers():
    arch = acc.PRESETS["llama2-7b"]
    assert arch.total_parameters() == 6_738_415_616
    assert acc.lora_parameters(arch, ["q_proj", "v_proj"], 8) == 4_194_304
    assert acc.lora_parameters(arch, "all-linear", 8) == 19_988_480
    every = list(arch.linear_shapes()) + ["lm_head"]
    assert acc.lora_parameters(arch, every, 8) == 20_277_248


@pytest.mark.law(lesson=6)
@given(d=st.integers(8, 512), layers=st.integers(1, 8), r=st.integers(1, 64))
def test_square_matrices_cost_2_L_d_r(d, layers, r):
    """LoRA on L̂ = (layers × targets) square d_model × d_model matrices trains 2 · L̂ · d_model ·
    r parameters: the budget Table 5 holds fixed.

    Source: Hu et al. 2021, Section 4.1 and Table 5 (the 18M budget).
    """
    arch = acc.Architecture("x", d, layers, 4 * d, 100)
    for targets in (["q_proj"], ["q_proj", "v_proj"], list(acc.ATTENTION)):
        assert acc.lora_parameters(arch, targets, r) == 2 * layers * len(targets) * d * r


@pytest.mark.law(lesson=5)
@given(vocab=st.integers(5, 80), block=st.integers(2, 40), layers=st.integers(1, 3),
       heads=st.integers(1, 4), per_head=st.integers(1, 8), bias=st.booleans())
def test_calculator_counts_a_real_model_exactly(vocab, block, layers, heads, per_head, bias):
    """The calculator's closed-form parameter counts (the base, and LoRA on all-linear at r = 1)
    equal the counts of a real GPT built from the same config.

    Source: Hu et al. 2021, Section 4.1 (|Θ| = r·(d + k) per matrix); the GPT-2 architecture.
    """
    cfg = GPTConfig(vocab_size=vocab, block_size=block, n_layer=layers, n_head=heads,
                    n_embd=heads * per_head, bias=bias)
    model = GPT(cfg)
    arch = acc.from_gpt_config(cfg)
    assert arch.total_parameters() == model.num_parameters()
    lm = get_lora_model(model, LoraConfig(r=1, target_modules="all-linear"))
    assert acc.count_parameters(lm)[0] == acc.lora_parameters(arch, "all-linear", 1)


def test_unknown_target_and_bad_rank_are_clear_errors():
    arch = acc.PRESETS["gpt3-175b"]
    with pytest.raises(ValueError, match="q_prj"):
        acc.lora_parameters(arch, ["q_prj"], 8)
    with pytest.raises(ValueError, match="r must be a positive"):
        acc.lora_parameters(arch, ["q_proj"], 0)


def test_measured_step_memory_lora_is_smaller_in_gradients_and_state():
    """Weights dominate this config (wide, few tokens), as they do for GPT-3: LoRA's peak is
    lower because frozen weights get no gradient and no Adam state."""
    cfg = GPTConfig(vocab_size=16, block_size=4, n_layer=2, n_head=2, n_embd=128)
    x = np.random.default_rng(0).integers(0, 16, (2, 4))
    full = GPT(cfg)
    m_full = acc.measure_training_memory(full, AdamW(full.parameters()), x, x)
    lm = get_lora_model(GPT(cfg), LoraConfig(r=2))
    m_lora = acc.measure_training_memory(lm, AdamW(lm.parameters()), x, x)
    trainable_full, _ = acc.count_parameters(full)
    trainable_lora, _ = acc.count_parameters(lm)
    assert m_full["gradients"] == 4 * trainable_full  # float32 gradients, trainable only
    assert m_full["optimizer_state"] == 8 * trainable_full  # Adam's two moments
    assert m_lora["gradients"] == 4 * trainable_lora
    assert m_lora["optimizer_state"] == 8 * trainable_lora
    assert m_lora["peak_step"] < m_full["peak_step"]


def test_calc_command_prints_the_table(capsys):
    assert main(["calc", "--preset", "llama2-7b", "--targets", "q_proj", "v_proj", "--r", "8"]) == 0
    out = capsys.readouterr().out
    assert "4,194,304" in out and "6,738,415,616" in out
    with pytest.raises(SystemExit, match="unknown target"):
        main(["calc", "--targets", "q_prj"])
