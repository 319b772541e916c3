"""Decoding strategies against deterministic fake logits functions (no model needed)."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from llada_vla_ros.decoding import (
    STRATEGIES, CachedLogits, DecodeConfig, decode, decode_hierarchical,
    decode_parallel_threshold, decode_vanilla, generate, predict, run_strategy, split_evenly)

K, D, V = 5, 7, 32


class FakeLogits:
    """Deterministic logits that depend on the committed tokens (so every step differs)."""

    def __init__(self, seed=0, scale=3.0, K=K, D=D):
        g = torch.Generator().manual_seed(seed)
        n = K * D
        self.base = torch.randn(n, V, generator=g) * scale
        self.mix = torch.randn(n, n, generator=g)
        self.w = torch.randn(V, generator=g)
        self.calls = []

    def logits(self, classes):
        known = (classes[0] >= 0).float() * (classes[0].clamp_min(0).float() + 1) / V
        return (self.base + (self.mix @ known)[:, None] * self.w)[None]

    def __call__(self, classes):
        self.calls.append(classes.clone())
        return self.logits(classes)


def confidences(fn, classes):
    """Reference x0 / confidence at temperature 0, in numpy float64."""
    z = fn.logits(classes)[0].double().numpy()
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p.argmax(axis=1), p.max(axis=1)


def trace(fn, result):
    """(before, after) class vectors of every step."""
    states = [c[0].numpy() for c in fn.calls] + [result.classes.reshape(-1)]
    return list(zip(states[:-1], states[1:]))


def check_common(fn, result):
    assert result.forward_passes == result.steps == len(fn.calls)
    assert sum(result.committed_per_step) == K * D
    assert result.classes.shape == (K, D) and result.classes.dtype == np.int64
    assert ((result.classes >= 0) & (result.classes < V)).all()
    np.testing.assert_allclose(result.action_confidence, result.token_confidence.sum(axis=1),
                               rtol=1e-6)
    for before, after in trace(fn, result):
        done = before >= 0
        assert (after[done] == before[done]).all(), "a committed token was re-decoded"


# --------------------------------------------------------------------------- config


def test_config_defaults_match_policy_yaml():
    yaml_path = Path(__file__).resolve().parents[1] / "config" / "policy.yaml"
    params = yaml.safe_load(yaml_path.read_text())["/**"]["ros__parameters"]["decoding"]
    assert DecodeConfig.from_dict(params) == DecodeConfig()


def test_config_validation():
    with pytest.raises(ValueError, match="hierarchical, vanilla, parallel_threshold"):
        DecodeConfig(strategy="greedy")
    for bad in (dict(steps=0), dict(iterations_per_action=0), dict(temperature=-1.0),
                dict(threshold=1.5), dict(prompt_refresh_interval=-1), dict(steps=2.5)):
        with pytest.raises(ValueError):
            DecodeConfig(**bad)
    with pytest.raises(ValueError, match="unknown decoding option"):
        DecodeConfig.from_dict({"stepz": 3})
    cfg = DecodeConfig.from_dict({"strategy": "vanilla", "steps": None, "seed": None,
                                  "temperature": 1})
    assert (cfg.strategy, cfg.steps, cfg.seed, cfg.temperature) == ("vanilla", 10, None, 1.0)
    assert DecodeConfig.from_dict(None) == DecodeConfig()


def test_split_evenly():
    assert split_evenly(35, 10) == [4] * 5 + [3] * 5
    assert split_evenly(7, 2) == [4, 3]
    assert split_evenly(6, 3) == [2, 2, 2]


# --------------------------------------------------------------------------- vanilla


@pytest.mark.parametrize("steps", [10, 3, 35, 50])
def test_vanilla_commits_scheduled_most_confident(steps):
    fn = FakeLogits(seed=1)
    result = decode_vanilla(fn, K, D, steps=steps)
    check_common(fn, result)
    schedule = split_evenly(K * D, min(steps, K * D))
    assert result.committed_per_step == schedule
    for (before, after), k in zip(trace(fn, result), schedule):
        x0, conf = confidences(fn, torch.from_numpy(before)[None])
        masked = before < 0
        new = np.flatnonzero(masked & (after >= 0))
        expected = np.flatnonzero(masked)[np.argsort(-conf[masked], kind="stable")[:k]]
        assert sorted(new) == sorted(expected)
        assert (after[new] == x0[new]).all()


# --------------------------------------------------------------------------- hierarchical


@pytest.mark.parametrize("iters", [2, 1, 3, 7])
def test_hierarchical_one_action_per_step_by_confidence_sum(iters):
    fn = FakeLogits(seed=2)
    result = decode_hierarchical(fn, K, D, iterations_per_action=iters)
    check_common(fn, result)
    assert result.steps == K * iters
    shares = split_evenly(D, iters)
    done = [0] * K
    for before, after in trace(fn, result):
        x0, conf = confidences(fn, torch.from_numpy(before)[None])
        masked = before < 0
        new = np.flatnonzero(masked & (after >= 0))
        actions = set(new // D)
        assert len(actions) == 1, f"tokens committed in several actions {actions}"
        a = actions.pop()
        # Action confidence (eq. 8): masked tokens count their confidence, committed ones 1.
        sums = np.where(masked, conf, 1.0).reshape(K, D).sum(axis=1)
        sums[~masked.reshape(K, D).any(axis=1)] = -np.inf
        assert a == int(np.argmax(sums))
        assert len(new) == shares[done[a]]
        m = masked.reshape(K, D)[a]
        expected = a * D + np.flatnonzero(m)[np.argsort(-conf.reshape(K, D)[a][m],
                                                        kind="stable")[:shares[done[a]]]]
        assert sorted(new) == sorted(expected)
        assert (after[new] == x0[new]).all()
        done[a] += 1
    assert done == [iters] * K


def test_hierarchical_defaults_ten_steps_and_iterations_capped_at_D():
    fn = FakeLogits(seed=3)
    result = run_strategy(fn, K, D, DecodeConfig())
    assert result.steps == 10 and result.committed_per_step == [4, 3] * 5
    result = decode_hierarchical(FakeLogits(seed=3), K, D, iterations_per_action=20)
    assert result.steps == K * D and set(result.committed_per_step) == {1}


def test_hierarchical_can_switch_to_a_more_confident_fresh_action():
    """A half-decoded action is left when a fresh action's confidence sum is larger."""
    base = torch.full((K * D, V), 0.0)
    base[:, 0] = 10.0  # every token confident ...
    base[3:7] = 0.0  # ... except the last 4 tokens of action 0: uniform, conf 1/32
    base[0:3, 0] = 30.0  # action 0 first step: its 3 sure tokens...
    fn = FakeLogits()
    fn.base, fn.mix = base, torch.zeros(K * D, K * D)
    # step 0: action 0 sum = 3 + 4/32 < 7*~1 for the others -> action 1 picked first.
    result = decode_hierarchical(fn, K, D, iterations_per_action=2)
    firsts = [int(np.flatnonzero((b < 0) & (a >= 0))[0] // D) for b, a in trace(fn, result)]
    assert firsts[0] == 1 and firsts[-1] == 0  # the unsure action is decoded last
    check_common(fn, result)


def test_hierarchical_bit_for_bit_reproducible():
    runs = [decode_hierarchical(FakeLogits(seed=4), K, D) for _ in range(2)]
    assert np.array_equal(runs[0].classes, runs[1].classes)
    assert runs[0].token_confidence.tobytes() == runs[1].token_confidence.tobytes()
    assert runs[0].committed_per_step == runs[1].committed_per_step


# --------------------------------------------------------------------------- threshold


@pytest.mark.parametrize("threshold", [0.9, 0.5, 0.0, 1.0])
def test_parallel_threshold_commits_all_above_and_at_least_one(threshold):
    fn = FakeLogits(seed=5, scale=4.0)
    result = decode_parallel_threshold(fn, K, D, threshold=threshold)
    check_common(fn, result)
    for before, after in trace(fn, result):
        x0, conf = confidences(fn, torch.from_numpy(before)[None])
        masked = before < 0
        new = np.flatnonzero(masked & (after >= 0))
        above = np.flatnonzero(masked & (conf > threshold))
        if len(above):
            assert sorted(new) == sorted(above)
        else:
            assert list(new) == [np.flatnonzero(masked)[np.argmax(conf[masked])]]
        assert (after[new] == x0[new]).all()
    if threshold == 1.0:
        assert result.steps == K * D
    if threshold == 0.0:
        assert result.steps == 1


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_temperature_with_seed_is_reproducible(strategy):
    def run(seed, temperature=1.0):
        cfg = DecodeConfig(strategy=strategy, temperature=temperature, seed=seed, threshold=0.5)
        return run_strategy(FakeLogits(seed=6, scale=0.5), K, D, cfg)

    a, b, c = run(7), run(7), run(8)
    assert np.array_equal(a.classes, b.classes)
    assert a.token_confidence.tobytes() == b.token_confidence.tobytes()
    assert not np.array_equal(a.classes, c.classes)
    greedy = run(None, temperature=0.0)
    assert np.array_equal(greedy.classes, run(8, temperature=0.0).classes)
    assert not np.array_equal(a.classes, greedy.classes)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_gumbel_noise_samples_softmax_of_logits_over_temperature(temperature):
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0]).repeat(40000, 1)
    x0, conf = predict(logits, temperature, torch.Generator().manual_seed(0))
    freq = np.bincount(x0.numpy(), minlength=4) / len(x0)
    expected = torch.softmax(logits[0] / temperature, dim=0).numpy()
    np.testing.assert_allclose(freq, expected, atol=0.01)
    # the confidence is the (untempered) softmax probability of the sampled class
    p = torch.softmax(logits[0].double(), dim=0)
    assert torch.allclose(conf, p[x0])


