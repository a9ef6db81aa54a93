# %% [markdown]
# # Lesson 09: after LoRA: QLoRA, rsLoRA, DoRA, PiSSA, LoRA+
#
# LoRA left the frozen weights as they were and fixed the adapter's recipe (A random, B zero,
# scaling $\alpha/r$, one learning rate). Its successors change exactly those choices.
# **QLoRA** (Dettmers et al. 2023) stores the frozen base in 4 bits, with a code book built for
# normally distributed weights (NF4) and quantized quantization constants, and trains LoRA on
# top. **rsLoRA** scales by $\alpha/\sqrt{r}$. **DoRA** splits each weight row into a magnitude
# and a direction and trains the magnitude on its own. **PiSSA** starts A and B at the top
# singular directions of $W_0$. **LoRA+** gives B a larger learning rate than A. This lesson
# builds NF4 from scratch, counts QLoRA's bits, and runs each variant against plain LoRA on the
# same task, batches and step budget.
#
# **What you'll learn**
# - NF4: 16 values at quantiles of $\mathcal N(0, 1)$, block-wise absmax scaling, and why every
#   code is used about equally often on Gaussian weights;
# - bits per parameter: $4 + 32/64 = 4.5$, and $\approx 4.127$ with double quantization;
# - QLoRA in minilora: `BitsAndBytesConfig`, `quantize_model`, then `get_lora_model`;
# - rsLoRA's $\alpha/\sqrt{r}$, DoRA's `use_dora=True`, PiSSA's `init_lora_weights="pissa"`,
#   LoRA+'s `create_loraplus_optimizer`, each in one short run.
#
# **Prerequisites**: lesson 03 (the LoRA layer, initialization, $\alpha/r$ vs $\alpha/\sqrt{r}$),
# lesson 05 (bytes per parameter), lesson 06 (the experiment set-up and the "rev" task).
#
# **Time**: 45–60 minutes to read and do the exercises; how long it runs (full and
# `MINILORA_FAST=1`, wall and CPU time) is measured in `lessons/README.md`.

# %%
import json
import math
import os
import sys
from pathlib import Path
from statistics import NormalDist, mean

import matplotlib
import numpy as np
from threadpoolctl import threadpool_limits

if "ipykernel" not in sys.modules:  # run as a script: draw into files, open no window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

import minilora
from minilora import Tensor, tasks
from minilora.variants import quantize
from minilora.experiments.config import FULL, QUICK
from minilora.experiments.pretrain import load_or_pretrain
from minilora.experiments.variant_runs import baseline, run_variants
from minilora.variants.linear4bit import BitsAndBytesConfig, quantize_model, weight_bytes
from minilora.lora import LoraConfig, LoraLinear, get_lora_model
from minilora.variants.loraplus import create_loraplus_optimizer
from minilora.nn import Linear
from minilora.optim import AdamW
from minilora.train import evaluate

# One BLAS thread: these matrices are small, so extra threads gain little, and on a busy
# machine a thread waiting for a core makes each product slower (lessons/README.md's times
# were measured so). threadpoolctl sets it for this process only.
threadpool_limits(1)
FAST = os.environ.get("MINILORA_FAST", "0") != "0"  # CI runs every lesson with MINILORA_FAST=1
SETUP = QUICK if FAST else FULL  # whose cached base model the runs start from
RS_RANKS = (2, 16) if FAST else (2, 32)  # rsLoRA's comparison (section 5)
ROOT = Path(minilora.__file__).resolve().parents[1]
FIGURES = ROOT / "figures" / "lessons"
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. NF4, from scratch
#
# A 4-bit weight is an index into 16 values. Pre-trained weights are close to normally
# distributed, so QLoRA puts the 16 values at *quantiles* of $\mathcal N(0, 1)$: each then
# covers about the same share of the weights. It also wants an exact zero, which 16 values
# can only hold if one side gets one value more: 8 positive quantiles
# $\Phi^{-1}(p)$ at $p$ evenly spaced from an offset down to 0.5 (not included), 7 negative
# ones, and 0. The offset $\tfrac12\big((1 - \tfrac1{32}) + (1 - \tfrac1{30})\big)$ stands in
# for $p = 1$, where $\Phi^{-1}$ is infinite. Finally everything is divided by the largest value,
# so the code book spans $[-1, 1]$:

