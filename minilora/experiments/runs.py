"""One fine-tuning run, named by a key; many runs through any ``concurrent.futures.Executor``.

A :class:`RunSpec` says everything a run depends on (base model, task, method: LoRA, full
fine-tuning or one of the paper's 2021 baselines, targets, r, seed, steps, learning rate, batch
size, and the training data: the fresh stream, or a finite set of ``train_size`` sequences). Every random draw of the run
comes from the spec itself, never from the order runs happen in:

* the training batches from ``(spec.seed, step)`` (tasks.py): runs that differ only in the
  method, targets or r see the same batches, so their comparison is paired;
* LoRA's A from :meth:`RunSpec.init_seed`, a hash of the whole key: A_{r=8} and A_{r=64} of
  one seed are drawn independently (a shared stream would make A_{r=8}'s initial rows equal
  to A_{r=64}'s first rows and inflate their subspace similarity).

So a sweep gives the same numbers whatever the executor, the number of workers, or the order
of completion. :func:`run_specs` runs the distinct specs once each and returns results in the
order asked.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

from .. import fast, tasks
from .pretrain import PretrainConfig

ALL_LINEAR = ("all-linear",)
BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class RunSpec:
    base: PretrainConfig  # the pre-trained model the run starts from
    task: str  # downstream task: "rev" or "perm" (tasks.py)
    method: str  # "lora", "full" (every weight trains), "base" (no training: the reference),
    # or a baseline of the paper (METHODS below): "bitfit", "prefix-embed", "prefix-layer",
    # "adapter-h", "adapter-l"
    targets: tuple = ()  # LoRA's target_modules, e.g. ("q_proj", "v_proj"), or ALL_LINEAR
    r: int = 0  # the budget: LoRA's rank, the prefix length l_p, or the adapters' bottleneck
    seed: int = 0  # data stream (and, hashed with the rest of the key, LoRA's init)
    steps: int = 0  # optimizer steps
    lr: float = 0.0  # peak learning rate: linear warm-up, then cosine decay to 0
    warmup: int = 0  # warm-up steps
    betas: tuple = (0.9, 0.999)  # AdamW's moment decay rates (PyTorch's default)
    batch_size: int = 32  # sequences per step
    lora_alpha: float = 8.0  # scaling = lora_alpha / r
    eval_size: int = 1024  # held-out sequences for the final accuracy
    eval_seed: int = 0  # which held-out set: 0 the test set, 1 the validation set for tuning
    eval_every: int = 0  # also evaluate every this many steps (a training curve); 0: at the end
    also_eval: tuple = ()  # also score these tasks' held-out sets at the end, e.g. ("copyrev",)
    use_rslora: bool = False  # LoRA's scaling lora_alpha / √r instead of lora_alpha / r (rsLoRA)
    train_size: int = 0  # train on this many sequences (tasks.train_set); 0: the fresh stream

    def __post_init__(self):
        if not isinstance(self.also_eval, tuple) or not all(map(_is_task, self.also_eval)):
            raise ValueError(f"RunSpec: also_eval must be a tuple of task names ({tasks.TASKS} or "
                             f"kv<N>, N >= 1), got {self.also_eval!r}")
        if not isinstance(self.use_rslora, bool):
            raise ValueError(f"RunSpec: use_rslora must be True or False, got {self.use_rslora!r}")
        if isinstance(self.train_size, bool) or not isinstance(self.train_size, int) \
                or self.train_size < 0:
            raise ValueError(f"RunSpec: train_size must be an int >= 0 (0: the fresh stream), "
                             f"got {self.train_size!r}")

    def key(self) -> str:
        """A readable, stable name of the training run (``eval_every`` and ``also_eval`` left
        out: they only observe, they do not change the weights; ``use_rslora`` and
        ``train_size`` left out at their defaults, so the keys, and LoRA's init seeds, of runs
        made before they existed stay as they were)."""
        fields = asdict(replace(self, eval_every=0))
        fields.pop("also_eval")
        for name, default in (("use_rslora", False), ("train_size", 0)):
            if fields[name] == default:
                fields.pop(name)
        fields["base"] = self.base.digest()
        return json.dumps(fields, sort_keys=True)

    def init_seed(self) -> int:
        """A 32-bit seed for LoRA's init: SHA-256 of the key, so every run draws its own A."""
        return int.from_bytes(hashlib.sha256(self.key().encode()).digest()[:4], "little")

    def label(self) -> str:
        if self.method in ("full", "base", "bitfit"):
            return f"{self.task} {self.method} seed {self.seed}"
        if self.method != "lora":
            return f"{self.task} {self.method} {self.r} seed {self.seed}"
        return f"{self.task} {','.join(self.targets)} r={self.r} seed {self.seed}"


