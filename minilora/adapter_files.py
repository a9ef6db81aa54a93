"""Adapter files in PEFT's layout: a folder with ``adapter_config.json`` and
``adapter_model.safetensors``, keys ``base_model.model.<module path>.lora_A.weight`` (r, in)
and ``...lora_B.weight`` (out, r) (DoRA's ``...lora_magnitude_vector`` (out,), and with
``bias="all"`` or ``"lora_only"`` the trained biases, ``...<path>.bias`` or
``...<path>.base_layer.bias``): the keys of PEFT's ``get_peft_model_state_dict``.

An adapter is tiny next to its base model (the paper's 35 MB next to 350 GB): that is what makes
"one base, many tasks" practical. Files are safetensors + JSON, so loading never runs code
(no pickle). The config holds only fields PEFT's ``LoraConfig`` knows, so PEFT loads it without
a warning; minilora's own record (its version, a fingerprint of the base weights) sits in the
safetensors header's metadata, which PEFT ignores. Loading validates the config, every key,
shape, dtype and value *before* touching the model; float16 and bfloat16 files (common on the
Hub) are converted up to the model's dtype, with a warning. The two files are written as a pair
(``fileio.atomic_write_files``): a crash leaves the old pair or the new one, never new weights
under an old config, which would load without error and match neither adapter.

This chapter knows the files and a model's layers, not how LoRA layers are injected: loading
into a plain model (which needs injection first) is adapters.py's, one floor up.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np  # adapter files are host-side I/O

from . import __version__, backend
from .fileio import atomic_write_files
from .lora_layer import INITS, LoraConfig, LoraLinear, find_targets, lora_scaling
from .nn import Module
from .safetensors_np import SafetensorsError, read_safetensors
from .validation import check_bool

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."
FLOAT_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}  # stored float dtypes and their widths


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

    For a PiSSA config (loading), W0 is the residual W0 − s·B A that injecting it would leave,
    which is what the saving model's base held, whether or not the layer is a LoRA layer yet.
    """
    signature = {}
    for path in paths:
        W0 = _base_weight(model.get_submodule(path))
        if config is not None and config.init_lora_weights in INITS:  # PiSSA rewrites W0
            r, init = config.rank_for(path), INITS[config.init_lora_weights]
            W0 = init(W0, r, lora_scaling(r, config.alpha_for(path), config.use_rslora))[2]
        W = backend.to_numpy(W0).astype(np.float64)
        signs = np.random.default_rng(0).choice([-1.0, 1.0], size=W.shape)
        signature[path] = [float(np.linalg.norm(W)), float((W * signs).sum())]
    return signature


def _same_signature(saved: dict, current: dict) -> bool:
    if set(saved) != set(current):
        return False
    return all(np.allclose(saved[k], current[k], rtol=1e-4, atol=1e-5) for k in saved)


def _biases(model: Module, paths: list[str], bias: str) -> dict:
    """The biases an adapter trains, by their names once ``paths`` are LoRA layers (PEFT's keys:
    a wrapped layer's bias is ``<path>.base_layer.bias``), as Parameters."""
    if bias == "none":
        return {}
    wrapped = {p for p in paths if not isinstance(model.get_submodule(p), LoraLinear)}
    found = {}
    for name, p in model.named_parameters():
        module, _, leaf = name.rpartition(".")
        if leaf != "bias":
            continue
        after = f"{module}.base_layer.bias" if module in wrapped else name
        if bias == "all" or after.removesuffix(".base_layer.bias") in paths:
            found[after] = p
    return found


