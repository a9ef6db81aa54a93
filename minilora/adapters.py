"""Adapter files in PEFT's layout: a folder with ``adapter_config.json`` and
``adapter_model.safetensors``, keys ``base_model.model.<module path>.lora_A.weight`` (r, in)
and ``...lora_B.weight`` (out, r) (and DoRA's ``...lora_magnitude_vector`` (out,)).

An adapter is tiny next to its base model (the paper's 35 MB next to 350 GB): that is what makes
"one base, many tasks" practical. Files are safetensors + JSON, so loading never runs code
(no pickle). Loading validates the config, every key, shape, dtype and value *before* touching
the model; writes go to a temporary file that is renamed into place, so a crash never leaves a
half-written file under the real name.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np  # adapter files are host-side I/O

from . import __version__, backend
from .lora import LoraModel, find_targets, get_lora_model
from .lora_layer import LoraConfig, lora_scaling, pissa_factors
from .nn import Module

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _base_weight(layer):
    """W0 of a Linear or of a LoRA layer, without any adapter merged into it."""
    if not hasattr(layer, "base_layer"):
        return layer.weight.data
    return layer.unmerged_weight()


def base_signature(model: Module, paths: list[str], config: LoraConfig | None = None
                   ) -> dict[str, list[float]]:
    """Two numbers per targeted base weight W0: ‖W0‖_F and ⟨W0, R⟩ for a fixed random sign
    matrix R. They tell one pre-trained model from another, yet survive the float round-off of a
    merge followed by an unmerge (a hash of the bytes would not).

    For a PiSSA config not yet applied to plain Linears, W0 is the residual W0 − s·B A that
    injection would leave, which is what the saving model's base held.
    """
    signature = {}
    for path in paths:
        layer = model.get_submodule(path)
        W = backend.to_numpy(_base_weight(layer)).astype(np.float64)
        if config is not None and config.init_lora_weights == "pissa" \
                and not hasattr(layer, "base_layer"):
            r = config.rank_for(path)
            scaling = lora_scaling(r, config.alpha_for(path), config.use_rslora)
            W = backend.to_numpy(pissa_factors(_base_weight(layer), r, scaling)[2]).astype(np.float64)
        signs = np.random.default_rng(0).choice([-1.0, 1.0], size=W.shape)
        signature[path] = [float(np.linalg.norm(W)), float((W * signs).sum())]
    return signature


def _same_signature(saved: dict, current: dict) -> bool:
    if set(saved) != set(current):
        return False
    return all(np.allclose(saved[k], current[k], rtol=1e-4, atol=1e-5) for k in saved)


def save_adapter(model: LoraModel, directory: str | os.PathLike, adapter_name: str = "default"
                 ) -> Path:
    """Write ``adapter_name``'s A and B and its config into ``directory`` (created if needed)."""
    from safetensors.numpy import save

    if adapter_name not in model.peft_config:
        raise ValueError(f"no adapter named {adapter_name!r}; adapters: {list(model.peft_config)}")
    tensors, paths = {}, []
    for path, layer in model.lora_layers():
        if adapter_name in layer.lora_A:
            paths.append(path)
            tensors[f"{PREFIX}{path}.lora_A.weight"] = backend.to_numpy(
                layer.lora_A[adapter_name].weight.data)
            tensors[f"{PREFIX}{path}.lora_B.weight"] = backend.to_numpy(
                layer.lora_B[adapter_name].weight.data)
            if adapter_name in layer.lora_magnitude_vector:  # DoRA's m, under PEFT's key
                tensors[f"{PREFIX}{path}.lora_magnitude_vector"] = backend.to_numpy(
                    layer.lora_magnitude_vector[adapter_name].weight.data)
    for key, value in tensors.items():
        if not np.isfinite(value).all():
            raise ValueError(f"save_adapter: {key} contains NaN or infinite values; not saved")
    signature = base_signature(model.model, paths)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": None,
              "inference_mode": True, "fan_in_fan_out": False, "modules_to_save": None,
              **model.peft_config[adapter_name].to_dict(),
              "minilora": {"version": __version__, "base_signature": signature}}
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    # Weights first, config last: the config names what the weights must hold, so a crash
    # between the two is caught as a mismatch at load time, never read as a valid adapter.
    _atomic_write(out / WEIGHTS_NAME, save(tensors, metadata={"format": "np"}))
    _atomic_write(out / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True).encode())
    return out


