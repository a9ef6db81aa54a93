"""Adapter files: PEFT's layout, bit-exact round trips, and every bad file refused untouched."""
import json
import os
import pickle

import numpy as np
import pytest

from minilora import fileio
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

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(OSError):
        save_adapter(lm, path)
    assert (path / "adapter_model.safetensors").read_bytes() == old
    assert sorted(os.listdir(path)) == ["adapter_config.json", "adapter_model.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["a"]  # no temporary folder either


def test_nan_weights_are_never_saved(tmp_path):
    lm, path = trained_adapter(tmp_path)
    old = (path / "adapter_model.safetensors").read_bytes()
    layer = lm.lora_layers()[0][1]
    layer.lora_A["default"].weight.data[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        save_adapter(lm, path)
    assert (path / "adapter_model.safetensors").read_bytes() == old


# -- what PEFT's files carry -------------------------------------------------------------------
@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_trained_biases_are_saved_and_loaded_under_peft_s_keys(tmp_path, bias):
    lm = get_lora_model(GPT(CFG), LoraConfig(r=2, init_lora_weights=False, bias=bias), seed=1)
    rng = np.random.default_rng(5)
    for name, p in lm.named_parameters():
        if name.endswith("bias") and p.requires_grad:  # as training would move them
            p.data = p.data + rng.normal(0, 0.5, p.shape).astype(p.data.dtype)
    save_adapter(lm, tmp_path / "a")
    from safetensors.numpy import load_file

    keys = set(load_file(tmp_path / "a" / "adapter_model.safetensors"))
    assert "base_model.model.layers.0.attn.q_proj.base_layer.bias" in keys
    assert ("base_model.model.layers.0.ln_1.bias" in keys) == (bias == "all")
    assert ("base_model.model.layers.0.attn.k_proj.bias" in keys) == (bias == "all")
    loaded = load_adapter(GPT(CFG), tmp_path / "a")
    assert np.array_equal(loaded(IDX).data, lm(IDX).data)


def half_file(path, dtype):
    """Rewrite the adapter's weights as float16 or bfloat16 (bytes made by hand: NumPy has no
    bfloat16), returning the float32 values they hold."""
    import json as _json
    import struct

    from safetensors.numpy import load_file, save_file

    tensors = load_file(path / "adapter_model.safetensors")
    if dtype == "float16":
        save_file({k: v.astype(np.float16) for k, v in tensors.items()},
                  path / "adapter_model.safetensors")
        return {k: v.astype(np.float16).astype(np.float32) for k, v in tensors.items()}
    header, blobs, offset, held = {}, [], 0, {}
    for key in sorted(tensors):
        top = (tensors[key].astype(np.float32).view(np.uint32) >> 16).astype("<u2")  # truncate
        header[key] = {"dtype": "BF16", "shape": list(top.shape),
                       "data_offsets": [offset, offset + top.nbytes]}
        blobs.append(top.tobytes())
        offset += top.nbytes
        held[key] = (top.astype(np.uint32) << 16).view(np.float32)
    text = _json.dumps(header).encode()
    (path / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text
                                                     + b"".join(blobs))
    return held


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_files_load_converted_with_a_warning(tmp_path, dtype):
    lm, path = trained_adapter(tmp_path)
    held = half_file(path, dtype)
    with pytest.warns(UserWarning, match=f"stored as {'F16' if dtype == 'float16' else 'BF16'} "
                                         f"converted to the model's float32"):
        loaded = load_adapter(GPT(CFG), path)
    for path_, layer in loaded.lora_layers():
        A = layer.lora_A["default"].weight.data
        assert A.dtype == np.float32
        assert np.array_equal(A, held[f"base_model.model.{path_}.lora_A.weight"])


def test_a_wider_file_than_the_model_is_refused_naming_both_dtypes(tmp_path):
    _, path = trained_adapter(tmp_path)
    break_file(path, "dtype")
    with pytest.raises(ValueError, match="is F64, the model is float32"):
        load_adapter(GPT(CFG), path)


@pytest.mark.parametrize("raw, says", [
    ([], "a JSON list"), (None, "a JSON NoneType"), ({"peft_type": "IA3"}, "peft_type 'IA3'"),
    ({"r": 2, "rank_pattern": ["q_proj"]}, "rank_pattern"),
    ({"r": 2, "target_modules": 3}, "target_modules"), ({"r": 2, "lora_alpha": "8"}, "lora_alpha"),
    ({"r": 2, "use_rslora": "true"}, "use_rslora"), ({"r": "2"}, "LoraConfig.r"),
])
def test_malformed_configs_name_the_field(tmp_path, raw, says):
    _, path = trained_adapter(tmp_path)
    (path / "adapter_config.json").write_text(json.dumps(raw))
    model = GPT(CFG)
    before = snapshot(model)
    with pytest.raises((TypeError, ValueError), match=says):
        load_adapter(model, path)
    assert_unchanged(model, before)


# -- PiSSA ---------------------------------------------------------------------------------
def pissa_adapter(tmp_path):
    lm = get_lora_model(GPT(CFG), LoraConfig(r=2, lora_alpha=2, init_lora_weights="pissa"),
                        seed=1)
    for _, layer in lm.lora_layers():
        layer.lora_B["default"].weight.data = layer.lora_B["default"].weight.data + 0.05
    save_adapter(lm, tmp_path / "p")
    return lm, tmp_path / "p"


def test_a_pissa_adapter_loads_into_a_lora_model_with_a_warning(tmp_path):
    lm, path = pissa_adapter(tmp_path)
    other = get_lora_model(GPT(CFG), LoraConfig(r=2, target_modules=["k_proj"],
                                                init_lora_weights=False), seed=2)
    with pytest.warns(UserWarning, match="residual"):
        load_adapter(other, path, adapter_name="pissa")
    assert np.array_equal(other(IDX).data, lm(IDX).data)


def test_a_plain_adapter_relabelled_pissa_is_refused(tmp_path):
    _, path = trained_adapter(tmp_path)
    raw = json.loads((path / "adapter_config.json").read_text())
    raw["init_lora_weights"] = "pissa"
    (path / "adapter_config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="config edited"):
        load_adapter(GPT(CFG), path)


# -- writing -------------------------------------------------------------------------------
def test_files_get_the_mode_a_plain_write_gives(tmp_path):
    from minilora.bench.report import write_json
    from minilora.experiments.common import write_csv

    mask = os.umask(0o022)
    try:
        _, path = trained_adapter(tmp_path)
        write_json({"x": 1}, str(tmp_path / "bench.json"))
        write_csv(tmp_path / "t.csv", [{"a": 1}])
        fileio.atomic_write(tmp_path / "cache" / "w.safetensors", b"x")
    finally:
        os.umask(mask)
    for f in [path / "adapter_config.json", path / "adapter_model.safetensors",
              tmp_path / "bench.json", tmp_path / "t.csv", tmp_path / "cache" / "w.safetensors"]:
        assert oct(os.stat(f).st_mode & 0o777) == oct(0o644), f
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o755)


def test_saving_into_a_folder_keeps_everything_else_it_holds(tmp_path):
    lm, path = trained_adapter(tmp_path)
    (path / "README.md").write_text("my notes")
    (path / "runs").mkdir()
    (path / "runs" / "log.txt").write_text("step 1")
    os.chmod(path, 0o750)
    layer = lm.lora_layers()[0][1]
    layer.lora_B["default"].weight.data = layer.lora_B["default"].weight.data + 1
    save_adapter(lm, path)
    assert (path / "README.md").read_text() == "my notes"
    assert (path / "runs" / "log.txt").read_text() == "step 1"
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o750)
    assert sorted(os.listdir(tmp_path)) == ["a"]
    assert np.array_equal(load_adapter(GPT(CFG), path)(IDX).data, lm(IDX).data)


def test_saving_through_a_link_writes_into_the_folder_it_names(tmp_path):
    lm, path = trained_adapter(tmp_path)
    (tmp_path / "link").symlink_to(path)
    save_adapter(lm, tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and sorted(os.listdir(tmp_path)) == ["a", "link"]
    assert np.array_equal(load_adapter(GPT(CFG), tmp_path / "link")(IDX).data, lm(IDX).data)


SAVER = """
import sys
import numpy as np
from minilora.adapters import save_adapter
from minilora.lora import LoraConfig, get_lora_model
from minilora.model import GPT, GPTConfig
cfg = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)
models = [get_lora_model(GPT(cfg), LoraConfig(r=2, lora_alpha=a, init_lora_weights=False), seed=s)
          for a, s in ((8, 1), (16, 2))]  # same shapes: only the pair tells them apart
print("ready", flush=True)
i = 0
while True:
    save_adapter(models[i % 2], sys.argv[1])
    i += 1
"""


@pytest.mark.slow
def test_a_save_killed_at_any_point_leaves_the_old_pair_or_the_new(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    cfg = CFG
    pairs = [get_lora_model(GPT(cfg), LoraConfig(r=2, lora_alpha=a, init_lora_weights=False),
                            seed=s) for a, s in ((8, 1), (16, 2))]
    outputs = [lm(IDX).data for lm in pairs]
    target = tmp_path / "adapter"
    save_adapter(pairs[0], target)
    (target / "README.md").write_text("mine")
    rng, deadline, kills = np.random.default_rng(0), time.monotonic() + 60, 0
    while kills < 3 or (kills < 8 and time.monotonic() < deadline):  # 3 to 8 kills
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(target)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        loaded = load_adapter(GPT(cfg), target)  # loads, and is exactly one of the two
        out = loaded(IDX).data
        assert any(np.array_equal(out, o) for o in outputs), "a mix of two adapters"
        assert loaded.peft_config["default"].lora_alpha == (8 if np.array_equal(out, outputs[0])
                                                            else 16)
        assert (target / "README.md").read_text() == "mine"
    save_adapter(pairs[1], target)  # the next save removes what the killed ones left
    assert sorted(os.listdir(tmp_path)) == ["adapter"]
    assert sorted(os.listdir(target)) == ["README.md", "adapter_config.json",
                                          "adapter_model.safetensors"]
