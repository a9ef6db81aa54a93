"""Checks for lesson 04: the tall case, AᵀA at the start, the rank an update needs.

Run: `pytest lessons/checks/test_04.py` (your answers in lessons/exercises/ex04.py).
"""
import numpy as np

from grading import answers, check, check_close
from minilora import Tensor
from minilora.lora import LoraLinear
from minilora.nn import Linear
from minilora.optim import SGD

ex = answers("04")


def test_exercise_1_tall_case_is_full_fine_tuning():
    d, k, alpha, eta = 8, 4, 8.0, 0.1
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((16, k)), dtype="float64")  # (N, k)
    Y = rng.standard_normal((16, d))  # (N, d)
    full = Linear(k, d, dtype="float64")
    base = Linear(k, d, dtype="float64")
    base.load_state_dict(full.state_dict())
    base.requires_grad_(False)
    layer = LoraLinear(base, r=k, lora_alpha=alpha)
    ex.tall_identity(layer)
    s = alpha / k
    check_close(layer(x), full(x), "the LoRA layer's output before training",
                "ΔW = s B A must start at zero: which factor is zero?", atol=1e-12)
    trainable = [p for p in layer.parameters() if p.requires_grad]
    check(len(trainable) == 1 and trainable[0] is layer.lora_B["default"].weight,
          f"expected only B to train, got {len(trainable)} trainable matrices",
          "d > k: ΔW = s B A with A = I (k, k) covers every (d, k) update through B alone")
    full.bias.requires_grad = False
    opt_full, opt_lora = SGD([full.weight], lr=eta * s * s), SGD(layer.parameters(), lr=eta)
    for _ in range(3):
        for model, opt in ((full, opt_full), (layer, opt_lora)):
            loss = ((model(x) - Y) ** 2.0).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    check_close(base.weight.numpy() + layer.delta_weight(), full.weight, "W0 + ΔW after 3 steps",
                "with A = I frozen, dL/dB = s G and ΔW moves by -eta s^2 G: full fine-tuning's "
                "step at eta s^2", atol=1e-10)


def test_exercise_2_AtA_diagonal():
    for r, k in ((64, 64), (8, 512)):
        layer = LoraLinear(Linear(k, 4), r=r)
        A = layer.lora_A["default"].weight.numpy().astype(float)  # (r, k)
        measured = np.diag(A.T @ A).mean()
        predicted = ex.AtA_diagonal(r, k)
        check(abs(predicted - measured) < 0.1 * measured,
              f"r = {r}, k = {k}: expected about {measured:.4g} (measured), got {predicted}",
              "(AᵀA)_jj sums r squared entries; a uniform draw on [-b, b] has variance b²/3")


def test_exercise_3_rank_needed():
    rng = np.random.default_rng(1)
    U, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    Vt, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    cases = {"sigma_i = 0.8^i": (0.8 ** np.arange(1, 65), 11), "all equal": (np.ones(64), 64),
             "rank 3": (np.r_[np.ones(3), np.zeros(61)], 3)}
    for name, (sigma, expected) in cases.items():
        got = ex.rank_needed(U @ np.diag(sigma) @ Vt, 0.1)
        check(got == expected, f"{name}: expected r = {expected}, got {got}",
              "the best rank-r error is sqrt(sum of the squared singular values after the r-th)"
              ", relative to the Frobenius norm; find the first r where it drops below 10%")
