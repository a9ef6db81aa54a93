"""Every bad input is a TypeError or ValueError naming the field, the value and what is
allowed, raised before anything changes."""
import math

import numpy as np
import pytest

from minilora.lora import LoraConfig, get_lora_model
from minilora.lora_layer import _pattern_value
from minilora.model import GPT, GPTConfig

pytestmark = pytest.mark.lesson04

CFG = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)
IDX = np.random.default_rng(0).integers(0, 11, (2, 6))


def snapshot(model):
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("field, value, kind", [
    ("r", "8", TypeError), ("r", 2.5, TypeError), ("r", True, TypeError), ("r", 0, ValueError),
    ("lora_alpha", "8", TypeError), ("lora_alpha", True, TypeError),
    ("lora_alpha", math.inf, ValueError), ("lora_alpha", None, TypeError),
    ("lora_dropout", "0.1", TypeError), ("lora_dropout", False, TypeError),
    ("use_rslora", {}, TypeError), ("use_rslora", 1, TypeError), ("use_rslora", "yes", TypeError),
    ("use_dora", None, TypeError), ("init_lora_weights", 1, ValueError),
    ("init_lora_weights", "olora", ValueError), ("bias", True, ValueError),
    ("target_modules", 3, TypeError), ("target_modules", [1], TypeError),
    ("target_modules", ["q_proj", ""], ValueError), ("target_modules", "(", ValueError),
    ("rank_pattern", ["q_proj"], TypeError), ("rank_pattern", {"q_proj": 2.0}, TypeError),
    ("rank_pattern", {"q_proj": True}, TypeError), ("alpha_pattern", {"q_proj": "8"}, TypeError),
    ("alpha_pattern", {"(": 8}, ValueError), ("alpha_pattern", {3: 8}, TypeError),
])
def test_a_bad_config_field_is_named_with_its_value_and_what_is_allowed(field, value, kind):
    with pytest.raises(kind) as err:
        LoraConfig(**{field: value})
    assert f"LoraConfig.{field}" in str(err.value) and "allowed" in str(err.value)
    assert type(err.value) is kind


def test_numpy_numbers_are_taken_as_plain_python_numbers():
    config = LoraConfig(r=np.int64(4), lora_alpha=np.float32(8.0), rank_pattern={"q": np.int8(2)})
    assert type(config.r) is int and type(config.lora_alpha) is float
    assert type(config.rank_pattern["q"]) is int


@pytest.mark.parametrize("key, name, matches", [
    ("q_proj|v_proj", "layers.0.attn.v_proj", True),  # an alternation is one group, as PEFT's
    ("q_proj|v_proj", "layers.0.attn.q_proj", True),
    ("q_proj|v_proj", "layers.0.attn.xv_proj", False),  # the old rule took "...v_proj$" alone
    ("proj", "layers.0.attn.q_proj", False),  # the key must follow a dot or start the name
    (r"layers\.1\.attn\.q_proj", "layers.1.attn.q_proj", True),
    ("attn.q_proj", "layers.1.attn.q_proj", True),
])
def test_patterns_match_as_peft_get_pattern_key(key, name, matches):
    assert (_pattern_value({key: 7}, name, 1) == 7) is matches


@pytest.mark.parametrize("idx, kind, says", [
    (np.array([1, 2]), ValueError, "shape (2,)"), (np.array(3), ValueError, "shape ()"),
    (np.zeros((1, 2, 3), int), ValueError, "shape (1, 2, 3)"), ([[1, 2]], TypeError, "list"),
    (np.zeros((0, 3), int), ValueError, "shape (0, 3)"),
    (np.zeros((2, 0), int), ValueError, "shape (2, 0)"),
    (np.zeros((1, 7), int), ValueError, "block_size"), (np.zeros((1, 2)), TypeError, "float64"),
])
def test_bad_model_inputs_are_named(idx, kind, says):
    model = GPT(CFG)
    calls = [lambda: model(idx)] + ([lambda: model.generate(idx, 2)] if says != "block_size"
                                    else [])  # generate crops a long context itself
    for call in calls:
        with pytest.raises(kind, match="allowed") as err:
            call()
        assert says in str(err.value)


