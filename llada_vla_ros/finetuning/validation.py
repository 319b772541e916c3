"""Held-out metrics during training, and the early warning of a collapsed model.

``evaluate`` runs a model over validation examples in batches and reports:

- ``loss``: the masked-diffusion loss (eq. 7: mean cross-entropy over masked positions)
  under masks drawn from a fixed seed, so every evaluation of a run sees the same masks;
- ``token_accuracy`` (and per action dimension): argmax of one pass with every action
  position masked, i.e. the first decoding step's guess for each token (an autoregressive
  model: each token given the true earlier ones, teacher forcing);
- ``bins_used`` / ``target_bins``: distinct classes among those predictions and among the
  targets, per dimension. A model that predicts the most frequent bins whatever the image
  (what the first default fine-tunes did) uses a handful of bins where the targets use
  dozens: ``collapsed`` names such dimensions. A dimension whose targets sit mostly in one
  bin (``target_majority`` > MAX_MAJORITY: e.g. the yaw of an expert that never turns, plus
  noise) is not judged: its most frequent bin is the right answer whatever the image.
"""
from __future__ import annotations

import numpy as np
import torch

from .objective import as_example, diffusion_sums, sample_mask

# A dimension collapses when its predictions use fewer than this share of the bins its
# targets use (dimensions whose targets use fewer than MIN_TARGET_BINS are not judged).
COLLAPSE_SHARE = 0.25
MIN_TARGET_BINS = 4
MAX_MAJORITY = 0.5  # share of a dimension's targets in its most frequent bin
DIM_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")


def dim_name(d: int) -> str:
    return DIM_NAMES[d] if d < len(DIM_NAMES) else f"dim{d}"


@torch.no_grad()
def evaluate(model, tokenizer, examples, batch_size: int = 32, seed: int = 0,
             eps: float = 1e-3, loss_type: str = "lsc", forward=None,
             predictions: bool = False) -> dict:
    """Metrics of ``model`` (the bare LladaVlaForActions; ``forward`` its wrapper when it is
    sharded) on ``examples`` (see the module docstring). ``predictions=True`` adds the
    all-masked argmax classes (N, K, D) and the targets under ``predictions``/``targets``."""
    examples = [as_example(e) for e in examples]
    if not examples:
        raise ValueError("no validation examples")
    forward = forward or model
    was_training = model.training
    model.eval()
    c = model.config
    K, D = int(c.chunk_size), int(c.action_dim)
    gen = torch.Generator().manual_seed(seed)
    device = model.lm_head.weight.device
    total = count = 0.0
    preds, targets = [], []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        images = [model.preprocess(e.image, e.state) for e in batch]
        prompts = [model.prompt_ids(e.instruction) for e in batch]
        classes = torch.stack([torch.as_tensor(tokenizer.encode(e.actions).reshape(-1))
                               for e in batch]).to(device)
        masked, t = sample_mask(len(batch), K * D, eps, gen)
        s, n = diffusion_sums(forward, model, images, prompts, classes, masked.to(device),
                              t.to(device), loss_type, reweight=False)
        total, count = total + float(s), count + float(n)
        # one pass: all masked (diffusion), or the true earlier tokens (autoregressive)
        inputs = classes if c.autoregressive else torch.full_like(classes, -1)
        logits = forward(images, prompts, model.classes_to_ids(inputs), localized=True)
        preds.append(logits.argmax(-1).cpu())
        targets.append(classes.cpu())
    model.train(was_training)
    pred = torch.cat(preds).view(-1, K, D).numpy()
    true = torch.cat(targets).view(-1, K, D).numpy()
    per_dim = (pred == true).mean(axis=(0, 1))
    used = [int(len(np.unique(pred[..., d]))) for d in range(D)]
    target_bins = [int(len(np.unique(true[..., d]))) for d in range(D)]
    majority = [float(np.unique(true[..., d], return_counts=True)[1].max() / true[..., d].size)
                for d in range(D)]
    record = {"examples": len(examples), "loss": total / max(count, 1.0),
              "token_accuracy": float((pred == true).mean()),
              "token_accuracy_per_dim": [float(a) for a in per_dim],
              "bins_used": used, "target_bins": target_bins, "target_majority": majority,
              "collapsed": collapsed_dims(used, target_bins, majority)}
    if predictions:
        record.update(predictions=pred, targets=true)
    return record


def collapsed_dims(used, target_bins, majority=None) -> list:
    """Names of the dimensions whose predictions use under COLLAPSE_SHARE of the bins their
    targets use, among those whose targets are spread (``majority``: the share of each
    dimension's targets in its most frequent bin; None: all spread)."""
    majority = majority or [0.0] * len(used)
    return [dim_name(d) for d, (u, n, m) in enumerate(zip(used, target_bins, majority))
            if n >= MIN_TARGET_BINS and m <= MAX_MAJORITY and u < COLLAPSE_SHARE * n]


def describe(record: dict) -> str:
    """One log line of an evaluation (and its collapse warning)."""
    acc = " ".join(f"{dim_name(d)} {100 * a:.0f}"
                   for d, a in enumerate(record["token_accuracy_per_dim"]))
    line = (f"step {record['step']}: val loss {record['loss']:.4f}, token accuracy "
            f"{100 * record['token_accuracy']:.1f} % ({acc})")
    if record["collapsed"]:
        bins = ", ".join(f"{dim_name(d)} {u} of {n}" for d, (u, n) in enumerate(
            zip(record["bins_used"], record["target_bins"])) if dim_name(d) in record["collapsed"])
        line += (f"\nwarning: predictions collapse onto a few bins ({bins} target bins "
                 "used): the model ignores its input; train longer, raise --lr, or check "
                 "the data")
    return line
