"""Inference latency: adapter layers against LoRA, merged and not (Section 3, Table 1).

The paper times one forward pass of GPT-2 medium (mean ± std over 100 trials) with and without
adapter layers: adapters run *in sequence* with the layers they follow, so they add latency,
relatively most at small batch and short sequences; LoRA merged into W (W = W0 + B A) is the
base model, so it adds none. Here the same five models are timed on one CPU thread:

* ``base``: the GPT; ``LoRA merged``: after ``merge_and_unload()`` (plain Linears again);
* ``LoRA unmerged``: {Wq, Wv} at rank r, computing W0 x + s·B (A x) on every call;
* ``AdapterH`` / ``AdapterL``: :mod:`minilora.baselines.adapter_layers`, bottleneck m = r,
  so AdapterH has about LoRA's parameter count (2·(2dm + m + d) against 2·2dr per block).

The model is wider than the experiments' (d_model 256, 4 heads of 64 as in GPT-2, 2 blocks):
at d_model 128 nearly every cell is bound by per-operation Python overhead, here the largest
cells are bound by the products, as GPT-2 medium's are on a GPU. It is not trained: latency
does not depend on the values of the weights. One thread (BLAS and the engine's own) and the
five models timed in turn within each trial, in an order that rotates, so that a slow moment
of a shared machine falls on all five alike.

Timings depend on the machine and on what else runs on it; they are never byte-identical.
What must hold anywhere is the verdict :func:`findings` computes from them.
"""
from __future__ import annotations

import platform
import time
from statistics import mean, median, quantiles, stdev

FIGURES = ("latency",)
MODELS = ("base", "LoRA merged", "LoRA unmerged", "AdapterH", "AdapterL")
FULL = {"n_embd": 256, "n_layer": 2, "n_head": 4, "batch_sizes": (1, 16, 32),
        "seq_lens": (8, 32), "trials": 100, "r": 8}
QUICK = {"n_embd": 64, "n_layer": 2, "n_head": 4, "batch_sizes": (1, 8), "seq_lens": (8,),
         "trials": 10, "r": 4}
WARMUP = 3  # untimed calls per model and shape: first calls allocate


def models(setting: dict, seed: int = 0) -> dict:
    """The five models of Table 1, from one randomly initialized GPT (same base weights)."""
    from .. import tasks
    from ..baselines.adapter_layers import add_adapter_layers
    from ..lora import LoraConfig, get_lora_model
    from ..model import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=tasks.VOCAB_SIZE, block_size=max(setting["seq_lens"]),
                    n_layer=setting["n_layer"], n_head=setting["n_head"],
                    n_embd=setting["n_embd"])
    lora = lambda: get_lora_model(GPT(cfg, seed), LoraConfig(  # noqa: E731
        r=setting["r"], lora_alpha=setting["r"], target_modules=["q_proj", "v_proj"]), seed=seed)
    built = {"base": GPT(cfg, seed), "LoRA merged": lora().merge_and_unload(),
             "LoRA unmerged": lora(),
             "AdapterH": add_adapter_layers(GPT(cfg, seed), "H", setting["r"], seed),
             "AdapterL": add_adapter_layers(GPT(cfg, seed), "L", setting["r"], seed)}
    return {name: model.eval() for name, model in built.items()}


def _environment() -> dict:
    from threadpoolctl import threadpool_info

    return {"machine": platform.machine(), "processor": platform.processor() or None,
            "python": platform.python_version(),
            "blas": [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"
                     for i in threadpool_info() if i.get("user_api") == "blas"]}


def run(quick: bool = False) -> dict:
    """Time every model at every (batch, sequence length); returns the data (ms)."""
    import numpy as np  # host-side: token ids
    from threadpoolctl import threadpool_limits

    from ..fast import threads as fast_threads
    from ..tensor import no_grad

    setting = QUICK if quick else FULL
    built = models(setting)
    n_threads = fast_threads.num_threads()
    fast_threads.set_num_threads(1)  # the paper times one stream of work; so do we
    samples = {}
    try:
        with threadpool_limits(1), no_grad():
            for batch in setting["batch_sizes"]:
                for seq in setting["seq_lens"]:
                    idx = np.random.default_rng(0).integers(0, 64, (batch, seq))  # (B, T)
                    for model in built.values():
                        for _ in range(WARMUP):
                            model(idx)
                    times = {name: [] for name in built}
                    for trial in range(setting["trials"]):
                        order = MODELS[trial % len(MODELS):] + MODELS[:trial % len(MODELS)]
                        for name in order:
                            start = time.perf_counter()
                            built[name](idx)
                            times[name].append(1e3 * (time.perf_counter() - start))
                    samples[(batch, seq)] = times
    finally:
        fast_threads.set_num_threads(n_threads)
    rows = []
    for (batch, seq), times in samples.items():
        for name in MODELS:
            t = times[name]
            ratio = [a / b for a, b in zip(t, times["base"])]  # paired: same trial, same moment
            q1, _, q3 = quantiles(ratio, n=4)
            rows.append({"model": name, "batch": batch, "seq": seq,
                         "mean_ms": round(mean(t), 4), "std_ms": round(stdev(t), 4),
                         "median_ms": round(median(t), 4), "min_ms": round(min(t), 4),
                         "overhead_pct": round(100 * (median(ratio) - 1), 2),
                         "min_overhead_pct": round(100 * (min(t) / min(times["base"]) - 1), 2),
                         "overhead_ci_pct": round(100 * 1.57 * (q3 - q1) / len(t) ** 0.5, 2)})
    params = {name: model.num_parameters() for name, model in built.items()}
    return {"setup": "quick" if quick else "full", **{k: list(v) if isinstance(v, tuple) else v
                                                       for k, v in setting.items()},
            "bottleneck": setting["r"], "lora_targets": ["q_proj", "v_proj"], "threads": 1,
            "parameters": params, "environment": _environment(), "rows": rows}


