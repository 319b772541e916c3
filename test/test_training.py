"""Training: LSC loss (eq. 5-7), masking, the loop, and the tiny checkpoint."""
import math

import numpy as np
import pytest
import torch

from llada_vla_ros import training
from llada_vla_ros.action_tokenizer import ActionTokenizer
from llada_vla_ros.model import LladaVlaConfig, LladaVlaForActions, build_tiny_tokenizer
from llada_vla_ros.training import (TINY_STATS, TINY_UNNORM_KEY, localize_labels, lsc_loss,
                                    masked_diffusion_loss, sample_mask, synthetic_examples, train)

IDS = list(range(264, 296))  # tiny action token ids


def make_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = LladaVlaForActions(LladaVlaConfig.tiny(**overrides))
    model.tokenizer = build_tiny_tokenizer()
    return model


def tiny_tokenizer(model):
    c = model.config
    return ActionTokenizer(TINY_STATS, action_token_ids=c.action_token_ids,
                           mask_token_id=c.mask_token_id)


# ----------------------------------------------------------------------------- loss

def test_localize_labels_eq6():
    labels = torch.tensor([[264, 295, 5, 261, 280]])
    assert localize_labels(labels, IDS).tolist() == [[0, 31, -100, -100, 16]]


@pytest.mark.parametrize("reweight", [True, False])
def test_lsc_loss_ignores_non_action_and_unmasked_positions(reweight):
    g = torch.Generator().manual_seed(0)
    B, L = 2, 12
    logits = torch.randn(B, L, 32, generator=g, requires_grad=True)
    labels = torch.tensor(IDS[:L] * B).view(B, L)
    labels[:, :4] = torch.tensor([5, 17, 256, 261])  # prompt-like, non-action labels
    masked = torch.rand(B, L, generator=g) < 0.6
    masked[:, :4] = True  # even when "masked", non-action positions must not count
    masked[:, 4] = True
    t = torch.tensor([0.3, 0.8])
    loss = lsc_loss(logits, labels, masked, t, IDS, reweight)
    loss.backward()
    grad = logits.grad
    assert torch.all(grad[:, :4] == 0)  # non-action labels: ignored
    assert torch.all(grad[~masked] == 0)  # unmasked action positions: ignored
    assert torch.all(grad[:, 4].abs().sum(-1) > 0)  # masked action positions count
    # the same loss as on the action positions alone
    alone = lsc_loss(logits[:, 4:], labels[:, 4:], masked[:, 4:], t, IDS, reweight)
    torch.testing.assert_close(loss, alone)
    # and it matches eq. 5 / eq. 7 written out
    ce = torch.nn.functional.cross_entropy(logits[:, 4:].reshape(-1, 32).detach(),
                                           (labels[:, 4:] - 264).reshape(-1), reduction="none")
    ce = ce.view(B, L - 4) * masked[:, 4:]
    expected = (ce / t[:, None]).sum() / ce.numel() if reweight else ce.sum() / masked[:, 4:].sum()
    torch.testing.assert_close(loss.detach(), expected)


def test_lsc_classifies_over_action_tokens_only():
    """With an all-zero LM head, LSC is uniform over 32 classes, full-vocab over V."""
    model = make_model()
    torch.nn.init.zeros_(model.lm_head.weight)
    ex = synthetic_examples(tiny_tokenizer(model))[:2]
    images, prompts, classes = training.encode_examples(model, tiny_tokenizer(model), ex)
    pixels = training.batch_pixels(model, images, range(len(images)))
    losses = {}
    for kind in training.LOSS_TYPES:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            losses[kind] = float(training.diffusion_step_loss(
                model, pixels, prompts, classes, gen, kind, reweight=False))
    assert losses["lsc"] == pytest.approx(math.log(32), rel=1e-5)
    assert losses["full_vocab"] == pytest.approx(math.log(model.config.vocab_size), rel=1e-5)
    with pytest.raises(ValueError, match="loss_type"):
        training.diffusion_step_loss(model, pixels, prompts, classes, gen, "mse")


def test_sample_mask_masks_at_least_one():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        masked, t = sample_mask(64, 35, 1e-3, gen)
        assert masked.any(1).all()
        assert (t >= 1e-3).all() and (t <= 1).all()
    masked, t = sample_mask(4000, 35, 1e-3, gen)
    ratio = masked.float().mean(1)
    assert torch.corrcoef(torch.stack([ratio, t]))[0, 1] > 0.9  # ratio follows t