def save_adapter(model, directory: str | os.PathLike, adapter_name: str = "default"
                 ) -> Path:
    """Write ``adapter_name``'s A, B (and trained biases) and its config into ``directory``.

    The folder is created if needed; other files in it are kept. Both files appear at once.
    """
    from safetensors.numpy import save

    if not isinstance(adapter_name, str) or adapter_name not in model.peft_config:
        raise ValueError(f"save_adapter: adapter_name {adapter_name!r} is not an adapter of this "
                         f"model; adapters: {list(model.peft_config)}")
    config = model.peft_config[adapter_name]
    tensors, paths = {}, []
    for path, layer in model.lora_layers():
        if adapter_name in layer.lora_A:
            paths.append(path)
            tensors[f"{PREFIX}{path}.lora_A.weight"] = layer.lora_A[adapter_name].weight.data
            tensors[f"{PREFIX}{path}.lora_B.weight"] = layer.lora_B[adapter_name].weight.data
            if adapter_name in layer.lora_magnitude_vector:  # DoRA's m, under PEFT's key
                tensors[f"{PREFIX}{path}.lora_magnitude_vector"] = \
                    layer.lora_magnitude_vector[adapter_name].weight.data
    tensors.update({PREFIX + name: p.data
                    for name, p in _biases(model.model, paths, config.bias).items()})
    tensors = {k: np.ascontiguousarray(backend.to_numpy(v)) for k, v in tensors.items()}
    for key, value in tensors.items():
        if not np.isfinite(value).all():
            raise ValueError(f"save_adapter: {key} contains NaN or infinite values; not saved")
    metadata = {"format": "pt",  # what PEFT writes; transformers' loaders expect it
                "minilora_version": __version__,
                "minilora_init_lora_weights": json.dumps(config.init_lora_weights),
                "minilora_base_signature": json.dumps(base_signature(model.model, paths))}
    fields = {"peft_type": "LORA", "task_type": None,  # None: any torch module, as minilora's GPT
              "base_model_name_or_path": None, "inference_mode": True, "fan_in_fan_out": False,
              "modules_to_save": None, **config.to_dict()}
    if config.target_modules == "all-linear":
        # the names it chose, as PEFT saves it: outside a transformers model PEFT's shorthand
        # would take lm_head too
        fields["target_modules"] = sorted({p.split(".")[-1] for p in paths})
    return atomic_write_files(directory, {
        WEIGHTS_NAME: save(tensors, metadata=metadata),
        CONFIG_NAME: json.dumps(fields, indent=2, sort_keys=True).encode()})


def read_adapter_config(directory: str | os.PathLike) -> tuple[LoraConfig, dict]:
    """The LoraConfig stored in ``directory`` (and the raw JSON), every field checked."""
    path = Path(directory) / CONFIG_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no adapter config at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a LoRA adapter config: a JSON {type(raw).__name__}, "
                         f"not an object")
    if raw.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path}: not a LoRA adapter config: peft_type {raw['peft_type']!r}, "
                         f"allowed: 'LORA'")
    fields = LoraConfig.__dataclass_fields__
    try:
        config = LoraConfig(**{k: v for k, v in raw.items() if k in fields})
    except (TypeError, ValueError) as err:
        raise type(err)(f"{path}: invalid LoRA config: {err}") from None
    return config, raw


def _read_weights(path: Path) -> tuple[dict, dict, dict]:
    try:
        return read_safetensors(path.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"no adapter weights at {path}") from None
    except SafetensorsError as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None


def _saved_record(directory: Path, metadata: dict, raw: dict) -> tuple[dict | None, object]:
    """(base signature, init_lora_weights) that minilora recorded at save time, or Nones for a
    file from elsewhere (PEFT's own), which cannot be checked."""
    try:
        signature = json.loads(metadata["minilora_base_signature"])
        init = json.loads(metadata["minilora_init_lora_weights"])
    except KeyError:  # no record, or one in the config, where older minilora versions put it
        legacy = raw.get("minilora")
        return (legacy.get("base_signature"), None) if isinstance(legacy, dict) else (None, None)
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{directory}: minilora's record in the weights file is damaged: "
                         f"{err}") from None
    if not isinstance(signature, dict):
        raise ValueError(f"{directory}: minilora's base signature is a "
                         f"{type(signature).__name__}, not a dict")
    return signature, init


