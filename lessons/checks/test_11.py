"""Checks for lesson 11: the fused LoRA op, against the reference (the composition of Linears).

Run: `pytest lessons/checks/test_11.py` (your answer in lessons/exercises/ex11.py).
"""
import tracemalloc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import minilora.functional as F
from grading import answers, check, check_close
from minilora import Tensor, backend, fast
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT, GPTConfig
from minilora.optim import AdamW
from minilora.train import loss_fn

ex = answers("11")
NAMES = ("h", "dx", "dW0", "db", "dA", "dB")
HINTS = {"h": "h = x W0ᵀ + b + scaling · (x Aᵀ) Bᵀ, on the last axis of x (reshape to (N, in))",
         "dx": "dx = g W0 + gu A with gu = scaling · g B, reshaped to x's shape",
         "dW0": "dW0 = gᵀ x over all N rows; return None when the weight is frozen",
         "db": "db = Σ g over the N rows (axis 0 of g reshaped to (N, out))",
         "dA": "dA = guᵀ x with gu = scaling · g B: A's gradient carries the scaling once",
         "dB": "dB = scaling · gᵀ u with u = x Aᵀ, the bottleneck you kept from the forward"}


def both(seed, dtype, lead, n_in, n_out, r, bias, base_trains, scaling=1.5):
    """h and the gradients of (x, W0, b, A, B) from the reference and from your op."""
    def run(op):
        rng = np.random.default_rng(seed)
        shapes = {"x": lead + (n_in,), "W0": (n_out, n_in), "b": (n_out,), "A": (r, n_in),
                  "B": (n_out, r)}
        t = {k: Tensor(rng.normal(size=s).astype(dtype), requires_grad=True)
             for k, s in shapes.items()}
        t["W0"].requires_grad = base_trains
        out = op(t["x"], t["W0"], t["b"] if bias else None, t["A"], t["B"], scaling)
        out.backward(rng.normal(size=out.shape).astype(dtype))
        return dict(zip(NAMES, [out.data] + [t[k].grad for k in ("x", "W0", "b", "A", "B")]))

    with fast.enabled(False):
        reference = run(F.lora_linear)
        yours = run(ex.my_lora_linear)
    return reference, yours


def check_same(reference, yours, dtype, case):
    tol = 2e-5 if dtype == "float32" else 1e-10
    for name in NAMES:
        want, got = reference[name], yours[name]
        if want is None:
            check(got is None, f"{case}: {name} should get no gradient (None), got an array",
                  HINTS[name])
            continue
        check(got is not None, f"{case}: {name} got no gradient", HINTS[name])
        check(np.asarray(got).dtype == want.dtype,
              f"{case}: {name} has dtype {np.asarray(got).dtype}, expected {want.dtype}",
              "compute in the inputs' dtype: no float64 constants that upcast a float32 array")
        check_close(got, want, f"{case}: {name}", HINTS[name], atol=tol, rtol=tol)


def test_exercise_1_forward_and_gradients():
    reference, yours = both(0, "float64", (3, 5), 6, 4, 2, bias=True, base_trains=False)
    check_same(reference, yours, "float64", "x (3, 5, 6), W0 frozen, with bias")


def test_exercise_1_a_trainable_base_and_no_bias():
    reference, yours = both(1, "float32", (7,), 5, 3, 3, bias=False, base_trains=True)
    check_same(reference, yours, "float32", "x (7, 5), W0 trains, no bias")


@settings(max_examples=40, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(["float32", "float64"]),
       lead=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
       n_in=st.integers(1, 8), n_out=st.integers(1, 8), r=st.integers(1, 4),
       bias=st.booleans(), base_trains=st.booleans(), scaling=st.floats(0.1, 4.0))
def test_exercise_1_equals_the_reference_for_any_shape(seed, dtype, lead, n_in, n_out, r,
                                                       bias, base_trains, scaling):
    reference, yours = both(seed, dtype, lead, n_in, n_out, r, bias, base_trains, scaling)
    check_same(reference, yours, dtype, f"x {lead + (n_in,)}, W0 ({n_out}, {n_in}), r = {r}, "
               f"bias {bias}, W0 trains {base_trains}, scaling {scaling:.3g}, {dtype}")


def kept_after_forward(op):
    """Bytes still allocated once the op's forward has returned (its output and what the
    backward keeps), for a tall x: (N, out) arrays dominate."""
    rng = np.random.default_rng(2)
    N, n_in, n_out, r = 2048, 32, 32, 2
    x, W0, b = (Tensor(rng.normal(size=s), requires_grad=True)
                for s in ((N, n_in), (n_out, n_in), (n_out,)))
    A, B = (Tensor(rng.normal(size=s), requires_grad=True) for s in ((r, n_in), (n_out, r)))
    W0.requires_grad = False
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = op(x, W0, b, A, B, 2.0)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return kept, out.data.nbytes


def test_exercise_1_keeps_only_the_bottleneck():
    with fast.enabled(False):
        composed, _ = kept_after_forward(F.lora_linear)
        yours, h_bytes = kept_after_forward(ex.my_lora_linear)
    check(yours < 1.5 * h_bytes,
          f"your op keeps {yours / h_bytes:.2f}x the output's bytes after its forward (the "
          f"composition keeps {composed / h_bytes:.2f}x); a fused op keeps h and the thin u only",
          "keep u = x Aᵀ (N, r) for the backward; add the bias and the update into h in place "
          "(h += ...), and let the backward recompute nothing of size (N, out) ahead of time")


def test_exercise_1_runs_as_the_fast_path_kernel():
    """Registered in the switch's table, your op trains a LoRA GPT as the reference does."""
    def run():
        cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16,
                        dtype="float64")
        lm = get_lora_model(GPT(cfg, seed=0), LoraConfig(r=2, lora_alpha=4,
                                                         target_modules="all-linear",
                                                         init_lora_weights=False), seed=1)
        opt, rng, losses = AdamW(lm.parameters(), lr=1e-2), np.random.default_rng(3), []
        for _ in range(4):
            x = rng.integers(0, 11, size=(3, 8))
            loss = loss_fn(lm, x, np.roll(x, -1, axis=1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    with fast.enabled(False):
        reference = run()
        backend.kernels["lora_linear"] = ex.my_lora_linear
        try:
            yours = run()
        finally:
            backend.kernels.clear()
    check_close(yours, reference, "the losses of 4 AdamW steps with your kernel in the table",
                "LoraLinear calls F.lora_linear, which calls backend.kernels['lora_linear'] "
                "with (x, weight, bias, lora_A, lora_B, scaling)", atol=1e-10, rtol=1e-10)