def test_masked_diffusion_loss_full_vocab_labels():
    logits = torch.zeros(1, 3, 10)
    logits[0, :, 7] = 5.0
    labels = torch.tensor([[7, 7, -100]])
    masked = torch.tensor([[True, False, True]])
    loss = masked_diffusion_loss(logits, labels, masked, torch.tensor([0.5]), reweight=False)
    expected = -torch.log_softmax(logits[0, 0], -1)[7]
    torch.testing.assert_close(loss, expected)


# ----------------------------------------------------------------------------- loop

@pytest.mark.parametrize("loss_type", training.LOSS_TYPES)
def test_loss_decreases_when_overfitting_one_batch(loss_type):
    model = make_model(seed=3)
    tok = tiny_tokenizer(model)
    ex = synthetic_examples(tok)[:2]
    images, prompts, classes = training.encode_examples(model, tok, ex)
    pixels = training.batch_pixels(model, images, range(len(images)))

    def fixed_batch_loss():  # the same masks every time
        with torch.no_grad():
            return float(training.diffusion_step_loss(
                model, pixels, prompts, classes, torch.Generator().manual_seed(123),
                loss_type, reweight=False))

    before = fixed_batch_loss()
    losses = train(model, tok, ex, steps=50, lr=3e-3, batch_size=4, seed=0,
                   loss_type=loss_type, reweight=False, warmup_steps=10, progress=False)
    assert len(losses) == 50 and all(np.isfinite(losses))
    assert not model.training
    after = fixed_batch_loss()
    assert after < 0.3 * before, (before, after)


def test_frozen_parameters_stay_put_and_gradients_are_clipped(monkeypatch):
    model = make_model(seed=2)
    tok = tiny_tokenizer(model)
    model.vision_tower.requires_grad_(False)
    vision = {k: v.clone() for k, v in model.vision_tower.state_dict().items()}
    projector = {k: v.clone() for k, v in model.mm_projector.state_dict().items()}
    norms = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, max_norm, **kw: norms.append(max_norm)
                        or clip(params, max_norm, **kw))
    train(model, tok, synthetic_examples(tok)[:2], steps=3, lr=1e-2, max_grad_norm=0.5,
          progress=False)
    assert norms == [0.5] * 3
    for k, v in model.vision_tower.state_dict().items():
        torch.testing.assert_close(v, vision[k], rtol=0, atol=0)
    assert any(not torch.equal(v, projector[k])
               for k, v in model.mm_projector.state_dict().items())
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(model, tok, synthetic_examples(tok)[:1], steps=1, progress=False)


def test_train_is_seedable_and_accepts_tuples():
    runs = []
    for _ in range(2):
        model = make_model(seed=7)
        ex = [(e.image, e.instruction, e.actions) for e in synthetic_examples()[:2]]
        runs.append(train(model, tiny_tokenizer(model), ex, steps=3, lr=1e-3, seed=5,
                          batch_size=3, progress=False))
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="5x7"):
        bad = [(synthetic_examples()[0].image, "go", np.zeros((4, 7)))]
        train(make_model(), tiny_tokenizer(make_model()), bad, steps=1, progress=False)


# ----------------------------------------------------------------------------- tiny checkpoint

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert training.main(["--tiny", str(out)]) == 0  # the CLI entry point
    return out


def test_tiny_checkpoint_files_load(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json",
            "dataset_statistics.json"} <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    model = LladaVlaForActions.from_pretrained(tiny_dir)
    tok = ActionTokenizer.from_pretrained(tiny_dir)
    assert tok.unnorm_key == TINY_UNNORM_KEY
    assert tok.action_token_ids == model.config.action_token_ids
    assert tok.mask_token_id == model.config.mask_token_id and tok.num_bins == 32


def test_tiny_checkpoint_reproduces_training_tokens(tiny_dir):
    model = LladaVlaForActions.from_pretrained(tiny_dir)
    tok = ActionTokenizer.from_pretrained(tiny_dir)
    examples = synthetic_examples(tok)
    targets = [tok.encode(e.actions).reshape(-1) for e in examples]
    assert len({t.tobytes() for t in targets}) == len(examples)  # distinct action chunks
    for e, target in zip(examples, targets):
        obs = model.prepare(e.image, e.instruction)
        target = torch.as_tensor(target)
        # all masked
        logits, _ = model.action_logits(obs, torch.full((1, 35), -1))
        assert torch.equal(logits[0].argmax(-1), target)
        # all but one revealed, for every position
        masked = torch.eye(35, dtype=torch.bool)
        logits, _ = model.action_logits(obs, torch.where(masked, -1, target.expand(35, 35)))
        assert torch.equal(logits[masked].argmax(-1), target)
        # decoded actions are the training actions (they sit on bin centers)
        np.testing.assert_allclose(tok.decode(target.numpy().reshape(5, 7)), e.actions,
                                   atol=1e-6)
