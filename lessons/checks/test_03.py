"""Checks for lesson 03: your `MyLoraLinear` against `LoraLinear` and the formula, and exercises 1-3.

Run: `pytest lessons/checks/test_03.py` (your answers in lessons/exercises/ex03.py).
"""
import numpy as np
import pytest

from grading import answers, check, check_close
from minilora import Tensor
from minilora.lora import LoraLinear, lora_scaling
from minilora.nn import Linear

ex = answers("03")
d, k, r, alpha = 6, 10, 2, 4


def frozen_base(seed=0):
    base = Linear(k, d)
    base.requires_grad_(False)
    return base


def inputs(seed=1):
    return Tensor(np.random.default_rng(seed).standard_normal((5, k)), dtype="float32")  # (N, k)


def trained(layer, seed=2):
    """Give B nonzero values, as training would."""
    layer.B.data = np.random.default_rng(seed).standard_normal((d, r)).astype(np.float32)
    return layer


def reference(mine):
    """A LoraLinear holding the same W0, A and B as `mine`."""
    ref = LoraLinear(mine.base_layer, r=r, lora_alpha=alpha)
    ref.lora_A["default"].weight.data = mine.A.numpy().copy()
    ref.lora_B["default"].weight.data = mine.B.numpy().copy()
    return ref


def test_scaling_and_shapes():
    mine = ex.MyLoraLinear(frozen_base(), r=r, lora_alpha=alpha)
    check(mine.scaling == pytest.approx(lora_scaling(r, alpha)),
          f"scaling: expected alpha / r = {alpha / r}, got {mine.scaling}",
          "the paper's scaling is lora_alpha / r (rsLoRA's alpha / sqrt(r) is not asked here)")
    check(tuple(mine.A.shape) == (r, k) and tuple(mine.B.shape) == (d, r),
          f"shapes: expected A {(r, k)} and B {(d, r)}, got A {tuple(mine.A.shape)} and "
          f"B {tuple(mine.B.shape)}", "A maps the k inputs to r, B maps r to the d outputs")
    check(mine.A.requires_grad and mine.B.requires_grad,
          "A and B must require gradients (they are what trains)", "make them Parameters")


def test_starts_as_the_base_layer():
    base = frozen_base()
    x = inputs()
    mine = ex.MyLoraLinear(base, r=r, lora_alpha=alpha)
    check(not np.any(mine.B.numpy()), "B must start at zero",
          "B = 0 makes ΔW = s·B A = 0: the adapted model starts exactly at W0")
    check(np.any(mine.A.numpy()) and np.abs(mine.A.numpy()).max() <= 1 / np.sqrt(k),
          f"A must be random in [-1/sqrt(k), 1/sqrt(k)] = ±{1 / np.sqrt(k):.3f}",
          "if A were zero too, neither A nor B would ever get a gradient")
    check_close(mine(x), base(x), "layer(x) at the start", "with B = 0, h = W0 x + b exactly")


def test_forward_is_the_formula_and_lora_linear():
    mine = trained(ex.MyLoraLinear(frozen_base(), r=r, lora_alpha=alpha))
    x = inputs()
    W0, b = mine.base_layer.weight.numpy(), mine.base_layer.bias.numpy()
    formula = x.numpy() @ W0.T + b + (alpha / r) * (x.numpy() @ mine.A.numpy().T) @ mine.B.numpy().T
    check_close(mine(x), formula, "h = W0 x + b + s B A x", "compute (x Aᵀ) Bᵀ, times s = "
                "alpha / r, plus base_layer(x); the weight layout is (out, in), so x @ W.T",
                atol=1e-5)
    check_close(mine(x), reference(mine)(x), "your layer vs LoraLinear with the same A and B",
                "the same formula; compare your scaling and the order of the products", atol=1e-5)
    check_close(mine.delta_weight(), (alpha / r) * mine.B.numpy() @ mine.A.numpy(),
                "delta_weight()", "ΔW = s · B A, a (d, k) array", atol=1e-6)