def read_checked(model: Module, directory: str | os.PathLike, adapter_name: str,
                 is_trainable: bool, check_base: bool) -> tuple:
    """Read the adapter in ``directory`` for ``model`` (a plain model or a LoraModel) and check
    everything before the model is touched: the config, that every expected key is present and
    no other, each shape and dtype, finite values, and (``check_base``) that the base weights
    are the ones the adapter was trained on. Returns ``(config, paths, weights, biases)``."""
    # a LoraModel has peft_config (asked, not isinstance: this chapter sits below lora.py)
    directory, has_adapters = Path(directory), hasattr(model, "peft_config")
    if not isinstance(adapter_name, str) or not adapter_name:
        raise TypeError(f"load_adapter: adapter_name must be a non-empty string, got "
                        f"{adapter_name!r}")
    check_bool("load_adapter: is_trainable", is_trainable)
    check_bool("load_adapter: check_base", check_base)
    config, raw = read_adapter_config(directory)
    weights, stored, metadata = _read_weights(directory / WEIGHTS_NAME)
    inner = model.model if has_adapters else model
    if has_adapters and adapter_name in model.peft_config:
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
    biases = _biases(inner, paths, config.bias)
    expected.update({PREFIX + name: tuple(p.shape) for name, p in biases.items()})
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{directory}: adapter does not fit this model (bias={config.bias!r}): "
                         f"missing keys {missing}, unexpected keys {unexpected}")
    dtype = backend.dtype_name(_base_weight(inner.get_submodule(paths[0])).dtype)
    converted = {}
    for key, shape in expected.items():
        value = weights[key]
        if tuple(value.shape) != shape:
            raise ValueError(f"{directory}: {key} has shape {tuple(value.shape)}, the model "
                             f"needs {shape}")
        if stored[key] not in FLOAT_BYTES or FLOAT_BYTES[stored[key]] > np.dtype(dtype).itemsize:
            raise ValueError(f"{directory}: {key} is {stored[key]}, the model is {dtype}; "
                             f"allowed: float16, bfloat16 or float32 up to the model's width "
                             f"(narrowing would round the adapter)")
        if value.dtype != dtype or stored[key] == "BF16":
            converted[key] = stored[key]
            weights[key] = value = value.astype(dtype)  # exact: every narrower float fits
        if not np.isfinite(value).all():
            raise ValueError(f"{directory}: {key} contains NaN or infinite values")
    saved, saved_init = _saved_record(directory, metadata, raw)
    if saved_init is not None and (saved_init == "pissa") != (config.init_lora_weights == "pissa"):
        raise ValueError(f"{directory}: the config says init_lora_weights="
                         f"{config.init_lora_weights!r}, but the weights were saved from an "
                         f"adapter with init_lora_weights={saved_init!r} (was the config "
                         f"edited?); PiSSA needs the residual base it was saved with")
    if check_base and saved is not None and not _same_signature(
            saved, base_signature(inner, paths, config)):
        raise ValueError(f"{directory}: the adapter was trained on a different base model "
                         f"(base weights differ); pass check_base=False to load it anyway")
    if converted:
        warnings.warn(f"{directory}: {len(converted)} tensors stored as "
                      f"{'/'.join(sorted(set(converted.values())))} converted to the model's "
                      f"{dtype}", UserWarning, stacklevel=3)
    if config.init_lora_weights == "pissa" and has_adapters and model.peft_config:
        warnings.warn(f"{directory}: a PiSSA adapter replaces each targeted W0 by its residual, "
                      f"so the adapters already loaded ({list(model.peft_config)}) no longer "
                      f"give their outputs", UserWarning, stacklevel=3)
    return config, paths, weights, biases


def fill(lora_model, config: LoraConfig, paths: list[str], weights: dict, biases: dict,
         adapter_name: str, is_trainable: bool):
    """Put the checked ``weights`` into ``lora_model``'s new adapter ``adapter_name`` (its LoRA
    layers exist: injected or added), make it active, and freeze it unless ``is_trainable``."""
    inner = lora_model.model
    for path in paths:
        layer = inner.get_submodule(path)
        layer.lora_A[adapter_name].weight.data = backend.from_numpy(
            weights[f"{PREFIX}{path}.lora_A.weight"])
        layer.lora_B[adapter_name].weight.data = backend.from_numpy(
            weights[f"{PREFIX}{path}.lora_B.weight"])
        if config.use_dora:
            layer.lora_magnitude_vector[adapter_name].weight.data = backend.from_numpy(
                weights[f"{PREFIX}{path}.lora_magnitude_vector"])
    for name, p in biases.items():  # the same Parameter objects, now inside the LoRA layers
        p.data = backend.from_numpy(weights[PREFIX + name])
    lora_model.set_adapter(adapter_name)
    if not is_trainable:
        for p in lora_model.parameters():
            p.requires_grad = False
    return lora_model
