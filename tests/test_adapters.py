"""Adapter files: PEFT's layout, bit-exact round trips, and every bad file refused untouched."""
import json
import os
import pickle

import numpy as np
import pytest

from minilora import adapters
from minilora.adapters import load_adapter, save_adapter
from minilora.lora import LoraConfig, LoraModel, get_lora_model
from minilora.model import GPT, GPTConfig

pytestmark = pytest.mark.lesson04

CFG = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)
IDX = np.random.default_rng(0).integers(0, 11, (2, 6))


def trained_adapter(tmp_path, init=False, **kw):
    """A LoRA model with nonzero A and B (init False), saved to tmp_path/'a'."""
    lm = get_lora_model(GPT(CFG), LoraConfig(r=2, init_lora_weights=init, **kw), seed=1)
    save_adapter(lm, tmp_path / "a")
    return lm, tmp_path / "a"


def snapshot(model):
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert np.array_equal(after[k], before[k]), k


def test_layout_is_peft_s(tmp_path):
    lm, path = trained_adapter(tmp_path)
    assert sorted(os.listdir(path)) == ["adapter_config.json", "adapter_model.safetensors"]
    from safetensors.numpy import load_file

    tensors = load_file(path / "adapter_model.safetensors")
    assert "base_model.model.layers.0.attn.q_proj.lora_A.weight" in tensors
    assert tensors["base_model.model.layers.1.attn.v_proj.lora_A.weight"].shape == (2, 8)
    assert tensors["base_model.model.layers.1.attn.v_proj.lora_B.weight"].shape == (8, 2)
    assert len(tensors) == 2 * 2 * 2  # 2 layers x {q, v} x {A, B}
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["lora_alpha"] == 8
    assert config["target_modules"] == ["q_proj", "v_proj"]


@pytest.mark.parametrize("init", [False, "pissa"])
def test_round_trip_is_bit_exact(tmp_path, init):
    lm, path = trained_adapter(tmp_path, init=init)
    loaded = load_adapter(GPT(CFG), path)
    assert np.array_equal(loaded(IDX).data, lm(IDX).data)
    for (_, a), (_, b) in zip(lm.lora_layers(), loaded.lora_layers()):
        assert np.array_equal(a.lora_A["default"].weight.data, b.lora_A["default"].weight.data)
        assert np.array_equal(a.lora_B["default"].weight.data, b.lora_B["default"].weight.data)
    assert not any(p.requires_grad for p in loaded.parameters())  # inference unless asked
    trainable = load_adapter(GPT(CFG), path, is_trainable=True)
    assert sum(p.requires_grad for p in trainable.parameters()) == 8


def test_second_adapter_loads_beside_the_first_and_switches(tmp_path):
    lm, path = trained_adapter(tmp_path)
    other = get_lora_model(GPT(CFG), LoraConfig(r=2), seed=7)
    base_out = other(IDX).data
    load_adapter(other, path, adapter_name="task")
    assert isinstance(other, LoraModel) and set(other.peft_config) == {"default", "task"}
    assert np.array_equal(other(IDX).data, lm(IDX).data)
    other.set_adapter("default")
    assert np.array_equal(other(IDX).data, base_out)  # B = 0: the base model


def test_saving_a_merged_model_still_fingerprints_w0(tmp_path):
    lm = get_lora_model(GPT(CFG), LoraConfig(r=2, init_lora_weights=False), seed=1)
    lm.merge_adapter()
    save_adapter(lm, tmp_path / "m")
    loaded = load_adapter(GPT(CFG), tmp_path / "m")  # the same base: accepted
    assert np.allclose(loaded(IDX).data, lm(IDX).data, atol=1e-6)


def break_file(path, how):
    weights, config = path / "adapter_model.safetensors", path / "adapter_config.json"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:-7])
    elif how == "garbage":
        weights.write_bytes(b"\x00" * 64)
    elif how == "pickle":
        weights.write_bytes(pickle.dumps({"a": 1}))
    elif how == "bad-json":
        config.write_text("{not json")
    elif how == "bad-rank":
        raw = json.loads(config.read_text())
        raw["r"] = 3
        config.write_text(json.dumps(raw))
    elif how == "bad-r-value":
        raw = json.loads(config.read_text())
        raw["r"] = 0
        config.write_text(json.dumps(raw))
    elif how in ("missing-key", "nan", "dtype"):
        from safetensors.numpy import load_file, save_file

        tensors = load_file(weights)
        key = sorted(tensors)[0]
        if how == "missing-key":
            del tensors[key]
        elif how == "nan":
            tensors[key] = tensors[key].copy()
            tensors[key][0, 0] = np.nan
        else:
            tensors[key] = tensors[key].astype(np.float64)
        save_file(tensors, weights)
    elif how == "no-config":
        config.unlink()


@pytest.mark.parametrize("how", ["truncated", "garbage", "pickle", "bad-json", "bad-rank",
                                 "bad-r-value", "missing-key", "nan", "dtype", "no-config"])
@pytest.mark.parametrize("into", ["plain", "lora"])
def test_bad_files_are_refused_and_the_model_is_unchanged(tmp_path, how, into):
    _, path = trained_adapter(tmp_path)
    break_file(path, how)
    model = GPT(CFG) if into == "plain" else get_lora_model(GPT(CFG), LoraConfig(r=2), seed=3)
    before = snapshot(model)
    with pytest.raises((ValueError, FileNotFoundError)):
        load_adapter(model, path, adapter_name="x")
    assert_unchanged(model, before)
    if into == "lora":
        assert list(model.peft_config) == ["default"]


def test_wrong_base_model_is_refused_unless_asked(tmp_path):
    _, path = trained_adapter(tmp_path)
    other = GPT(CFG, seed=123)
    before = snapshot(other)
    with pytest.raises(ValueError, match="different base model"):
        load_adapter(other, path)
    assert_unchanged(other, before)
    load_adapter(other, path, check_base=False)


def test_wrong_architecture_names_the_shapes(tmp_path):
    _, path = trained_adapter(tmp_path)
    wider = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=12))
    with pytest.raises(ValueError, match=r"shape \(2, 8\).*\(2, 12\)"):
        load_adapter(wider, path)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    lm, path = trained_adapter(tmp_path)
    old = (path / "adapter_model.safetensors").read_bytes()
    layer = lm.lora_layers()[0][1]
    layer.lora_B["default"].weight.data = layer.lora_B["default"].weight.data + 1

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(adapters.os, "replace", crash)
    with pytest.raises(OSError):
        save_adapter(lm, path)
    assert (path / "adapter_model.safetensors").read_bytes() == old
    assert sorted(os.listdir(path)) == ["adapter_config.json", "adapter_model.safetensors"]


def test_nan_weights_are_never_saved(tmp_path):
    lm, path = trained_adapter(tmp_path)
    old = (path / "adapter_model.safetensors").read_bytes()
    layer = lm.lora_layers()[0][1]
    layer.lora_A["default"].weight.data[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        save_adapter(lm, path)
    assert (path / "adapter_model.safetensors").read_bytes() == old
