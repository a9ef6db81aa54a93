"""Checks for lesson 05: LLaMA-2 7B's all-linear count, a 4-bit base's memory, the crossover.

Run: `pytest lessons/checks/test_05.py` (your answers in lessons/exercises/ex05.py).
"""
from grading import answers, check
from minilora import accounting, fast
from minilora.model import GPTConfig

ex = answers("05")


def test_exercise_1_all_linear_count():
    llama = accounting.PRESETS["llama2-7b"]
    for r in (1, 16):
        expected = accounting.lora_parameters(llama, "all-linear", r)
        got = ex.all_linear_lora_parameters(4096, 11_008, 32, r)
        check(got == expected, f"LLaMA-2 7B, all-linear, r = {r}: expected {expected:,}, "
              f"got {got:,}", "seven matrices per block, r(d_in + d_out) each, times 32 blocks")


def test_exercise_2_qlora_bytes():
    gpt3 = accounting.PRESETS["gpt3-175b"]
    total = gpt3.total_parameters()
    trainable = accounting.lora_parameters(gpt3, ["q_proj", "v_proj"], 4)
    expected = 0.5 * total + 12 * trainable
    got = ex.qlora_training_bytes(total, trainable)
    check(abs(got - expected) <= 1, f"expected {expected:,.0f} bytes, got {got:,.0f}",
          "the frozen base: 0.5 bytes per parameter, no gradient, no Adam state; the adapter: "
          "2 (weight) + 2 (gradient) + 8 (two fp32 moments) bytes per parameter")


def test_exercise_3_crossover():
    config = GPTConfig(n_embd=64, n_layer=2, block_size=32)
    with fast.enabled():  # as lesson 05 measures: the fused LoRA op keeps one (N, r) array
        ratios = [ex.lora_to_full_ratio(config, batch) for batch in (1, 8, 64)]
    check(0 < ratios[0] < 0.5, f"expected LoRA under half of full fine-tuning at 16 tokens per "
          f"step, got a ratio of {ratios[0]:.3f}", "count parameters, gradients, optimizer state "
          "and activations, LoRA's total over full fine-tuning's")
    check(ratios[0] < ratios[1] < ratios[2] < 1, f"expected the ratio to grow with the tokens "
          f"per step and stay under 1, got {[round(x, 3) for x in ratios]}",
          "the weights' share is fixed, the activations grow with the batch")