# %%
ppf = NormalDist().inv_cdf  # Φ⁻¹
offset = 0.9677083  # ½((1 − 1/32) + (1 − 1/30)), to 7 digits as bitsandbytes writes it
positive = [ppf(p) for p in np.linspace(offset, 0.5, 9)[:-1]]  # 8 values
negative = [-ppf(p) for p in np.linspace(offset, 0.5, 8)[:-1]]  # 7 values
nf4 = np.sort(np.array(positive + [0.0] + negative))
nf4 /= nf4.max()
print("NF4:", np.round(nf4, 4))
print("max |by hand - quantize.create_normal_map()|:",
      np.abs(nf4 - np.array(quantize.create_normal_map())).max())

# %% [markdown]
# Weights are quantized in **blocks** of 64 consecutive values. Each block is divided by its
# largest magnitude (its *absmax*), so its values lie in $[-1, 1]$, and each value is replaced
# by the index of the nearest code. An outlier then costs precision only in its own block.
# One block, by hand, against `quantize.quantize_4bit`:

# %%
W = rng.standard_normal((256, 256)).astype(np.float32)  # a Gaussian "weight"
block = W.reshape(-1)[:64]  # (64,) the first block
absmax = np.abs(block).max()
idx = np.abs(block[:, None] / absmax - nf4[None, :]).argmin(axis=1)  # (64, 16) -> (64,)
packed, state = quantize.quantize_4bit(W, blocksize=64, compress_statistics=False,
                                       quant_type="nf4")
lib_idx = np.asarray(quantize.unpack_4bit(packed))[:64]  # two 4-bit indices per byte
W_hat = np.asarray(quantize.dequantize_4bit(packed, state))  # code[index] * absmax
print(f"absmax {absmax:.4f} (library {float(state.absmax[0]):.4f}); indices equal: "
      f"{np.array_equal(idx, lib_idx)}; dequantized equal: "
      f"{np.allclose(nf4[idx] * absmax, W_hat.reshape(-1)[:64], atol=1e-6)}")

# %% [markdown]
# Why quantiles? Compare the three 4-bit code books minilora has: NF4, FP4 (a tiny
# floating-point format, E2M1) and int4 (15 evenly spaced values). On Gaussian weights, count
# how often each code is used (its entropy: 4 bits if all 16 are used equally) and the
# relative error $\lVert W - \hat W\rVert_F / \lVert W\rVert_F$:

# %%
entropy, error = {}, {}
for q in quantize.QUANT_TYPES:
    packed_q, state_q = quantize.quantize_4bit(W, 64, False, q)
    counts = np.bincount(np.asarray(quantize.unpack_4bit(packed_q)), minlength=16)
    p = counts[counts > 0] / counts.sum()
    entropy[q] = -np.sum(p * np.log2(p))
    W_q = np.asarray(quantize.dequantize_4bit(packed_q, state_q))
    error[q] = np.linalg.norm(W - W_q) / np.linalg.norm(W)
    print(f"{q:5} {len(quantize.CODE_BOOKS[q]()):2d} values, codes used: entropy "
          f"{entropy[q]:.3f} bits, relative error {error[q]:.4f}")

# %% [markdown]
# NF4 uses its 16 values most evenly and has the lowest error: the evenly spaced int4 wastes
# its outer values on the rare large weights, FP4 crowds its values near zero.
#
# ## 2. Bits per parameter, and double quantization
#
# The 4-bit indices are not all: each block of 64 also stores its absmax, an fp32 number,
# $32/64 = 0.5$ bits per parameter. QLoRA's **double quantization** quantizes those constants
# too: 8 bits each (after subtracting their mean), in blocks of 256 with one fp32 constant per
# block: $8/64 + 32/(64 \cdot 256)$ bits per parameter. Counted from the arrays really stored:

# %%
by_hand = {"no": 4 + 32 / 64, "yes": 4 + 8 / 64 + 32 / (64 * 256)}
measured = {dq: quantize.bits_per_parameter(*quantize.quantize_4bit(W, 64, dq == "yes", "nf4"))
            for dq in ("no", "yes")}
for dq in ("no", "yes"):
    print(f"double quantization {dq:3}: by hand {by_hand[dq]:.4f} bits, "
          f"stored arrays {measured[dq]:.4f} bits")
