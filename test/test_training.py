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


def test_sample_mask_follows_t_without_forcing_a_mask():
    gen = torch.Generator().manual_seed(0)
    masked, t = sample_mask(4000, 35, 1e-3, gen)
    assert (t >= 1e-3).all() and (t <= 1).all()
    ratio = masked.float().mean(1)
    assert torch.corrcoef(torch.stack([ratio, t]))[0, 1] > 0.9  # ratio follows t
    # LLaDA's forward process: a row with a small t may have nothing masked ((1-t)^35)
    small = t < 0.01
    assert (~masked[small].any(1)).float().mean() > 0.5


def test_sample_mask_keeps_the_1_over_t_estimator_unbiased():
    """E[#masked / t] = L for the eq. 5 weights; forcing one mask in empty rows adds about
    ln(1 / (L eps)) - 0.58 = 2.8 (it was 37.8 for L = 35)."""
    gen = torch.Generator().manual_seed(1)
    masked, t = sample_mask(200_000, 35, 1e-3, gen)
    weight = masked.sum(1) / t
    assert abs(float(weight.mean()) - 35.0) < 4 * float(weight.std()) / 200_000 ** 0.5 + 0.05


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
    norms = []  # the gradient norm each optimizer step sees (whoever clips: accelerate, torch)
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.nn.utils.get_total_norm(grads)))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    train(model, tok, synthetic_examples(tok)[:2], steps=3, lr=1e-2, max_grad_norm=0.5,
          progress=False)
    # each step clipped to the limit (the raw norms of this model are well above 0.5)
    assert norms == pytest.approx([0.5] * 3, rel=1e-4), norms
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


def test_training_in_segments_is_one_run_not_restarts():
    """Trainer.run(n) continues the optimizer, schedule and data order: 3 + 3 steps give
    the 6-step run's losses and weights; two calls of train() would replay step 0."""
    from llada_vla_ros.finetuning.loop import FitConfig, Trainer

    cfg = FitConfig(steps=6, lr=3e-3, global_batch=3, seed=4, warmup_steps=2)
    ex = synthetic_examples()
    whole = make_model(seed=1)
    a = Trainer(whole, tiny_tokenizer(whole), ex, cfg, progress=False).run().losses
    parts = make_model(seed=1)
    trainer = Trainer(parts, tiny_tokenizer(parts), ex, cfg, progress=False)
    trainer.run(3)
    assert trainer.step == 3 and not trainer.finished
    b = trainer.run(3).losses
    assert b == a and trainer.finished
    for k, v in whole.state_dict().items():
        assert torch.equal(parts.state_dict()[k], v), k


def test_train_reads_a_stream():
    model = make_model(seed=3)
    tok = tiny_tokenizer(model)
    ex = synthetic_examples(tok)
    read = []
    stream = (read.append(1) or e for _ in range(100) for e in ex)  # read once, in order
    losses = train(model, tok, stream, steps=40, lr=3e-3, batch_size=4, reweight=False,
                   progress=False)
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert len(read) == 160  # read as trained on, not loaded (and encoded) at once
    with pytest.raises(ValueError, match="batch_size"):
        train(model, tok, iter(ex), steps=1, progress=False)


def test_time_budget_stops_the_run_and_says_so():
    from llada_vla_ros.finetuning.loop import FitConfig, fit

    model = make_model()
    r = fit(model, tiny_tokenizer(model), synthetic_examples(),
            FitConfig(steps=10_000, global_batch=2, max_seconds=0.5), progress=False)
    assert 0 < r.steps < 10_000 and r.stopped == "time budget of 0.5 s"
    assert r.seconds >= 0.5


def test_random_shift_moves_the_image_by_whole_pixels():
    from llada_vla_ros.finetuning.loop import position_masks, random_shift
    from llada_vla_ros.model.processing import ImageInput

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = random_shift(ImageInput(x, (8, 8)), (2, 1, -2)).pixels
    assert out.shape == x.shape
    torch.testing.assert_close(out[..., 2:, :7], x[..., :6, 1:])  # content moved by (-1, +2)
    torch.testing.assert_close(out[..., 0, :7], x[..., 0, 1:])  # edge rows replicated
    assert torch.equal(random_shift(ImageInput(x, (8, 8)), (2, 0, 0)).pixels, x)
    masked, t, shifts = position_masks(3, range(50), 35, 1e-3, 0, shift=4)
    assert {s[0] for s in shifts} == {4}
    assert min(min(s[1:]) for s in shifts) == -4 and max(max(s[1:]) for s in shifts) == 4
    # drawing shifts after the masks leaves the masks of a run without shift unchanged
    plain, t0, none = position_masks(3, range(50), 35, 1e-3, 0)
    assert none is None and torch.equal(plain, masked) and torch.equal(t0, t)


def test_validation_metrics_and_the_collapse_warning():
    from llada_vla_ros.finetuning.validation import collapsed_dims, describe, evaluate

    model = make_model(seed=5)
    tok = tiny_tokenizer(model)
    ex = synthetic_examples(tok)
    before = evaluate(model, tok, ex)
    assert set(before) >= {"loss", "token_accuracy", "token_accuracy_per_dim", "bins_used",
                           "target_bins", "collapsed"}
    assert before == evaluate(model, tok, ex)  # fixed masks: the same figures each time
    # a model that predicts one bin per dimension whatever the input is called collapsed
    assert collapsed_dims([1, 1, 9, 2, 2, 2, 2], [12, 20, 12, 3, 2, 2, 2]) == ["x", "y"]
    # ... unless its targets are mostly one bin (a dimension the expert keeps still, + noise)
    assert collapsed_dims([1, 1, 9, 2, 2, 2, 2], [12, 20, 12, 3, 2, 2, 2],
                          [0.1, 0.8, 0.1, 0.5, 0.5, 0.5, 0.5]) == ["x"]
    assert all(0 < m <= 1 for m in before["target_majority"])
    line = describe({**before, "step": 7, "collapsed": ["x"], "bins_used": [1] * 7,
                     "target_bins": [12] * 7})
    assert "step 7" in line and "warning: predictions collapse" in line and "x 1 of 12" in line
    losses = train(model, tok, ex, steps=150, lr=3e-3, batch_size=8, reweight=False,
                   warmup_steps=20, cosine=True, progress=False)
    after = evaluate(model, tok, ex)
    assert after["loss"] < 0.2 * before["loss"] and after["token_accuracy"] > 0.9
    assert losses[-1] < losses[0]


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