def test_gradients_match_lora_linear():
    mine = trained(ex.MyLoraLinear(frozen_base(), r=r, lora_alpha=alpha))
    ref = reference(mine)
    x = inputs()
    U = np.random.default_rng(3).standard_normal((5, d)).astype(np.float32)  # (N, d): dL/dh
    mine(x).backward(U)
    ref(x).backward(U)
    hint = "dL/dB = s G Aᵀ and dL/dA = s Bᵀ G: build h from Tensor operations on A and B"
    check_close(mine.B.grad, ref.lora_B["default"].weight.grad, "dL/dB", hint, atol=1e-5)
    check_close(mine.A.grad, ref.lora_A["default"].weight.grad, "dL/dA", hint, atol=1e-5)
    check(mine.base_layer.weight.grad is None, "W0 got a gradient",
          "the base layer is frozen: do not make its weight require grad")


def test_merge_and_unmerge():
    mine = trained(ex.MyLoraLinear(frozen_base(), r=r, lora_alpha=alpha))
    x = inputs()
    W0 = mine.base_layer.weight.numpy().copy()
    unmerged = mine(x).numpy()
    mine.merge()
    check(mine.merged, "after merge(), merged must be True", "set self.merged in merge()")
    check_close(mine.base_layer.weight, W0 + mine.delta_weight(), "the merged weight",
                "merge() stores W0 + s B A in base_layer.weight.data", atol=1e-6)
    check_close(mine(x), unmerged, "the merged layer's output",
                "once merged, forward must not add s B A x a second time", atol=1e-5)
    with pytest.raises(ValueError):
        mine.merge()  # merging twice would add ΔW twice
    mine.unmerge()
    check_close(mine.base_layer.weight, W0, "W after unmerge()", "unmerge() subtracts s B A",
                atol=1e-6)
    check_close(mine(x), unmerged, "the unmerged layer's output again",
                "after unmerge(), forward adds s B A x again", atol=1e-5)
    with pytest.raises(ValueError):
        mine.unmerge()


@pytest.mark.parametrize("init", [True, "gaussian", "pissa"])
def test_exercise_1_first_step(init):
    start_gap, grad_A = ex.first_step(init)
    check(start_gap < 1e-5, f"init {init!r}: expected layer(x) == base(x) to round-off, got a gap "
          f"of {start_gap:.3g}", "compute base(x) before wrapping: PiSSA rewrites the base weight")
    if init == "pissa":
        check(grad_A > 0, "init 'pissa': expected dL/dA != 0 at step 1, got 0",
              "PiSSA's B is W0's top singular directions, not zero, so s Bᵀ G is not zero")
    else:
        check(grad_A == 0, f"init {init!r}: expected dL/dA = 0 at step 1, got {grad_A:.3g}",
              "dL/dA = s Bᵀ G and B starts at zero")


def test_exercise_2_rslora_keeps_large_ranks_learning():
    plain = {rank: ex.fit_target(rank, use_rslora=False) for rank in (2, 64)}
    rs = {rank: ex.fit_target(rank, use_rslora=True) for rank in (2, 64)}
    check(plain[64][0] < 0.1 * plain[2][0],
          f"alpha/r: expected |ΔW| at r = 64 under a tenth of r = 2's, got {plain[64][0]:.3g} "
          f"vs {plain[2][0]:.3g}", "train with SGD(lr=0.5) for 50 steps, from W0 = 0")
    check(rs[64][0] > 0.5 * rs[2][0],
          f"alpha/sqrt(r): expected |ΔW| at r = 64 above half of r = 2's, got {rs[64][0]:.3g} "
          f"vs {rs[2][0]:.3g}", "pass use_rslora to LoraLinear")
    check(rs[64][1] < plain[64][1],
          f"expected a lower loss with rsLoRA at r = 64, got {rs[64][1]:.3g} vs {plain[64][1]:.3g}",
          "the first SGD change of ΔW scales as s²·r")


def test_exercise_3_cat_factors():
    rng = np.random.default_rng(4)
    A1, B1, A2, B2 = (rng.standard_normal(shape) for shape in ((3, k), (d, 3), (2, k), (d, 2)))
    A, B = ex.cat_factors(A1, B1, 0.5, A2, B2, 2.0)
    check(np.shape(A) == (5, k) and np.shape(B) == (d, 5),
          f"expected A (5, {k}) and B ({d}, 5), got {np.shape(A)} and {np.shape(B)}",
          "stack A1, A2 as rows and B1, B2 as columns: rank r1 + r2")
    check_close(np.asarray(B) @ np.asarray(A), 0.5 * B1 @ A1 + 2.0 * B2 @ A2, "B A",
                "put each adapter's scaling into its rows of A", atol=1e-9)