def read_adapter_config(directory: str | os.PathLike) -> tuple[LoraConfig, dict]:
    """The LoraConfig stored in ``directory`` (and the raw JSON), validated."""
    path = Path(directory) / CONFIG_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no adapter config at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict) or raw.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path}: not a LoRA adapter config (peft_type={raw.get('peft_type')!r})")
    fields = LoraConfig.__dataclass_fields__
    try:
        config = LoraConfig(**{k: v for k, v in raw.items() if k in fields})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: invalid LoRA config: {err}") from None
    return config, raw


def _read_weights(path: Path) -> dict:
    from safetensors.numpy import load

    try:
        return load(path.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"no adapter weights at {path}") from None
    except Exception as err:  # safetensors raises its own error type for damaged files
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): "
                         f"{err}") from None


def load_adapter(model: Module, directory: str | os.PathLike, adapter_name: str = "default",
                 is_trainable: bool = False, check_base: bool = True) -> LoraModel:
    """Load an adapter into ``model`` (a plain model or a LoraModel) and return the LoraModel.

    Everything is checked before the model is touched: the config, that every expected key is
    present and no other, each shape and dtype, finite values, and (``check_base``) that the
    base weights are the ones the adapter was trained on. The loaded adapter becomes active;
    its weights train only if ``is_trainable``.
    """
    directory = Path(directory)
    config, raw = read_adapter_config(directory)
    weights = _read_weights(directory / WEIGHTS_NAME)
    inner = model.model if isinstance(model, LoraModel) else model
    if isinstance(model, LoraModel) and adapter_name in model.peft_config:
        raise ValueError(f"load_adapter: the model already has an adapter named {adapter_name!r}")
    paths = find_targets(inner, config)
    expected = {}
    for path in paths:
        layer = inner.get_submodule(path)
        r = config.rank_for(path)
        expected[f"{PREFIX}{path}.lora_A.weight"] = (r, layer.in_features)
        expected[f"{PREFIX}{path}.lora_B.weight"] = (layer.out_features, r)
        if config.use_dora:
            expected[f"{PREFIX}{path}.lora_magnitude_vector"] = (layer.out_features,)
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{directory}: adapter does not fit this model: missing keys {missing}, "
                         f"unexpected keys {unexpected}")
    dtype = backend.dtype_name(_base_weight(inner.get_submodule(paths[0])).dtype)
    for key, shape in expected.items():
        value = weights[key]
        if tuple(value.shape) != shape:
            raise ValueError(f"{directory}: {key} has shape {tuple(value.shape)}, the model "
                             f"needs {shape}")
        if str(value.dtype) != dtype:
            raise ValueError(f"{directory}: {key} is {value.dtype}, the model is {dtype}")
        if not np.isfinite(value).all():
            raise ValueError(f"{directory}: {key} contains NaN or infinite values")
    saved = raw.get("minilora", {}).get("base_signature")
    if check_base and saved is not None and not _same_signature(
            saved, base_signature(inner, paths, config)):
        raise ValueError(f"{directory}: the adapter was trained on a different base model "
                         f"(base weights differ); pass check_base=False to load it anyway")
    # Validated: now change the model.
    if isinstance(model, LoraModel):
        model.add_adapter(adapter_name, config)
        lora_model = model
    else:
        lora_model = get_lora_model(model, config, adapter_name)
    for path in paths:
        layer = inner.get_submodule(path)
        layer.lora_A[adapter_name].weight.data = backend.from_numpy(
            weights[f"{PREFIX}{path}.lora_A.weight"])
        layer.lora_B[adapter_name].weight.data = backend.from_numpy(
            weights[f"{PREFIX}{path}.lora_B.weight"])
        if config.use_dora:
            layer.lora_magnitude_vector[adapter_name].weight.data = backend.from_numpy(
                weights[f"{PREFIX}{path}.lora_magnitude_vector"])
    lora_model.set_adapter(adapter_name)
    if not is_trainable:
        for p in lora_model.parameters():
            p.requires_grad = False
    return lora_model