@pytest.mark.parametrize("kwargs, says", [
    (dict(top_k=-2), "top_k"), (dict(top_k=0), "top_k"), (dict(top_k=2.5), "top_k"),
    (dict(temperature=-1.0), "temperature"), (dict(temperature="hot"), "temperature"),
    (dict(max_new_tokens=-1), "max_new_tokens"), (dict(max_new_tokens=1.5), "max_new_tokens"),
])
def test_bad_generate_settings_are_named(kwargs, says):
    with pytest.raises((TypeError, ValueError), match=says):
        GPT(CFG).generate(IDX, **{"max_new_tokens": 2, **kwargs})


def two_adapter_model():
    lm = get_lora_model(GPT(CFG), LoraConfig(r=2, init_lora_weights=False), seed=1)
    lm.add_adapter("b", LoraConfig(r=2, init_lora_weights=False), seed=2)
    return lm


@pytest.mark.parametrize("name", [None, 3, [], [None]])
def test_set_adapter_refuses_what_is_not_a_name(name):
    lm = two_adapter_model()
    with pytest.raises(TypeError, match="set_adapter"):
        lm.set_adapter(name)
    assert lm.active_adapters == ["default"]


@pytest.mark.parametrize("weights, kwargs, says", [
    ([1.0, math.inf], {}, r"weights\[1\]"), ([1.0, "2"], {}, r"weights\[1\]"),
    ([1.0, True], {}, r"weights\[1\]"), (1.0, {}, "weights"),
    ([1.0, 1.0], dict(svd_rank=1.5), "svd_rank"), ([1.0, 1.0], dict(svd_rank=0), "svd_rank"),
])
def test_add_weighted_adapter_refuses_bad_weights_and_ranks(weights, kwargs, says):
    lm = two_adapter_model()
    before = snapshot(lm)
    with pytest.raises((TypeError, ValueError), match=says):
        lm.add_weighted_adapter(["default", "b"], weights, "mix", **kwargs)
    assert set(lm.peft_config) == {"default", "b"}
    assert all(np.array_equal(v, before[k]) for k, v in snapshot(lm).items())


def test_deleting_the_active_adapter_activates_the_first_remaining_as_peft():
    lm = two_adapter_model()
    lm.set_adapter("b")
    out_b = lm(IDX).data
    lm.set_adapter("default")
    with pytest.warns(UserWarning, match="now 'b'"):
        lm.delete_adapter("default")
    assert lm.active_adapters == ["b"] and np.array_equal(lm(IDX).data, out_b)


def test_saving_after_deleting_the_only_adapter_is_a_clear_error(tmp_path):
    lm = get_lora_model(GPT(CFG), LoraConfig(r=2))
    lm.delete_adapter("default")
    assert lm.active_adapters == []
    with pytest.raises(ValueError, match="no active adapter"):
        lm.save_pretrained(tmp_path / "a")
    with pytest.raises(ValueError, match="adapters: \\[\\]"):
        lm.save_pretrained(tmp_path / "a", adapter_name="default")
    assert not (tmp_path / "a").exists()


def test_an_impossible_rank_is_refused_before_any_layer_is_wrapped():
    model = GPT(CFG)
    before = snapshot(model)
    with pytest.raises(ValueError, match="GiB"):
        get_lora_model(model, LoraConfig(r=2**40))
    assert list(snapshot(model)) == list(before)  # no layer wrapped
    assert all(np.array_equal(v, before[k]) for k, v in snapshot(model).items())


def test_a_failure_while_wrapping_puts_every_layer_back(monkeypatch):
    from minilora import lora_layer

    lm = get_lora_model(GPT(CFG), LoraConfig(r=2, target_modules=["q_proj"]))
    before, calls = snapshot(lm), []
    real = lora_layer.LoraLinear.update_layer

    def fail_on_the_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("out of memory")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(lora_layer.LoraLinear, "update_layer", fail_on_the_third)
    with pytest.raises(MemoryError):
        lm.add_adapter("b", LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert list(lm.peft_config) == ["default"]
    after = snapshot(lm)
    assert list(after) == list(before) and all(np.array_equal(after[k], before[k]) for k in before)
