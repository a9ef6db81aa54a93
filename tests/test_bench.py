"""``minilora bench``: the quick mode runs end to end through the CLI and writes well-formed JSON.

No timing is asserted (machines differ and are noisy); the structure and the FLOP arithmetic are.
"""
import json

import pytest

from minilora import cli
from minilora.bench import steps as bench
from minilora.model import GPTConfig

pytestmark = pytest.mark.fast


def test_quick_bench_through_the_cli(tmp_path, capsys):
    path = tmp_path / "out" / "bench.json"
    assert cli.main(["bench", "--quick", "--json", str(path)]) == 0
    table = capsys.readouterr().out
    assert "training step" in table and "GEMM" in table
    result = json.loads(path.read_text())
    assert not list(path.parent.glob(".bench-*"))  # the atomic write left no temporary behind

    assert set(result) == {"settings", "env", "gemm", "handoff_s", "configs"}
    assert result["handoff_s"] is None or result["handoff_s"] > 0
    env = result["env"]
    for key in ("numpy", "blas", "threads", "cpu", "cpuidle", "OPENBLAS_CORETYPE",
                "OPENBLAS_L2_SIZE"):
        assert key in env
    assert result["gemm"]["peak_gflops"] > 0
    assert all(row["gflops"] > 0 and row["engine_gflops"] > 0 and row["one_thread_gflops"] > 0
               for row in result["gemm"]["sizes"])

    (name, cfg), = result["configs"].items()
    assert name == "tiny" and cfg["tokens"] == cfg["batch"] * cfg["seq"]
    train, infer, memory = cfg["train"], cfg["infer"], cfg["memory"]
    for mode in ("full", "lora"):
        row = train[mode]
        assert row["step_s"] > 0 and row["tokens_per_s"] > 0 and 0 < row["peak_fraction"]
        assert row["reference_step_s"] > 0  # the same step with the fast path off
        assert row["matmul_gflop"] > 0
        parts = memory[mode]
        assert parts["total_peak"] == (parts["parameters"] + parts["optimizer_states"]
                                       + parts["step_peak"])
        assert parts["activations"] > 0 and parts["gradients"] > 0
    assert train["lora"]["trainable_params"] < train["full"]["trainable_params"]
    assert memory["lora"]["optimizer_states"] < memory["full"]["optimizer_states"]
    assert memory["lora"]["gradients"] < memory["full"]["gradients"]
    for mode in ("base", "lora_unmerged", "lora_merged"):
        assert infer[mode]["forward_s"] > 0
    assert "torch" not in env or "over_torch" in train["full"]
    ops = cfg["ops"]
    assert {r["op"] for r in ops["ops"]} >= {"attention", "gelu", "layer_norm", "lm_head"}
    assert all(r["seconds"] > 0 and r["step_seconds"] == r["per_step"] * r["seconds"]
               for r in ops["ops"])
    assert ops["step_s"] > 0 and ops["rest_s"] == pytest.approx(
        ops["step_s"] - sum(r["step_seconds"] for r in ops["ops"]))
    assert "where a full fine-tuning step goes" in table


@pytest.mark.parametrize("name", ["tiny", "sweep", "medium"])
def test_op_counts_are_the_models_layers(name):
    """The breakdown counts each op as often as the model has the layer that runs it."""
    from minilora.bench import ops as bench_ops
    from minilora.model import GPT
    from minilora.nn import LayerNorm, Linear

    cfg, batch = bench.CONFIGS[name]
    shapes = bench_ops.op_shapes(cfg, batch)
    model = GPT(cfg, seed=0)
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    assert sum(n for op, (_, n) in shapes.items() if op.startswith(("linear", "lm_head"))) \
        == len(linears)
    for op, (shape, n) in shapes.items():  # each Linear's shape is counted as often as it occurs
        if op.startswith(("linear", "lm_head")):
            assert n == sum(m.weight.shape == (shape[3], shape[2]) and (m.bias is None)
                            == (op == "lm_head") for m in linears)
    assert shapes["layer_norm"][1] == sum(isinstance(m, LayerNorm) for m in model.modules())
    assert shapes["attention"][1] == shapes["gelu"][1] == cfg.n_layer


@pytest.mark.parametrize("n", [1, 2, 3])
def test_handoff_is_timed_only_where_work_is_shared(n):
    from minilora.bench import ops as bench_ops
    from minilora.fast import threads

    before = threads.num_threads()
    threads.set_num_threads(n)
    try:
        seconds = bench_ops.handoff_seconds(repeats=2, min_sample_s=0.0)
    finally:
        threads.set_num_threads(before)
    assert seconds is None if n == 1 else seconds > 0


def test_unknown_config_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown bench config"):
        cli.main(["bench", "--quick", "--configs", "huge"])


def test_matmul_flops_by_hand():
    """One layer, counted by hand: 6 Linears, attention, lm_head; LoRA drops every dW."""
    cfg = GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=2, n_embd=8)
    B, T, C, V = 3, 4, 8, 10
    N = B * T
    linears = 4 * 2 * N * C * C + 2 * (2 * N * C * 4 * C) + 2 * N * C * V
    attention = 2 * (2 * B * T * T * C)
    full = bench.matmul_flops(cfg, B, T)
    assert full["forward"] == linears + attention
    assert full["backward"] == 2 * full["forward"]  # dX and dW for every product
    r = 2
    lora = bench.matmul_flops(cfg, B, T, lora_r=r, target_modules=("q_proj", "v_proj"))
    thin = 2 * (2 * N * C * r + 2 * N * r * C)  # x Aᵀ and h Bᵀ on q_proj and v_proj
    assert lora["forward"] == full["forward"] + thin
    # Backward: layer 0's input needs no gradient, so q/k/v get no dX; attention skips dK;
    # o_proj, the MLP and lm_head pass dX down; the adapters add dB, dh and dA.
    dx = 2 * N * C * C + 2 * (2 * N * C * 4 * C) + 2 * N * C * V
    attention_bwd = 3 * (2 * B * T * T * C)
    adapters = 2 * (2 * (2 * N * r * C) + 2 * N * C * r)
    assert lora["backward"] == dx + attention_bwd + adapters


def test_the_readme_table_is_the_committed_bench_run():
    """Text equals data: the README's bench table is what the committed bench.json gives."""
    import json
    import pathlib

    from minilora.bench.report import markdown_table

    root = pathlib.Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme.split("<!-- bench:table -->\n")[1].split("<!-- /bench:table -->")[0]
    result = json.loads((root / "figures" / "bench.json").read_text())
    assert block.strip() == markdown_table(result, "medium")