print(f"saved: {measured['no'] - measured['yes']:.4f} bits per parameter (the paper: about 0.37)")
n_blocks = W.size // 64
print(f"a {W.shape[0]}x{W.shape[1]} weight: {n_blocks:,} blocks of 64, "
      f"{math.ceil(n_blocks / 256)} second-level blocks of 256, and one fp32 mean")
params_65b = 65e9  # QLoRA fine-tunes a 65B model on one 48 GB GPU
for label, bits in (("16-bit", 16), ("NF4", measured["no"]),
                    ("NF4 + double quant", measured["yes"])):
    print(f"a 65B-parameter model in {label:18}: {params_65b * bits / 8 / 1e9:6.1f} GB")

# %% [markdown]
# (The measured value is a little above the formula: besides one fp32 constant per
# second-level block, the stored state keeps one more fp32 number, the mean that was
# subtracted.) The last lines are QLoRA's point: the frozen weights of a 65B model fit on one
# 48 GB GPU in 4 bits, with room left for the adapters, their Adam state and the activations.
#
# ## 3. QLoRA on our model
#
# `quantize_model(model, BitsAndBytesConfig(...))` replaces every Linear but `lm_head` by a
# `Linear4bit` whose weight holds packed codes and block constants; reading `.weight.data`
# dequantizes. (transformers does this inside `from_pretrained(..., quantization_config=...)`.)
# LoRA then wraps those layers as it wraps any Linear.

# %%
bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                         bnb_4bit_use_double_quant=True)
fp32_model, _ = load_or_pretrain(SETUP.base)
q_model = quantize_model(load_or_pretrain(SETUP.base)[0], bnb)
print(q_model.layers[0].attn.q_proj)
bytes_fp32, bytes_q = weight_bytes(fp32_model), weight_bytes(q_model)
print(f"stored weights: fp32 {bytes_fp32:,} bytes, NF4 + double quant {bytes_q:,} bytes "
      f"({bytes_q / bytes_fp32:.2f}x; embeddings, biases, LayerNorms and lm_head stay fp32)")
copyrev = tasks.eval_set("copyrev", 512)
before = {name: evaluate(m, copyrev) for name, m in (("fp32", fp32_model), ("nf4", q_model))}
print("pre-training task (copyrev) before any fine-tuning: " + ", ".join(
    f"{name} accuracy {r['accuracy']:.4f} loss {r['loss']:.4f}" for name, r in before.items()))

# %% [markdown]
# Rounding every weight to 16 levels costs the pre-trained model a little loss, and
# (here) little or no accuracy. Now LoRA on top, the same adapter trained on the fp32 base and
# on the 4-bit one. `variant_runs.run_variants(specs)` does short runs of the variants that
# `VariantSpec`s describe, the same runs `minilora figures` makes for `figures/qlora.png`. They
# all start from `variant_runs.baseline`, a short run on "rev", changed one field at a time:

# %%
shared = {}  # VariantSpec -> result: a spec asked for twice runs once


def run(**changes):
    """The figures' baseline run (lesson text above), changed as asked."""
    return run_variants([baseline(FAST, **changes)], base=SETUP.base, results=shared)[0]


spec = baseline(FAST)
print(f"baseline: task {spec.task!r}, r = {spec.r} on {spec.targets}, "
      f"lora_alpha {spec.lora_alpha:g}, "
      f"lr {spec.lr:g}, {spec.steps} steps of batch {spec.batch_size}")
qlora_runs = {base: run(quant_type=q) for base, q in (("fp32", None), ("nf4", "nf4"))}
for base, res in qlora_runs.items():
    print(f"LoRA on the {base} base, {spec.steps} steps: accuracy {res['base_accuracy']:.4f} "
          f"-> {res['accuracy']:.4f}, stored weights {res['weight_bytes']:,} bytes")

# %% [markdown]
# The adapters are trained in full precision; only the frozen base is rounded. The gradient
# flows through the dequantized $W_0$ to the adapters, and QLoRA learns about what LoRA learns
# (within a point or two here, either way; the committed figure averages two seeds), on a base
# stored in about a fifth of the bytes.
#
# ## 4. DoRA, PiSSA and LoRA+, in one layer each
#
# **DoRA** writes each output row of the adapted weight as a magnitude times a direction,
# $W' = m \odot (W_0 + sBA) / \lVert W_0 + sBA\rVert_{row}$, and trains $m$ (one number per
# row) besides A and B. $m$ starts at $\lVert W_0\rVert_{row}$, so the layer starts unchanged.
# **PiSSA** puts $W_0$'s best rank-$r$ part into $sBA$ and leaves the residual in the frozen
# base: training starts on the directions that matter most in $W_0$.

