"""QLoRA's storage, measured: bits per parameter, NF4 vs int4 vs FP4 error, model memory.

    python -m minilora.experiments.quantization        # prints every number below

* bits per parameter, counted from the arrays a 4-bit weight really stores (codes, constants,
  double-quantized constants), with and without double quantization;
* reconstruction error ‖W − Ŵ‖_F / ‖W‖_F of each 4-bit code book, on Gaussian weights and on
  the pre-trained GPT's weights (the ones ``quantize_model`` quantizes: every Linear but lm_head);
* bytes of stored weights of a LoRA model and of the same model as QLoRA (4-bit base).

Nothing here trains except the cached base model (``pretrain.load_or_pretrain``).
"""
from __future__ import annotations

import math

from .pretrain import PretrainConfig

QUANT_TYPES = ("nf4", "fp4", "int4")


def _relative_error(matrices: list, quant_type: str, double_quant: bool, blocksize: int) -> float:
    """‖W − Ŵ‖_F / ‖W‖_F over all matrices together (each quantized on its own)."""
    from .. import backend
    from ..backend import xp
    from ..variants.quantize import dequantize_4bit, quantize_4bit

    err = norm = 0.0
    for W in matrices:
        W_hat = dequantize_4bit(*quantize_4bit(W, blocksize, double_quant, quant_type))
        err += float(xp.sum((W - W_hat) ** 2))
        norm += float(xp.sum(W ** 2))
    return math.sqrt(err / norm)


def pretrained_weights(base: PretrainConfig, cache: str | None = None) -> dict:
    """The pre-trained GPT's Linear weights that QLoRA would quantize (all but lm_head)."""
    from ..nn import Linear
    from .pretrain import load_or_pretrain

    model, _ = load_or_pretrain(base, cache)
    return {path: m.weight.data for path, m in model.named_modules()
            if isinstance(m, Linear) and not path.endswith("lm_head")}


def bits_table(shape=(1024, 1024), blocksize: int = 64) -> list[dict]:
    """Bits per parameter of a ``shape`` weight for each code book, with and without DQ."""
    from .. import backend
    from ..variants.quantize import bits_per_parameter, quantize_4bit

    W = backend.Generator(0).normal(shape)
    return [{"quant_type": q, "double_quant": dq,
             "bits_per_parameter": bits_per_parameter(*quantize_4bit(W, blocksize, dq, q))}
            for q in QUANT_TYPES for dq in (False, True)]


def error_table(named: dict[str, list], blocksize: int = 64) -> list[dict]:
    """Relative reconstruction error per weight set, code book and double quantization."""
    return [{"weights": name, "quant_type": q, "double_quant": dq,
             "relative_error": _relative_error(matrices, q, dq, blocksize)}
            for name, matrices in named.items() for q in QUANT_TYPES for dq in (False, True)]


def blocksize_table(W, blocksizes=(16, 32, 64, 128, 256, 1024)) -> list[dict]:
    """Error and bits per parameter (with double quantization) against the block size."""
    from ..variants.quantize import bits_per_parameter, quantize_4bit

    return [{"quant_type": q, "blocksize": b, "relative_error": _relative_error([W], q, True, b),
             "bits_per_parameter": bits_per_parameter(*quantize_4bit(W, b, True, q))}
            for q in QUANT_TYPES for b in blocksizes]


def memory_table(base: PretrainConfig, cache: str | None = None, r: int = 8) -> list[dict]:
    """Stored weight bytes of the pre-trained GPT with LoRA (r on q, v) and as QLoRA."""
    from ..variants.linear4bit import BitsAndBytesConfig, quantize_model, weight_bytes
    from ..lora import LoraConfig, get_lora_model
    from .pretrain import load_or_pretrain

    rows = []
    for label, quant in (("LoRA (fp32 base)", None), ("QLoRA nf4", False),
                         ("QLoRA nf4 + double quant", True)):
        model, _ = load_or_pretrain(base, cache)
        if quant is not None:
            quantize_model(model, BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                     bnb_4bit_use_double_quant=quant))
        lm = get_lora_model(model, LoraConfig(r=r, target_modules=["q_proj", "v_proj"]))
        adapters = sum(p.numel() * 4 for p in lm.parameters() if p.requires_grad)
        rows.append({"model": label, "weight_bytes": weight_bytes(lm), "adapter_bytes": adapters,
                     "parameters": lm.num_parameters()})
    return rows


