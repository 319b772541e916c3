"""Action tokenizer: normalization, binning, round trip, gripper mask, stats files, ids."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llada_vla_ros.action_tokenizer import (ActionTokenizer, NormStats, load_stats_file,
                                            validate_action_token_ids)

Q01 = np.array([-0.03, -0.05, -0.02, -0.2, -0.1, -0.3, 0.0])
Q99 = np.array([0.04, 0.05, 0.06, 0.2, 0.15, 0.3, 1.0])
STATS = NormStats(Q01, Q99, [True] * 6 + [False])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([16, 32, 64]))
def test_round_trip_within_half_a_bin(seed, num_bins):
    rng = np.random.default_rng(seed)
    tok = ActionTokenizer(STATS, num_bins=num_bins)
    actions = rng.uniform(Q01, Q99, size=(5, 7))
    actions[:, 6] = rng.uniform(0.0, 1.0, size=5)
    classes = tok.encode(actions)
    assert classes.shape == (5, 7) and classes.dtype == np.int64
    assert classes.min() >= 0 and classes.max() < num_bins
    back = tok.decode(classes)
    assert back.dtype == np.float32
    err = np.abs(back - actions)
    assert np.all(err <= tok.half_bin + 1e-6), (err, tok.half_bin)
    np.testing.assert_array_equal(tok.encode(back), classes)  # centers re-encode to themselves


def test_half_bin_is_in_robot_units():
    tok = ActionTokenizer(STATS, num_bins=32)
    np.testing.assert_allclose(tok.half_bin[:6], (Q99 - Q01)[:6] / 2 / 32)
    assert tok.half_bin[6] == pytest.approx(1 / 32)


def test_gripper_mask_leaves_dimension_raw():
    tok = ActionTokenizer(STATS, num_bins=32)
    a = np.zeros((1, 7))
    a[0, 6] = 0.9
    c = tok.encode(a)
    assert c[0, 6] == int(np.floor((0.9 + 1) / 2 * 32))  # raw 0.9 in [-1, 1] bins: 30
    assert tok.decode(c)[0, 6] == pytest.approx(-1 + 30.5 * 2 / 32)
    # gripper statistics are irrelevant while its mask is False ...
    other = NormStats(Q01, np.r_[Q99[:6], 5.0], STATS.mask)
    assert ActionTokenizer(other).encode(a)[0, 6] == c[0, 6]
    # ... and matter once it is normalized
    normalized = NormStats(Q01, np.r_[Q99[:6], 5.0], [True] * 7)
    assert ActionTokenizer(normalized).encode(a)[0, 6] != c[0, 6]


def test_unnormalize_formula_and_clipping():
    tok = ActionTokenizer(STATS, num_bins=32)
    big = np.tile(Q99 + 1.0, (2, 1))
    small = np.tile(Q01 - 1.0, (2, 1))
    assert np.all(tok.encode(big)[:, :6] == 31) and np.all(tok.encode(small)[:, :6] == 0)
    n = np.array([[-0.5, 0, 0.5, 1, -1, 0.25, 0.7]])
    expected = 0.5 * (n + 1) * (Q99 - Q01) + Q01
    expected[0, 6] = 0.7
    np.testing.assert_allclose(STATS.unnormalize(n), expected)


def test_bad_inputs_raise():
    tok = ActionTokenizer(STATS)
    with pytest.raises(ValueError):
        tok.encode(np.zeros((5, 6)))
    with pytest.raises(ValueError):
        tok.encode(np.full((5, 7), np.nan))
    with pytest.raises(ValueError):
        tok.decode(np.full((5, 7), 32))
    with pytest.raises(ValueError):
        tok.decode(np.zeros((5, 7), dtype=np.float32))
    with pytest.raises(ValueError):
        NormStats([0, 1], [1, 0], [True, True])  # q99 < q01


def test_stats_from_actions():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 5, 7))
    s = NormStats.from_actions(a)
    np.testing.assert_allclose(s.q01, np.quantile(a.reshape(-1, 7), 0.01, axis=0))
    np.testing.assert_allclose(s.q99, np.quantile(a.reshape(-1, 7), 0.99, axis=0))
    assert s.mask.tolist() == [True] * 6 + [False]


def test_token_id_mapping_and_validation():
    tok = ActionTokenizer(STATS)
    assert tok.action_token_ids == list(range(126084, 126116))
    ids = tok.classes_to_token_ids(np.array([[0, 31, -1]]))
    assert ids.tolist() == [[126084, 126115, 126336]]
    assert tok.token_ids_to_classes(np.array([126084, 126115, 126336, 5])).tolist() == [
        0, 31, -100, -100]
    with pytest.raises(ValueError, match="mask"):
        validate_action_token_ids(range(126320, 126352), 32, 126336)
    with pytest.raises(ValueError, match="duplicates"):
        validate_action_token_ids([1] * 32, 32, 126336)
    with pytest.raises(ValueError, match="exactly"):
        validate_action_token_ids(range(10), 32, 126336)
    with pytest.raises(ValueError, match="mask"):
        ActionTokenizer(STATS, action_token_ids=range(126305, 126337))


def test_stats_file_round_trip_and_keys(tmp_path):
    tok = ActionTokenizer(STATS, num_bins=32)
    path = tok.save_pretrained(tmp_path, "bridge_orig")
    table = json.loads(path.read_text())
    assert set(table["bridge_orig"]["action"]) == {"q01", "q99", "mask"}
    loaded = ActionTokenizer.from_pretrained(tmp_path)  # one key: unnorm_key optional
    assert loaded.unnorm_key == "bridge_orig"
    np.testing.assert_allclose(loaded.stats.q99, Q99)
    assert loaded.stats.mask.tolist() == STATS.mask.tolist()

    ActionTokenizer(NormStats(Q01 * 2, Q99 * 2, STATS.mask)).save_pretrained(tmp_path, "fractal")
    with pytest.raises(ValueError, match="bridge_orig.*fractal"):
        ActionTokenizer.from_pretrained(tmp_path)
    with pytest.raises(KeyError, match="bridge_orig"):
        load_stats_file(tmp_path, "nope")
    frac = ActionTokenizer.from_pretrained(tmp_path, unnorm_key="fractal")
    np.testing.assert_allclose(frac.stats.q99, Q99 * 2)


def test_from_pretrained_reads_layout_from_config(tmp_path):
    ActionTokenizer(STATS, num_bins=16, action_token_ids=range(16)).save_pretrained(tmp_path, "k")
    (tmp_path / "config.json").write_text(json.dumps(
        {"num_bins": 16, "action_token_ids": list(range(300, 316)), "mask_token_id": 299,
         "chunk_size": 3}))
    tok = ActionTokenizer.from_pretrained(tmp_path)
    assert tok.num_bins == 16 and tok.action_token_ids[0] == 300
    assert tok.mask_token_id == 299 and tok.chunk_size == 3


def test_module_does_not_import_torch():
    code = ("import sys, llada_vla_ros.action_tokenizer; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