# %%
base = Linear(32, 16)
base.requires_grad_(False)
x = Tensor(rng.standard_normal((5, 32)), dtype="float32")
W0 = base.weight.numpy().copy()
dora = LoraLinear(base, r=4, lora_alpha=8, use_dora=True)
m = dora.lora_magnitude_vector["default"].weight.numpy()
print(f"DoRA: m (16,) equals the row norms of W0: {np.allclose(m, np.linalg.norm(W0, axis=1))}; "
      f"starts unchanged: {np.allclose(dora(x).numpy(), base(x).numpy(), atol=1e-6)}; "
      f"trainable per layer {sum(p.numel() for p in dora.parameters() if p.requires_grad)} "
      f"= r(in + out) + out = {4 * (32 + 16) + 16}")

pissa_base = Linear(32, 16)
W0_pissa = pissa_base.weight.numpy().copy()
pissa = LoraLinear(pissa_base, r=4, lora_alpha=8, init_lora_weights="pissa")
residual = pissa_base.weight.numpy()  # PiSSA rewrote the base layer's weight
sv = np.linalg.svd(W0_pissa, compute_uv=False)
print(f"PiSSA: residual + s B A == W0: "
      f"{np.allclose(residual + pissa.delta_weight(), W0_pissa, atol=1e-5)}; "
      f"|residual|_F = {np.linalg.norm(residual):.3f} = tail of W0's singular values "
      f"{np.sqrt(np.sum(sv[4:] ** 2)):.3f}")

# %% [markdown]
# **LoRA+** keeps LoRA's layer and changes the optimizer: two parameter groups, the B matrices
# at a learning rate `loraplus_lr_ratio` times A's (16 is the paper's suggestion). At the start
# $B = 0$ and A is random; the paper's analysis says that for wide layers updates of equal size
# cannot be efficient for both.

# %%
lm = get_lora_model(load_or_pretrain(SETUP.base)[0], LoraConfig(r=4, lora_alpha=8))
optimizer = create_loraplus_optimizer(lm, AdamW, lr=2e-3, loraplus_lr_ratio=16, weight_decay=0.0)
for group in optimizer.param_groups:
    print(f"LoRA+ group {group['name']!r}: {len(group['params'])} matrices at lr {group['lr']:g}")

# %% [markdown]
# **For the PyTorch reader.** Each variant is one switch in PEFT, as here:
#
# | here | PEFT / transformers |
# |---|---|
# | `quantize_model(model, BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True))` | `AutoModelForCausalLM.from_pretrained(name, quantization_config=BitsAndBytesConfig(...))` (the same config names, bitsandbytes underneath) |
# | `LoraConfig(..., use_rslora=True)` | `LoraConfig(..., use_rslora=True)` |
# | `LoraConfig(..., use_dora=True)` | `LoraConfig(..., use_dora=True)` |
# | `LoraConfig(..., init_lora_weights="pissa")` | `LoraConfig(..., init_lora_weights="pissa")` |
# | LoRA+'s two learning rates (minilora's `loraplus` module) | `peft.optimizers.create_loraplus_optimizer(model, optimizer_cls, lr=..., loraplus_lr_ratio=16)` |

# %% [markdown]
# ## 5. rsLoRA in training
#
# Lesson 03 showed the arithmetic: with $s = \alpha/r$ and the factors' entries of a fixed size,
# the update's size shrinks like $1/\sqrt{r}$ as $r$ grows, so a larger rank learns *more
# slowly*; $s = \alpha/\sqrt{r}$ keeps it steady. Two ranks, both scalings, the same short
# budget:

# %%
rs_runs = {(r, rs): run(r=r, use_rslora=rs) for rs in (False, True) for r in RS_RANKS}
print(f"{'scaling':>13} {'r':>3} {'s':>6} {'loss, last 10 steps':>20} {'accuracy':>9}")
rs_loss = {}
for (r, rs), res in rs_runs.items():
    rs_loss[(r, rs)] = mean(res["train_loss"][-10:])
    s = 8 / math.sqrt(r) if rs else 8 / r
    print(f"{'alpha/sqrt(r)' if rs else 'alpha/r':>13} {r:3d} {s:6.3f} {rs_loss[(r, rs)]:20.4f} "
          f"{res['accuracy']:9.4f}")

