"""Decoding and LladaVlaPolicy on the tiny model trained to overfit the synthetic examples."""
import shutil

import numpy as np
import pytest
import torch

from llada_vla_ros.action_tokenizer import STATS_FILE, ActionTokenizer
from llada_vla_ros.decoding import STRATEGIES, DecodeConfig, decode, run_strategy
from llada_vla_ros.policy.llada import LladaVlaPolicy
from llada_vla_ros.model import (LladaVlaConfig, LladaVlaForActions, build_tiny_tokenizer,
                                 from_pretrained)
from llada_vla_ros.policy import PolicyInputError, load_policy
from llada_vla_ros.training import synthetic_examples


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    model = from_pretrained(tiny_checkpoint)
    tok = ActionTokenizer.from_pretrained(tiny_checkpoint)
    examples = synthetic_examples(tok)
    return model, tok, examples


def mismatched_inputs(examples):
    """(image, another example's instruction): inputs the model was not trained on."""
    return [(a.image, b.instruction) for a, b in zip(examples, examples[1:] + examples[:1])]


@pytest.mark.parametrize("refresh", [0, 1])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_overfit_examples_decode_exactly(tiny, strategy, refresh):
    model, tok, examples = tiny
    cfg = DecodeConfig(strategy=strategy, prompt_refresh_interval=refresh)
    for e in examples:
        result = decode(model, model.prepare(e.image, e.instruction), cfg)
        assert np.array_equal(result.classes, tok.encode(e.actions)), e.instruction
        assert result.full_passes == (result.forward_passes if refresh == 1 else 1)
        if strategy == "hierarchical":
            assert result.forward_passes == 10 and result.committed_per_step == [4, 3] * 5


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_refresh_every_step_equals_uncached_decode(tiny, strategy):
    model, _, examples = tiny
    cfg = DecodeConfig(strategy=strategy, prompt_refresh_interval=1, threshold=0.5)
    for image, text in mismatched_inputs(examples):
        obs = model.prepare(image, text)
        with torch.inference_mode():
            exact = run_strategy(lambda c: model.action_logits(obs, c)[0], 5, 7, cfg)
        result = decode(model, obs, cfg)
        assert np.array_equal(result.classes, exact.classes)
        assert result.token_confidence.tobytes() == exact.token_confidence.tobytes()


def test_prefix_cache_is_exact_with_prefix_attention_mask():
    torch.manual_seed(0)
    config = LladaVlaConfig.tiny(prefix_attention_mask=True)
    model = LladaVlaForActions(config).eval()
    model.tokenizer = build_tiny_tokenizer(config.num_bins)
    e = synthetic_examples()[0]
    obs = model.prepare(e.image, e.instruction)
    for strategy in STRATEGIES:
        runs = [decode(model, obs, DecodeConfig(strategy=strategy, threshold=0.04,
                                                prompt_refresh_interval=r)) for r in (0, 1)]
        assert np.array_equal(runs[0].classes, runs[1].classes)
        np.testing.assert_allclose(runs[0].token_confidence, runs[1].token_confidence,
                                   rtol=1e-4)
        assert (runs[0].full_passes, runs[1].full_passes) == (1, runs[1].forward_passes)


def test_policy_predicts_training_actions_within_half_a_bin(tiny_checkpoint, tiny):
    _, tok, examples = tiny
    policy = LladaVlaPolicy.from_pretrained(tiny_checkpoint)
    assert policy.model_id == f"{tiny_checkpoint.name}:hierarchical"
    assert policy.chunk_size == 5
    for e in examples:
        chunk = policy.predict(e.image, e.instruction)
        assert chunk.actions.shape == (5, 7) and chunk.actions.dtype == np.float32
        assert np.all(np.abs(chunk.actions - e.actions) <= tok.half_bin + 1e-6)
        assert np.array_equal(chunk.tokens, tok.encode(e.actions))
        assert chunk.confidence.shape == (5,) and chunk.confidence.dtype == np.float32
        assert np.all((chunk.confidence > 0) & (chunk.confidence <= 7 + 1e-5))
        t = chunk.timing
        assert t["vision_ms"] > 0 and t["decode_ms"] > 0
        assert chunk.inference_ms == pytest.approx(t["vision_ms"] + t["decode_ms"])
    with pytest.raises(PolicyInputError):
        policy.predict(examples[0].image.astype(np.float32), "move left")
    with pytest.raises(PolicyInputError):
        policy.predict(examples[0].image, "  ")


def test_load_policy_with_decode_options_and_sampling_seed(tiny_checkpoint, tiny):
    _, _, examples = tiny
    policy = load_policy(str(tiny_checkpoint), decode={"strategy": "vanilla", "steps": 5,
                                                       "temperature": 2.0, "seed": 3})
    assert isinstance(policy, LladaVlaPolicy) and policy.model_id.endswith(":vanilla")
    image, text = mismatched_inputs(examples)[0]
    a, b = policy.predict(image, text), policy.predict(image, text)
    assert np.array_equal(a.tokens, b.tokens)  # same seed, same noise
    assert policy.last_result.forward_passes == 5


def test_missing_checkpoint_parts_are_clear_errors(tiny_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found"):
        LladaVlaPolicy.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        LladaVlaPolicy.from_pretrained(tmp_path)
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    (copy / STATS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=STATS_FILE):
        LladaVlaPolicy.from_pretrained(copy)
    with pytest.raises(ValueError, match="unknown decoding strategy"):
        LladaVlaPolicy.from_pretrained(tiny_checkpoint, decode={"strategy": "beam"})
    for f in copy.glob("*.safetensors"):
        f.unlink()
    shutil.copy(tiny_checkpoint / STATS_FILE, copy / STATS_FILE)
    with pytest.raises(FileNotFoundError, match="safetensors"):
        LladaVlaPolicy.from_pretrained(copy)