# --------------------------------------------------------------------------- model wrapper


class FakeModel(torch.nn.Module):
    """The agreed model interface, with fake logits; records every action_logits call."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(chunk_size=K, action_dim=D, num_bins=V)
        self.fn = FakeLogits(seed=9)
        self.calls = []
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def prepare(self, image_rgb, instruction):
        return SimpleNamespace(instruction=instruction)

    def action_logits(self, obs, classes, cache=None, update_cache=False):
        assert not torch.is_grad_enabled()
        self.calls.append(("full" if cache is None else "cached", update_cache))
        new_cache = object() if (cache is None and update_cache) else None
        return self.fn.logits(classes), new_cache


@pytest.mark.parametrize("r, expected", [
    (0, [("full", True)] + [("cached", False)] * 9),
    (1, [("full", False)] * 10),
    (5, ([("full", True)] + [("cached", False)] * 4) * 2),
])
def test_decode_prefix_cache_refresh(r, expected):
    model = FakeModel()
    result = decode(model, model.prepare(None, "x"), DecodeConfig(prompt_refresh_interval=r))
    assert model.calls == expected
    assert result.forward_passes == 10
    assert result.full_passes == sum(kind == "full" for kind, _ in expected)
    assert set(result.timing) == {"vision_ms", "decode_ms", "total_ms"}
    # same logits for every mode here, so the same tokens as the bare strategy
    reference = decode_hierarchical(FakeLogits(seed=9), K, D)
    assert np.array_equal(result.classes, reference.classes)


def test_cached_logits_counts_and_generate_times_vision():
    model = FakeModel()
    fn = CachedLogits(model, None, refresh_interval=3)
    with torch.inference_mode():
        for _ in range(7):
            fn(torch.full((1, K * D), -1))
    assert (fn.forward_passes, fn.full_passes) == (7, 3)
    result = generate(model, np.zeros((4, 4, 3), np.uint8), "pick",
                      DecodeConfig(strategy="vanilla", steps=5))
    t = result.timing
    assert t["vision_ms"] >= 0 and t["total_ms"] == pytest.approx(t["vision_ms"] + t["decode_ms"])
    assert result.steps == 5