# %% [markdown]
# With $\alpha/r$ the larger rank ends with a higher loss than the smaller one: its extra
# directions came with a smaller scaling. With $\alpha/\sqrt{r}$ the order turns around, and the
# larger rank is at least as good.
#
# ## 6. DoRA, PiSSA and LoRA+ in training
#
# The same task, rank, batches and budget for all; one learning rate (2e-3, below LoRA's best,
# so that differences in speed show), and plain LoRA at 5× that rate as the fair check: LoRA+
# and PiSSA's large initial factors act partly as a larger learning rate.

# %%
variants = {"LoRA": {}, "DoRA": {"use_dora": True}, "PiSSA": {"init_lora_weights": "pissa"},
            "LoRA+ (ratio 16)": {"loraplus_lr_ratio": 16.0}, "LoRA, lr x 5": {"lr": 1e-2}}
variant_runs = {name: run(**extra) for name, extra in variants.items()}
print(f"{'variant':17} {'loss, steps 1-5':>15} {'last 5':>8} {'accuracy':>9} {'trainable':>10}")
for name, res in variant_runs.items():
    loss = res["train_loss"]
    print(f"{name:17} {mean(loss[:5]):15.4f} {mean(loss[-5:]):8.4f} {res['accuracy']:9.4f} "
          f"{res['trainable']:10,}")

# %% [markdown]
# DoRA adds one trainable number per output row of each adapted matrix; PiSSA changes only
# where A and B start (and what the frozen base holds); LoRA+ changes only the optimizer.
# At this budget DoRA behaves like LoRA. PiSSA and LoRA+ learn much faster than LoRA at the
# same learning rate, but so does plain LoRA at five times the rate: on this task their gain
# is, for the most part, a larger effective step. That is the comparison to make before
# crediting a variant (the committed figure below, two seeds, shows the same).
#
# ## 7. The committed figures
#
# `minilora figures` writes `figures/quantization.json`, `qlora.json` / `.csv`, `rslora.json`
# and `variants.json` (with a `.png` each), from the full set-up's base model:

# %%
def committed(name):
    path = ROOT / "figures" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


quant_data, qlora_data = committed("quantization"), committed("qlora")
rslora_data, variants_data = committed("rslora"), committed("variants")
if quant_data:
    print("relative error of 4-bit code books (block 64, no double quant):")
    for weights in ("gaussian", "pretrained"):
        print(f"  {weights:11}" + "".join(
            f"  {e['quant_type']} {e['relative_error']:.4f}" for e in quant_data["errors"]
            if e["weights"] == weights and not e["double_quant"]))
if qlora_data:
    print(f"QLoRA ('{qlora_data['task']}', r = {qlora_data['r']}, {qlora_data['steps']} steps), "
          f"mean over seeds:")
    for base_name in dict.fromkeys(run["base"] for run in qlora_data["runs"]):
        rows = [run for run in qlora_data["runs"] if run["base"] == base_name]
        print(f"  {base_name:5} base accuracy {mean(x['base_accuracy'] for x in rows):.4f} -> "
              f"{mean(x['accuracy'] for x in rows):.4f}, stored {rows[0]['weight_bytes']:,} bytes")
if rslora_data:
    print(f"rsLoRA ({rslora_data['steps']} steps): loss over the last 10 steps")
    for run in rslora_data["runs"]:
        print(f"  {'alpha/sqrt(r)' if run['use_rslora'] else 'alpha/r':13} r = {run['r']:3d}: "
              f"{mean(run['train_loss'][-10:]):.4f}, accuracy {run['accuracy']:.4f}")