def _is_task(name) -> bool:
    try:
        return isinstance(name, str) and (name in tasks.TASKS or tasks.kv_size(name) is not None)
    except ValueError:  # a malformed kv<N>
        return False


_BASES: dict = {}  # per process: the loaded base models' state dicts, by digest


def _base_model(config: PretrainConfig, cache: str | None):
    """A fresh copy of the pre-trained GPT (loaded from the cache once per process)."""
    from ..model import GPT
    from .pretrain import load_or_pretrain

    digest = config.digest()
    if digest not in _BASES:
        _BASES[digest] = load_or_pretrain(config, cache)[0].state_dict()
    model = GPT(config.model, seed=config.seed)
    model.load_state_dict(_BASES[digest])
    return model


# -- the methods: each builds its trainable model from the base model and the spec ------------
def _lora(model, spec: RunSpec):
    from ..lora import LoraConfig, get_lora_model

    targets = "all-linear" if spec.targets == ALL_LINEAR else list(spec.targets)
    config = LoraConfig(r=spec.r, lora_alpha=spec.lora_alpha, target_modules=targets,
                        use_rslora=spec.use_rslora)
    return get_lora_model(model, config, seed=spec.init_seed())


def _bitfit(model, spec: RunSpec):
    from ..baselines.bitfit import apply_bitfit
    return apply_bitfit(model)


def _prefix(kind: str):
    def build(model, spec: RunSpec):  # l_p = r virtual tokens, drawn from the key's seed
        from ..baselines.prefix import add_prefix
        return add_prefix(model, kind, spec.r, seed=spec.init_seed())
    return build


def _adapters(kind: str):
    def build(model, spec: RunSpec):  # bottleneck m = r; W_down drawn from the key's seed
        from ..baselines.adapter_layers import add_adapter_layers
        return add_adapter_layers(model, kind, spec.r, seed=spec.init_seed())
    return build


METHODS = {
    "full": lambda model, spec: model,  # every weight trains
    "lora": _lora,
    "bitfit": _bitfit,
    "prefix-embed": _prefix("embed"),
    "prefix-layer": _prefix("layer"),
    "adapter-h": _adapters("H"),
    "adapter-l": _adapters("L"),
}


def _batches(spec: RunSpec):
    """The training batches: the fresh stream of the seed, or its finite set of train_size."""
    if spec.train_size:
        return tasks.finite_batch_fn(spec.task, spec.batch_size, spec.seed, spec.train_size)
    return tasks.batch_fn(spec.task, spec.batch_size, spec.seed)


@fast.enabled()  # the experiments' numbers are the fast path's, whoever calls
def run_one(spec: RunSpec, cache: str | None = None) -> dict:
    """Fine-tune (or just evaluate) as ``spec`` says; returns plain data (NumPy arrays inside).

    ``weights`` holds what the analyses need: for LoRA, A, B and scaling of every adapted
    layer; for full fine-tuning, the fine-tuned weight of every Linear but lm_head.
    ``also_eval`` holds :func:`held_out_scores` of each task in ``spec.also_eval``.
    """
    from ..optim import AdamW, get_cosine_schedule_with_warmup
    from ..train import evaluate, train

    if spec.method != "base" and spec.method not in METHODS:
        raise ValueError(f"RunSpec: unknown method {spec.method!r}: expected 'base' or one of "
                         f"{sorted(METHODS)}")
    start = time.perf_counter()
    model = _base_model(spec.base, cache)
    eval_batches = tasks.eval_set(spec.task, spec.eval_size, seed=spec.eval_seed)
    history, weights = None, {}
    if spec.method in METHODS:
        model = METHODS[spec.method](model, spec)
        optimizer = AdamW(model.parameters(), lr=spec.lr, betas=spec.betas, weight_decay=0.0)
        scheduler = get_cosine_schedule_with_warmup(optimizer, spec.warmup, spec.steps)
        history = train(model, optimizer, _batches(spec), spec.steps, scheduler=scheduler,
                        eval_every=spec.eval_every,
                        evaluate_fn=(lambda m: evaluate(m, eval_batches)) if spec.eval_every
                        else None)
        weights = _weights(model, spec.method)
    final = evaluate(model, eval_batches)
    trainable = model.num_parameters(only_trainable=True) if spec.method != "base" else 0
    return {"key": spec.key(), "accuracy": final["accuracy"], "loss": final["loss"],
            "trainable": trainable,
            "also_eval": {task: held_out_scores(model, task, spec.eval_size, spec.eval_seed)
                          for task in spec.also_eval},
            "train_loss": history.loss if history else [],
            "curve": history.evals if history else [],
            "weights": weights, "seconds": time.perf_counter() - start}


