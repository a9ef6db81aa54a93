"""The memorization task kv<N> (tasks.py): a fixed table of N random key → value pairs."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora import tasks
from minilora.model import GPT, GPTConfig
from minilora.testing import seeds
from minilora.train import IGNORE_INDEX, evaluate

pytestmark = pytest.mark.lesson06

L = tasks.SEQ_LEN
sizes = st.integers(1, 3000)


@pytest.mark.law(lesson=6)
@given(sizes)
def test_n_keys_are_distinct_so_n_pairs_are(n):
    """kv_pairs(N) holds N distinct keys (rows of L content tokens) and N values of L content
    tokens: N distinct pairs, each key with one value.

    Source: Thinking Machines 2025, "LoRA Without Regret" (capacity: data measured in what must
    be stored); the task's definition in tasks.py.
    """
    keys, values = tasks.kv_pairs(n)
    assert keys.shape == values.shape == (n, L) and keys.dtype == values.dtype == np.int64
    assert len(np.unique(keys, axis=0)) == n
    assert keys.min() >= 0 and max(keys.max(), values.max()) < tasks.N_CONTENT


@pytest.mark.law(lesson=6)
@given(sizes, sizes)
def test_a_larger_table_extends_a_smaller_one(n, m):
    """For N <= M the table kv<N> is the first N pairs of kv<M>: a larger N adds pairs and
    changes none, so a capacity curve over N compares nested tables.

    Source: the task's definition in tasks.py (keys and values drawn from fixed keyed streams).
    """
    n, m = sorted([n, m])
    small, large = tasks.kv_pairs(n), tasks.kv_pairs(m)
    np.testing.assert_array_equal(small[0], large[0][:n])
    np.testing.assert_array_equal(small[1], large[1][:n])


@given(st.integers(1, 200), st.integers(1, 16), seeds, st.integers(0, 10**6))
def test_batches_ask_stored_pairs_and_are_keyed(n, batch_size, seed, step):
    task = tasks.kv_task(n)
    inputs, targets = tasks.batch(task, batch_size, seed, step)
    assert inputs.shape == targets.shape == (batch_size, 2 * L + 1)
    assert np.all(targets[:, :L + 1] == IGNORE_INDEX)
    assert np.all(np.isin(inputs[:, 0], [tasks.F0, tasks.F1]))
    assert np.all(inputs[:, L + 1] == tasks.SEP)
    keys, values = tasks.kv_pairs(n)
    table = {tuple(k): tuple(v) for k, v in zip(keys, values)}
    for x, y in zip(inputs[:, 1:L + 1], targets[:, L + 1:]):  # y: targets L+1 .. 2L
        assert table[tuple(x)] == tuple(y)
    again = tasks.batch(task, batch_size, seed, step)
    np.testing.assert_array_equal(inputs, again[0])
    np.testing.assert_array_equal(targets, again[1])


def test_eval_set_asks_every_stored_pair_in_order():
    keys, values = tasks.kv_pairs(5)
    (inputs, targets), = tasks.eval_set("kv5", 10, seed=3)
    np.testing.assert_array_equal(inputs[:, 1:L + 1], np.concatenate([keys, keys]))
    np.testing.assert_array_equal(targets[:, L + 1:], np.concatenate([values, values]))
    (first, _), = tasks.eval_set("kv5", 3, seed=3)  # n < N: the first n pairs
    np.testing.assert_array_equal(first[:, 1:L + 1], keys[:3])
    assert not np.array_equal(tasks.eval_set("kv5", 10, seed=4)[0][0][:, 0], inputs[:, 0])


def test_steps_draw_different_pairs():
    a, b = tasks.batch("kv1000", 32, seed=0, step=0), tasks.batch("kv1000", 32, seed=0, step=1)
    assert not np.array_equal(a[0], b[0])


def test_the_base_model_behaviour_scores_chance():
    """The base model copies x after F0 and reverses it after F1; values are drawn independently
    of x and F, so that (like any predictor that has not seen the table) scores 1/64 per token
    in expectation. Checked on 4096 pairs (32768 tokens) to 4 standard errors, with the copyrev
    rule itself and with an untrained GPT through ``train.evaluate``."""
    (inputs, targets), = tasks.eval_set("kv4096", 4096, seed=0, batch_size=4096)
    chance, tokens = 1 / tasks.N_CONTENT, targets[:, L + 1:].size
    bound = 4 * np.sqrt(chance * (1 - chance) / tokens)
    copyrev = tasks.answers("copyrev", inputs[:, 1:L + 1], inputs[:, 0])
    assert abs(np.mean(copyrev == targets[:, L + 1:]) - chance) < bound
    cfg = GPTConfig(vocab_size=tasks.VOCAB_SIZE, block_size=tasks.BLOCK_SIZE, n_layer=1, n_head=2,
                    n_embd=16)
    accuracy = evaluate(GPT(cfg, seed=0), tasks.eval_set("kv4096", 4096, seed=0))["accuracy"]
    assert abs(accuracy - chance) < bound


@pytest.mark.parametrize("n, kind", [(0, ValueError), (-3, ValueError), (2.0, TypeError),
                                     (True, TypeError), ("8", TypeError)])
def test_bad_n_raises_naming_it(n, kind):
    with pytest.raises(kind, match="n_pairs"):
        tasks.kv_task(n)
    with pytest.raises(kind, match="n_pairs"):
        tasks.kv_pairs(n)


@pytest.mark.parametrize("name", ["kv0", "kv", "kv007", "kv-3", "kvx", "kv2.5"])
def test_bad_kv_names_raise(name):
    with pytest.raises(ValueError, match="kv<N> with N >= 1"):
        tasks.batch(name, 2, seed=0, step=0)
    with pytest.raises(ValueError, match="kv<N> with N >= 1"):
        tasks.eval_set(name, 4)


def test_kv_tasks_have_no_rule_for_unseen_sources():
    with pytest.raises(ValueError, match="kv_pairs"):
        tasks.answers("kv4", np.zeros((1, L), dtype=np.int64), np.array([tasks.F0]))
    assert tasks.kv_size("rev") is None and tasks.kv_size(tasks.kv_task(12)) == 12