if variants_data:
    print(f"variants ({variants_data['steps']} steps, mean over seeds):")
    for v in variants_data["variants"]:
        curve = [mean(values) for values in zip(*v["train_loss"])]
        print(f"  {v['name']:17} loss, steps 1-10 {mean(curve[:10]):.4f}, last 10 "
              f"{mean(curve[-10:]):.4f}; accuracy {mean(v['accuracy']):.4f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
axes[0].bar(list(error), list(error.values()))
axes[0].set(ylabel="relative error", title="4-bit code books on Gaussian weights (block 64)")
for name, res in variant_runs.items():
    axes[1].plot(res["train_loss"], label=name)
axes[1].set(yscale="log", xlabel="step", ylabel="training loss", title="'rev', r = 4, q and v")
axes[1].legend(fontsize=7)
fig.tight_layout()
if not FAST:
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "09_variants.png", dpi=120)
plt.show()

# %% [markdown]
# ## Self-checks

# %%
assert np.abs(nf4 - np.array(quantize.create_normal_map())).max() < 1e-12
assert len(nf4) == 16 and nf4[0] == -1 and nf4[-1] == 1 and 0.0 in nf4
assert np.array_equal(idx, lib_idx)
assert entropy["nf4"] > max(entropy["fp4"], entropy["int4"])  # NF4 uses its codes most evenly
assert error["nf4"] < min(error["fp4"], error["int4"])
assert measured["no"] == by_hand["no"] == 4.5
assert 0 < measured["yes"] - by_hand["yes"] < 0.01  # plus the second-level constants' rounding
assert abs(measured["no"] - measured["yes"] - 0.373) < 0.005
assert bytes_q < 0.25 * bytes_fp32
assert before["nf4"]["accuracy"] > before["fp32"]["accuracy"] - 0.05  # rounding costs little
assert qlora_runs["nf4"]["weight_bytes"] < 0.3 * qlora_runs["fp32"]["weight_bytes"]
assert np.allclose(m, np.linalg.norm(W0, axis=1))  # DoRA: m = |W0|_row, and ...
assert np.allclose(dora(x).numpy(), base(x).numpy(), atol=1e-6)  # ... the layer starts unchanged
assert np.allclose(residual + pissa.delta_weight(), W0_pissa, atol=1e-5)
assert [g["lr"] for g in optimizer.param_groups] == [2e-3, 16 * 2e-3]
assert variant_runs["DoRA"]["trainable"] > variant_runs["LoRA"]["trainable"]
if not FAST:
    small, large = RS_RANKS
    assert rs_loss[(large, False)] > rs_loss[(small, False)]  # alpha/r: more rank, slower
    assert rs_loss[(large, True)] < rs_loss[(large, False)]  # alpha/sqrt(r) fixes it
    last = {name: mean(res["train_loss"][-5:]) for name, res in variant_runs.items()}
    for name in ("PiSSA", "LoRA+ (ratio 16)", "LoRA, lr x 5"):  # all far ahead of LoRA ...
        assert last[name] < 0.5 * last["LoRA"]
    assert abs(last["DoRA"] - last["LoRA"]) < 0.5 * last["LoRA"]  # ... DoRA close to it
    assert abs(qlora_runs["nf4"]["accuracy"] - qlora_runs["fp32"]["accuracy"]) < 0.05
print("all self-checks passed")

# %% [markdown]
# ## Exercises
#
# Solutions are in `lessons/solutions/09_variants.py`.
# Graded: exercises 1-2 (3 is an experiment). Write your answers in `lessons/exercises/ex09.py`
# (each function's docstring says what to compute) and run `pytest lessons/checks/test_09.py`: a
# wrong answer fails with what was expected and a hint.
#
# 1. **FP4 by hand.** E2M1 has 1 sign bit, 2 exponent bits (bias 1) and 1 mantissa bit: the
#    magnitude is $2^{e-1}(1 + m/2)$ for $e > 0$ and $m/2$ for $e = 0$. List the 16 bit
#    patterns' values, scale them to $[-1, 1]$ and compare with `quantize.create_fp4_map()`.
#    How many distinct values are there, and why not 16?
# 2. **Block size.** For the Gaussian $W$ of section 1, compute NF4's relative error and bits
#    per parameter (with double quantization) for block sizes 16, 32, 64, 128, 256 and 1024.
#    What does halving the block size cost in bits, and what does it buy?
# 3. **Merging into a 4-bit base.** On the quantized model of section 3, add a LoRA adapter
#    with `init_lora_weights=False` (so $BA \neq 0$), compute its output, merge it, and compare.
#    Why is the merged output not exactly the unmerged one, as it is on an fp32 base (lesson
#    03)? How large is the difference next to the 4-bit rounding of $W_0$ itself?
