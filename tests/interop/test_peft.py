"""Adapters against PEFT itself: minilora saves, PEFT loads into a PyTorch twin, and back.

The twin (minilora.bench.torch_twin) has minilora's module names and takes its weights, so the same
adapter must give the same logits on both sides (float32, to 1e-5). Needs the interop extra
(``pip install -e ".[interop]"``: torch and peft); without it these tests are skipped.
"""
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PEFT round trips need the interop extra: "
                                            "pip install -e '.[interop]'")
peft = pytest.importorskip("peft", reason="PEFT round trips need the interop extra: "
                                          "pip install -e '.[interop]'")

from minilora.adapters import load_adapter, save_adapter  # noqa: E402
from minilora.bench.torch_twin import build  # noqa: E402
from minilora.lora import LoraConfig, get_lora_model  # noqa: E402
from minilora.model import GPT, GPTConfig  # noqa: E402

pytestmark = [pytest.mark.interop, pytest.mark.lesson03]

CFG = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)
IDX = np.random.default_rng(0).integers(0, 13, (3, 8))
TOL = 1e-5

CASES = {
    "q,v": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "all-linear": dict(r=2, lora_alpha=4, target_modules="all-linear"),
    "patterns": dict(r=2, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "up_proj"],
                     rank_pattern={"q_proj|v_proj": 4, r"layers\.1\.mlp\.up_proj": 3},
                     alpha_pattern={"k_proj|up_proj": 12}),
    "rslora": dict(r=4, lora_alpha=16, use_rslora=True, target_modules=["q_proj", "o_proj"]),
    "dora": dict(r=2, lora_alpha=4, use_dora=True, target_modules=["q_proj", "v_proj"]),
    "pissa": dict(r=2, lora_alpha=2, init_lora_weights="pissa", target_modules=["q_proj", "v_proj"]),
    "bias-all": dict(r=2, lora_alpha=4, bias="all", target_modules=["q_proj", "v_proj"]),
    "bias-lora_only": dict(r=2, lora_alpha=4, bias="lora_only", target_modules=["k_proj", "up_proj"]),
}


def twin(model: GPT):
    """The PyTorch GPT with ``model``'s weights (copied)."""
    torch_model = build(model.config)
    torch_model.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    return torch_model.eval()


def torch_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(IDX)).numpy()


def train_like(lm, rng):
    """Move every trainable array off its start, as training would (B = 0 proves little)."""
    for name, p in lm.named_parameters():
        if p.requires_grad:
            p.data = p.data + rng.normal(0, 0.1, p.shape).astype(p.data.dtype)


def record(case: str, direction: str, diff: float) -> None:
    """Print the difference (``pytest -s`` shows the table) and hold it to the tolerance."""
    print(f"\ninterop {case:16} {direction:16} max |Δlogit| = {diff:.2e}")
    assert diff <= TOL, f"{case} {direction}: logits differ by {diff:.2e} > {TOL}"


@pytest.mark.parametrize("case", CASES)
def test_minilora_saves_peft_loads(tmp_path, case):
    base = GPT(CFG, seed=1)
    torch_base = twin(base)  # before injection: PiSSA changes the base weights in place
    lm = get_lora_model(base, LoraConfig(**CASES[case]), seed=2)
    train_like(lm, np.random.default_rng(3))
    save_adapter(lm, tmp_path / "a")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = peft.LoraConfig.from_pretrained(tmp_path / "a")
        peft_model = peft.PeftModel.from_pretrained(torch_base, tmp_path / "a")
    assert not [str(w.message) for w in caught if "peft" in w.filename], \
        "PEFT warned about minilora's files"
    assert config.r == lm.peft_config["default"].r
    from safetensors.numpy import load_file

    ours = load_file(tmp_path / "a" / "adapter_model.safetensors")
    theirs = peft.get_peft_model_state_dict(peft_model)
    assert {k: v.shape for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    record(case, "minilora -> PEFT", float(np.abs(torch_logits(peft_model) - lm(IDX).data).max()))


@pytest.mark.parametrize("case", CASES)
def test_peft_saves_minilora_loads(tmp_path, case):
    base = GPT(CFG, seed=1)
    torch.manual_seed(0)
    peft_model = peft.get_peft_model(twin(base), peft.LoraConfig(**CASES[case]))
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p += 0.1 * torch.randn_like(p)
    peft_model.save_pretrained(tmp_path / "a")
    lm = load_adapter(base, tmp_path / "a")
    record(case, "PEFT -> minilora", float(np.abs(torch_logits(peft_model.eval()) - lm(IDX).data).max()))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_files_from_peft_load_converted(tmp_path, dtype):
    """PEFT saves the adapter in 16 bits (as on the Hub); minilora reads it up into float32."""
    base = GPT(CFG, seed=1)
    torch.manual_seed(0)
    peft_model = peft.get_peft_model(twin(base), peft.LoraConfig(**CASES["q,v"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:  # round to 16 bits, keep float32: the reference model
                p.copy_((p + 0.1 * torch.randn_like(p)).to(getattr(torch, dtype)).float())
    state = {k: v.to(getattr(torch, dtype)) for k, v in
             peft.get_peft_model_state_dict(peft_model).items()}
    peft_model.save_pretrained(tmp_path / "a")
    from safetensors.torch import save_file
    save_file(state, tmp_path / "a" / "adapter_model.safetensors", metadata={"format": "pt"})
    header = (tmp_path / "a" / "adapter_model.safetensors").read_bytes()
    assert {"F16": "float16", "BF16": "bfloat16"}.get(
        json.loads(header[8:8 + int.from_bytes(header[:8], "little")])[
            "base_model.model.layers.0.attn.q_proj.lora_A.weight"]["dtype"]) == dtype
    with pytest.warns(UserWarning, match="converted to the model's float32"):
        lm = load_adapter(base, tmp_path / "a")
    record(dtype, "PEFT -> minilora", float(np.abs(torch_logits(peft_model.eval()) - lm(IDX).data).max()))
    reloaded = peft.PeftModel.from_pretrained(twin(GPT(CFG, seed=1)), tmp_path / "a")
    record(dtype, "PEFT reloads", float(np.abs(torch_logits(reloaded) - lm(IDX).data).max()))
