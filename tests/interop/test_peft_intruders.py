"""Intruder mitigation against PEFT's own ``reduce_intruder_dimension``
(peft.tuners.lora.intruders): the same adapter in, the same intruders found, the same new adapter
out. Needs the interop extra (torch and peft); without it these tests are skipped.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PEFT comparisons need the interop extra: "
                                            "pip install -e '.[interop]'")
peft = pytest.importorskip("peft", reason="PEFT comparisons need the interop extra: "
                                          "pip install -e '.[interop]'")
peft_intruders = pytest.importorskip("peft.tuners.lora.intruders",
                                     reason="this PEFT has no reduce_intruder_dimension")

from minilora import analysis  # noqa: E402
from minilora.adapters import save_adapter  # noqa: E402
from minilora.bench.torch_twin import build  # noqa: E402
from minilora.intruders import reduce_intruder_dimension  # noqa: E402
from minilora.lora import LoraConfig, get_lora_model  # noqa: E402
from minilora.model import GPT, GPTConfig  # noqa: E402

pytestmark = [pytest.mark.interop, pytest.mark.lesson08]

TOL = {"float32": 1e-5, "float64": 1e-10}  # ‖ΔW'_minilora − ΔW'_PEFT‖_F / (‖W0‖_F + ‖ΔW'‖_F)
IDX = np.random.default_rng(0).integers(0, 13, (3, 8))
PREFIX = "base_model.model."


def twin(model: GPT):
    torch_model = build(model.config).to(getattr(torch, model.config.dtype))
    torch_model.load_state_dict({k: torch.tensor(np.array(v))
                                 for k, v in model.state_dict().items()})
    return torch_model.eval()


QV = ["q_proj", "v_proj"]


@pytest.mark.parametrize("targets, lam, dtype", [
    (QV, 0.75, "float32"), ("all-linear", 0.75, "float32"), (QV, 0.75, "float64"),
    ("all-linear", 0.0, "float64")])
def test_minilora_reduces_what_peft_reduces(tmp_path, targets, lam, dtype):
    """λ = 0 in float64 only: when every direction of ΔW is an intruder, W' − W0 is a small
    remainder without a gap at rank r, and float32 rounding moves its rank-r part by ~1e-4."""
    base = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=64,
                         dtype=dtype), seed=1)
    torch_base = twin(base)
    lm = get_lora_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets), seed=2)
    rng = np.random.default_rng(3)
    for _, layer in lm.lora_layers():  # a large B: ΔW brings in directions W0 does not have
        B = layer.lora_B["default"].weight
        B.data = (2.0 * rng.standard_normal(B.shape)).astype(dtype)
    for path, layer in lm.lora_layers():  # well posed: no cosine within float32 reach of ε
        W0 = layer.base_layer.weight.data
        cos = np.asarray(analysis.max_cosine_similarities(W0 + layer.delta_weight(), W0))
        assert np.min(np.abs(cos - 0.5)) > 1e-3, f"{path}: a cosine sits on the threshold"
    save_adapter(lm, tmp_path / "a")
    peft_model = peft.PeftModel.from_pretrained(torch_base, tmp_path / "a")

    theirs, ours = [], []
    peft_intruders.reduce_intruder_dimension(peft_model, mitigation_lambda=lam,
                                             logging_sink=theirs.append)
    counts = reduce_intruder_dimension(lm, mitigation_lambda=lam, logging_sink=ours.append)
    assert sum(counts.values()) > 0
    assert [line.removeprefix(PREFIX) for line in theirs] == ours  # same intruders, per layer

    modules = dict(peft_model.named_modules())
    for path, layer in lm.lora_layers():
        expected = modules[PREFIX + path].get_delta_weight("intruder_reduced").detach().numpy()
        got = np.asarray(layer.delta_weight("intruder_reduced"))
        scale = np.linalg.norm(np.asarray(layer.base_layer.weight.data)) + np.linalg.norm(expected)
        assert np.linalg.norm(got - expected) <= TOL[dtype] * scale, path
    with torch.no_grad():
        peft_logits = peft_model(torch.tensor(IDX)).numpy()
    assert np.abs(peft_logits - np.asarray(lm(IDX).data)).max() <= 1e3 * TOL[dtype]