def run(quick: bool = False, base: PretrainConfig | None = None, cache: str | None = None) -> dict:
    """Every number of this experiment, as plain data (``quick``: a smaller Gaussian matrix)."""
    from .. import backend

    base = base or PretrainConfig()
    shape = (256, 256) if quick else (1024, 1024)
    gaussian = [backend.Generator(1).normal(shape)]
    trained = list(pretrained_weights(base, cache).values())
    return {"blocksize": 64, "gaussian_shape": list(shape),
            "bits": bits_table(shape),
            "errors": error_table({"gaussian": gaussian, "pretrained": trained}),
            "blocksizes": blocksize_table(gaussian[0]),
            "memory": memory_table(base, cache),
            "pretrained_matrices": len(trained),
            "pretrained_parameters": sum(math.prod(W.shape) for W in trained)}


def plot(data: dict, path) -> None:
    """Left: error of each code book on Gaussian and pre-trained weights (block 64).
    Right: error against block size, the price in bits per parameter written at each point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    sets = ["gaussian", "pretrained"]
    width = 0.25
    for k, q in enumerate(QUANT_TYPES):
        values = [next(e["relative_error"] for e in data["errors"] if e["weights"] == s
                       and e["quant_type"] == q and not e["double_quant"]) for s in sets]
        bars = ax.bar([i + (k - 1) * width for i in range(len(sets))], values, width, label=q)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(range(len(sets)), ["Gaussian N(0, 1)", "pre-trained GPT Linears"])
    ax.set_ylabel("‖W − Ŵ‖_F / ‖W‖_F")
    ax.set_title(f"4-bit block-wise absmax quantization (block {data['blocksize']})")
    ax.legend(title="code book")
    for q in QUANT_TYPES:
        rows = [row for row in data["blocksizes"] if row["quant_type"] == q]
        bx.plot([row["blocksize"] for row in rows], [row["relative_error"] for row in rows],
                "o-", label=q)
    for row in (row for row in data["blocksizes"] if row["quant_type"] == "nf4"):
        bx.annotate(f"{row['bits_per_parameter']:.3f}", (row["blocksize"], row["relative_error"]),
                    textcoords="offset points", xytext=(0, -12), ha="center", fontsize=7)
    bx.set_xscale("log", base=2)
    bx.set_xlabel("block size (labels: nf4 bits/parameter, double quant)")
    bx.margins(y=0.12)  # room for the labels under the lowest points
    bx.set_ylabel("‖W − Ŵ‖_F / ‖W‖_F (Gaussian)")
    bx.set_title("smaller blocks: less error, more constants", fontsize=10)
    bx.legend(title="code book", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(data: dict) -> str:
    lines = ["bits per parameter (from the stored arrays, "
             f"{data['gaussian_shape'][0]}x{data['gaussian_shape'][1]} weight, block 64):"]
    for row in data["bits"]:
        if row["quant_type"] == "nf4":
            lines.append(f"  nf4{' + double quant' if row['double_quant'] else '':16} "
                         f"{row['bits_per_parameter']:.4f}")
    plain, double = (row["bits_per_parameter"] for row in data["bits"][:2])
    lines.append(f"  saved by double quantization: {plain - double:.4f} bits/parameter")
    lines.append("relative reconstruction error ‖W − Ŵ‖_F / ‖W‖_F:")
    lines.append(f"  {'weights':12} {'dq':>3} " + " ".join(f"{q:>7}" for q in QUANT_TYPES))
    for name in ("gaussian", "pretrained"):
        for dq in (False, True):
            errs = [next(e["relative_error"] for e in data["errors"] if e["weights"] == name
                         and e["quant_type"] == q and e["double_quant"] == dq)
                    for q in QUANT_TYPES]
            lines.append(f"  {name:12} {'yes' if dq else 'no':>3} "
                         + " ".join(f"{e:7.4f}" for e in errs))
    lines.append("stored weight bytes (pre-trained GPT, LoRA r=8 on q_proj, v_proj):")
    for row in data["memory"]:
        lines.append(f"  {row['model']:26} {row['weight_bytes']:>10,} B "
                     f"(adapters {row['adapter_bytes']:,} B)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run()))