def summary(data: dict) -> list[dict]:
    """Table 1's layout: one row per model, a column per (batch, sequence length)."""
    cells = [(b, t) for b in sorted(data["batch_sizes"], reverse=True)
             for t in sorted(data["seq_lens"], reverse=True)]
    table = []
    for name in MODELS:
        row = {"model": name}
        for b, t in cells:
            x = _row(data, name, b, t)
            row[f"batch {b}, seq {t}"] = f"{x['mean_ms']:.2f} ± {x['std_ms']:.2f}" + (
                f" ({x['overhead_pct']:+.1f}%)" if name != "base" else "")
        table.append(row)
    return table


def _row(data: dict, name: str, batch: int, seq: int) -> dict:
    return next(x for x in data["rows"]
                if x["model"] == name and x["batch"] == batch and x["seq"] == seq)


def verdicts(data: dict) -> dict:
    """The paper's finding, checked cell by cell (True/False per claim) on the overheads: the
    median over trials of (model's time / base's time in the same trial) − 1. On a shared
    machine a trial the scheduler interrupts is several times slower, and a few such trials
    move a mean (and its std) further than an adapter does; a ratio within one trial cancels
    what lasts longer than the trial. The data also keep each model's fastest trial against
    the base's fastest (``min_overhead_pct``)."""
    small, large = min(data["batch_sizes"]), max(data["batch_sizes"])
    cells = [(b, t) for b in data["batch_sizes"] for t in data["seq_lens"]]
    adapters = ("AdapterH", "AdapterL")
    return {
        "adapters add latency in every cell": all(
            _row(data, a, b, t)["overhead_pct"] > 0 for a in adapters for b, t in cells),
        f"adapters' relative overhead is larger at batch {small} than at batch {large}": all(
            _row(data, a, small, t)["overhead_pct"] > _row(data, a, large, t)["overhead_pct"]
            for a in adapters for t in data["seq_lens"]),
        "AdapterH adds more than AdapterL in every cell": all(
            _row(data, "AdapterH", b, t)["overhead_pct"] > _row(data, "AdapterL", b, t)[
                "overhead_pct"] for b, t in cells),
        # One-sided, as the paper's claim: merged LoRA *is* the base model, so a cell where it
        # ran faster is noise, not a finding against it.
        "merged LoRA adds no latency beyond noise in every cell (at most +2%, or the 95% "
        "interval of its median ratio)": all(
            _row(data, "LoRA merged", b, t)["overhead_pct"]
            <= max(2.0, _row(data, "LoRA merged", b, t)["overhead_ci_pct"]) for b, t in cells),
        "merged LoRA has exactly the base's parameters": data["parameters"]["LoRA merged"]
        == data["parameters"]["base"],
    }


def findings(data: dict) -> str:
    """Table 1 as markdown (ms, mean ± std over the trials as the paper; in brackets the
    overhead, the median of the per-trial ratios to the base) and the verdicts, computed from
    ``data``."""
    table = summary(data)
    head = list(table[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(row[c]) for c in head) + " |" for row in table]
    lines.append("")
    lines.append(f"d_model {data['n_embd']}, {data['n_layer']} blocks, one thread; LoRA r = "
                 f"{data['r']} on Wq, Wv; adapter bottleneck {data['bottleneck']}; "
                 f"{data['trials']} trials per cell; {', '.join(data['environment']['blas'])}.")
    lines.append("")
    lines += [f"- {claim}: **{'yes' if held else 'no'}**"
              for claim, held in verdicts(data).items()]
    return "\n".join(lines) + "\n"


def plot(data: dict, path) -> None:
    from .common import new_figure, save_figure

    seqs = sorted(data["seq_lens"])
    fig, axes = new_figure(1, len(seqs), figsize=(4.2 * len(seqs), 3.4), squeeze=False,
                           sharey=True)
    styles = {"LoRA merged": ("k", "o", "-"), "LoRA unmerged": ("tab:green", "^", "--"),
              "AdapterH": ("tab:red", "s", "-"), "AdapterL": ("tab:orange", "D", "-")}
    batches = sorted(data["batch_sizes"])
    for ax, seq in zip(axes[0], seqs):
        for name, (color, marker, line) in styles.items():
            rows = [_row(data, name, b, seq) for b in batches]
            err = [x["overhead_ci_pct"] for x in rows]
            ax.errorbar(batches, [x["overhead_pct"] for x in rows], yerr=err, color=color,
                        marker=marker, linestyle=line, capsize=3, label=name)
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_title(f"sequence length {seq}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("latency over the base (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9,
               bbox_to_anchor=(0.5, 1.08), frameon=False)
    fig.tight_layout()
    save_figure(fig, path)