def _weights(model, method: str) -> dict:
    """What the analyses read: A, B and scaling of every LoRA layer; every Linear's W (but
    lm_head's) after full fine-tuning; nothing for the baselines."""
    from .. import backend
    from ..nn import Linear

    if method == "lora":
        return {path: {"A": backend.to_numpy(layer.lora_A["default"].weight.data),
                       "B": backend.to_numpy(layer.lora_B["default"].weight.data),
                       "scaling": layer.scaling["default"]} for path, layer in model.lora_layers()}
    if method == "full":
        return {path: {"W": backend.to_numpy(layer.weight.data)}
                for path, layer in model.named_modules()
                if isinstance(layer, Linear) and not path.endswith("lm_head")}
    return {}


def run_specs(specs, executor=None, cache: str | None = None, progress: bool = True,
              results: dict | None = None) -> list[dict]:
    """Results for ``specs``, in their order; each distinct run happens once.

    ``executor``: any ``concurrent.futures.Executor`` with process workers (:func:`process_pool`,
    Dask's, Ray's), or None to run here, one after another. Not threads: ``no_grad()`` is a
    process-wide switch, so an evaluation in one thread would stop another's gradients.
    ``results`` (by key) lets several experiments share runs: keys already in it are not run
    again, and new results are added to it.
    """
    from .pretrain import load_or_pretrain

    results = {} if results is None else results
    for base in {spec.base.digest(): spec.base for spec in specs}.values():
        load_or_pretrain(base, cache, progress=progress)  # here, once: workers only read it
    todo: dict[str, RunSpec] = {}
    for spec in specs:  # one run per key, observing all that its specs observe
        if spec.key() not in results:
            todo[spec.key()] = observe_both(todo[spec.key()], spec) if spec.key() in todo else spec
    execute(run_one, todo, executor, results, cache, "fine-tuning runs" if progress else None)
    return [results[spec.key()] for spec in specs]


def observe_both(a: RunSpec, b: RunSpec) -> RunSpec:
    """One spec for two of the same run (one key) that observes what either does: a curve if
    either records one (the larger ``eval_every``, as before), every ``also_eval`` task."""
    return replace(a, eval_every=max(a.eval_every, b.eval_every),
                   also_eval=tuple(dict.fromkeys(a.also_eval + b.also_eval)))


def held_out_scores(model, task: str, size: int, seed: int) -> dict:
    """Accuracy and loss on ``task``'s held-out set of ``size`` sequences, on the whole set and
    on each flag's half ("F0", "F1"): on copyrev, F0's half is the copy behaviour, F1's the
    reversal (rev asks reversal of both, so fine-tuning on rev overwrites only F0's half)."""
    from .. import backend
    from ..train import evaluate

    batches = tasks.eval_set(task, size, seed=seed)
    out = {"all": evaluate(model, batches)}
    host = [tuple(backend.to_numpy(a) for a in pair) for pair in batches]
    for name, flag in (("F0", tasks.F0), ("F1", tasks.F1)):
        rows = [inputs[:, 0] == flag for inputs, _ in host]  # (batch,) each: this flag's
        out[name] = evaluate(model, [(backend.from_numpy(i[m], "int64"),
                                      backend.from_numpy(t[m], "int64"))  # (n_flag, 2L+1)
                                     for (i, t), m in zip(host, rows) if m.any()])
    return out


def execute(fn, todo: dict, executor, results: dict, cache: str | None,
            progress: str | None = None) -> None:
    """``results[key] = fn(spec, cache)`` for every ``key: spec`` of ``todo``, here one after
    another (``executor`` None) or through the executor; a progress bar titled ``progress``."""
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc=progress, unit="run")
    try:
        if executor is None:
            for key, spec in todo.items():
                results[key] = fn(spec, cache=cache)
                if bar is not None:
                    bar.update(1)
        else:
            from concurrent.futures import as_completed

            futures = {executor.submit(fn, spec, cache=cache): key for key, spec in todo.items()}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def process_pool(jobs: int):
    """A ``ProcessPoolExecutor`` of ``jobs`` workers, each with one BLAS thread.

    One BLAS thread per worker, for any ``jobs`` (1 included): a multi-threaded matrix product
    may add in another order and round differently, so results are bit-for-bit the same
    only if every run sees the same threading. Workers start with "spawn": a fresh interpreter
    inherits no state, and reads the thread settings when it imports NumPy. (Any other
    executor gives the same numbers if its workers also use one BLAS thread.)
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if jobs < 1:
        raise ValueError(f"process_pool: jobs must be at least 1, got {jobs}")
    saved = {v: os.environ.get(v) for v in BLAS_THREADS}
    os.environ.update({v: "1" for v in BLAS_THREADS})  # this process's NumPy is unaffected
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield pool
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
