"""Training in one process: ``train`` (AdamW over a list of examples, the masked-diffusion
LSC loss of finetuning/objective.py, the loop of finetuning/loop.py) and
``make_tiny_checkpoint`` (a tiny model overfit on a few synthetic examples, for tests and
demos). ``llada-vla-train`` (finetune.py) is the command line for real runs.

    python -m llada_vla_ros.training --tiny OUT_DIR
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .action_tokenizer import ActionTokenizer, NormStats
from .finetuning.loop import FitConfig, Trainer, fit  # noqa: F401 (Trainer: API)
from .finetuning.objective import (LOSS_TYPES, Example, as_example,  # noqa: F401 (API)
                                   diffusion_step_loss, diffusion_sums, localize_labels,
                                   lsc_loss, masked_diffusion_loss, masked_diffusion_sums,
                                   sample_mask)
from .model import LladaVlaConfig, LladaVlaForActions, build_tiny_tokenizer

TINY_UNNORM_KEY = "tiny_synthetic"
# Synthetic tiny data: 6 normalized dims (m, rad) + the raw gripper (0 closed, 1 open).
TINY_STATS = NormStats(q01=[-0.05, -0.05, -0.05, -0.25, -0.25, -0.25, 0.0],
                       q99=[0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 1.0],
                       mask=[True] * 6 + [False])


# ----------------------------------------------------------------------------- loop

def encode_examples(model: LladaVlaForActions, tokenizer: ActionTokenizer, examples):
    """Examples -> (uint8 images, prompt id lists, classes (N, K*D) on the model's device).
    Images are preprocessed per batch (``batch_pixels``): a dataset of 384x384 float images
    would not fit in memory."""
    examples = [as_example(e) for e in examples]
    if not examples:
        raise ValueError("no training examples")
    A = model.config.num_action_tokens
    prompts, classes = [], []
    for e in examples:
        c = tokenizer.encode(e.actions)
        if c.size != A:
            raise ValueError(f"actions must be {model.config.chunk_size}x"
                             f"{model.config.action_dim}, got {np.shape(e.actions)}")
        classes.append(torch.as_tensor(c.reshape(-1)))
        prompts.append(model.prompt_ids(e.instruction))
    device = model.lm_head.weight.device
    return [e.image for e in examples], prompts, torch.stack(classes).to(device)


def batch_pixels(model: LladaVlaForActions, images, idx) -> list:
    """Model image inputs (ImageInput: crops + size) of ``images[i] for i in idx``."""
    return [model.preprocess(images[i]) for i in idx]


def train(model: LladaVlaForActions, tokenizer: ActionTokenizer, examples, steps: int,
          lr: float = 1e-3, batch_size: Optional[int] = None, seed: int = 0,
          loss_type: str = "lsc", eps: float = 1e-3, reweight: bool = True,
          warmup_steps: int = 0, cosine: bool = False, weight_decay: float = 0.0,
          max_grad_norm: Optional[float] = None, progress: bool = True, val=None,
          eval_every: int = 0, random_shift: int = 0,
          max_seconds: Optional[float] = None) -> list:
    """AdamW over ``examples`` ((image, instruction, actions) or Example; a list, or any
    iterable read as a stream) for ``steps`` steps of ``batch_size`` examples (a list: all
    of them when None; a batch_size above the number of examples repeats them with
    different masks), in one process. Returns the per-step losses. ``reweight`` picks eq. 5
    (1/t) or eq. 7 (mean over masked positions); ``warmup_steps`` ramps the learning rate
    up linearly, ``cosine`` decays it to lr/10, ``max_grad_norm`` clips the gradient norm;
    ``val`` examples are evaluated every ``eval_every`` steps (``validation.py``),
    ``random_shift`` pixels of shift augmentation, ``max_seconds`` a time budget. Only
    parameters with ``requires_grad`` train. Seeded: same seed, same run.
    One call is one run (a fresh optimizer and data order): to train in segments, keep a
    ``Trainer`` and call its ``run(steps)``. ``finetuning.loop.fit`` is the loop."""
    if isinstance(examples, (list, tuple)):
        examples = [as_example(e) for e in examples]
        if not examples:
            raise ValueError("no training examples")
        batch = batch_size or len(examples)
    elif not batch_size:
        raise ValueError("a stream of examples needs batch_size")
    else:
        batch = batch_size
    cfg = FitConfig(steps=steps, lr=lr, global_batch=batch, micro_batch=batch, seed=seed,
                    loss_type=loss_type, eps=eps, reweight=reweight, warmup_steps=warmup_steps,
                    cosine=cosine, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                    random_shift=random_shift, eval_every=eval_every, max_seconds=max_seconds)
    return fit(model, tokenizer, examples, cfg, progress=progress, val=val).losses


def action_tokenizer_for(config: LladaVlaConfig, stats: NormStats, unnorm_key: str):
    """The ActionTokenizer of a model config (bins, token ids, mask id, chunk size) with
    ``stats`` saved under ``unnorm_key``."""
    return ActionTokenizer(stats, num_bins=config.num_bins,
                           action_token_ids=config.action_token_ids,
                           mask_token_id=config.mask_token_id, chunk_size=config.chunk_size,
                           unnorm_key=unnorm_key)


# ----------------------------------------------------------------------------- tiny checkpoint

def synthetic_examples(tokenizer: Optional[ActionTokenizer] = None) -> list:
    """4 deterministic examples: solid-colour / patterned 48x64 images, distinct instructions
    and distinct 5x7 action chunks (actions are bin centers, so they round-trip exactly)."""
    tok = tokenizer or ActionTokenizer(TINY_STATS)
    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    checker = (((yy // 8) + (xx // 8)) % 2).astype(np.uint8)[..., None]
    stripes = ((xx // 6) % 2).astype(np.uint8)[..., None]
    images = [np.full((h, w, 3), (220, 40, 40), np.uint8),
              np.full((h, w, 3), (40, 200, 60), np.uint8),
              (checker * np.array([230, 230, 230], np.uint8)
               + (1 - checker) * np.array([30, 30, 120], np.uint8)),
              (stripes * np.array([250, 210, 0], np.uint8)).astype(np.uint8)]
    instructions = ["move forward and close the gripper", "move left",
                    "lift the gripper up and open it", "put the spoon on the towel"]
    # per example: direction in normalized units for (x, y, z, roll, pitch, yaw), gripper
    directions = [([0.6, 0.0, -0.2, 0.0, 0.0, 0.0], 0), ([0.0, 0.7, 0.0, 0.0, 0.0, 0.3], 1),
                  ([0.0, 0.0, 0.8, 0.2, 0.0, 0.0], 1), ([0.3, -0.4, -0.5, 0.0, 0.4, -0.3], 0)]
    K = 5
    out = []
    for img, text, (d, grip) in zip(images, instructions, directions):
        ramp = np.linspace(1.0, 0.4, K)[:, None]
        norm = np.clip(ramp * np.asarray(d)[None], -1, 1)
        classes = np.clip(np.floor((norm + 1) * 0.5 * tok.num_bins), 0, tok.num_bins - 1)
        grip_cls = tok.num_bins - 1 if grip else tok.num_bins // 2  # raw 0.97 / 0.03
        classes = np.concatenate([classes, np.full((K, 1), grip_cls)], 1).astype(np.int64)
        out.append(Example(img, text, tok.decode(classes)))
    return out


@torch.no_grad()
def count_mismatches(model: LladaVlaForActions, tokenizer: ActionTokenizer, examples,
                     random_masks: int = 8, seed: int = 0) -> int:
    """Argmax errors of a full forward on each example's tokens with (a) all positions
    masked, (b) each position masked alone, (c) ``random_masks`` random partial masks."""
    gen = torch.Generator().manual_seed(seed)
    errors = 0
    for e in map(as_example, examples):
        obs = model.prepare(e.image, e.instruction)
        target = torch.as_tensor(tokenizer.encode(e.actions).reshape(-1))
        A = target.numel()
        rows = [torch.ones(A, dtype=torch.bool)] + list(torch.eye(A, dtype=torch.bool))
        rows += list(torch.rand(random_masks, A, generator=gen) < 0.5)
        masked = torch.stack(rows)
        classes = torch.where(masked, -1, target.expand_as(masked))
        pred = model.action_logits(obs, classes)[0].argmax(-1).cpu()
        errors += int(((pred != target) & masked).sum())
    return errors


def make_tiny_checkpoint(out_dir, examples=None, steps: int = 150, seed: int = 0,
                         lr: float = 3e-3, batch_size: int = 8,
                         unnorm_key: str = TINY_UNNORM_KEY,
                         config_overrides: Optional[dict] = None, progress: bool = False,
                         max_rounds: int = 4) -> Path:
    """Train the tiny config to overfit ``examples`` (default: ``synthetic_examples()``) and
    save model, tokenizer.json and dataset_statistics.json into ``out_dir``.

    Uses eq. 7 (mean CE over masked positions; the 1/t weights of eq. 5 make this tiny run
    much noisier). Training continues (up to ``max_rounds`` rounds of ``steps // 2``) until
    the model reproduces every example's action tokens under argmax (``count_mismatches``).
    Returns ``out_dir``.
    """
    torch.manual_seed(seed)
    config = LladaVlaConfig.tiny(**(config_overrides or {}))
    model = LladaVlaForActions(config)
    model.tokenizer = build_tiny_tokenizer(config.num_bins)
    if examples is None:
        stats = TINY_STATS
        examples = synthetic_examples(ActionTokenizer(stats, num_bins=config.num_bins))
    else:
        examples = [as_example(e) for e in examples]
        stats = NormStats.from_actions(np.stack([e.actions for e in examples]))
    tok = action_tokenizer_for(config, stats, unnorm_key)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is as fast and immune to CPU contention
    try:
        errors = _overfit(model, tok, examples, steps, lr, batch_size, seed, progress, max_rounds)
    finally:
        torch.set_num_threads(threads)
    if errors:
        raise RuntimeError(f"tiny model still mispredicts {errors} tokens after {max_rounds} "
                           "rounds; raise steps or lr")
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out, unnorm_key)
    return out


def _overfit(model, tok, examples, steps, lr, batch_size, seed, progress, max_rounds) -> int:
    errors = -1
    for r in range(max_rounds):
        train(model, tok, examples, steps if r == 0 else max(steps // 2, 1), lr=lr,
              batch_size=max(batch_size, len(examples)), seed=seed + r, reweight=False,
              warmup_steps=20 if r == 0 else 0, cosine=True, progress=progress)
        errors = count_mismatches(model, tok, examples, seed=seed)
        if errors == 0:
            break
    return errors


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", metavar="OUT_DIR", required=True,
                   help="train the tiny synthetic checkpoint into OUT_DIR")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix-attention-mask", action="store_true",
                   help="train with the prompt not attending to action tokens")
    args = p.parse_args(argv)
    start = time.perf_counter()
    overrides = {"prefix_attention_mask": True} if args.prefix_attention_mask else None
    out = make_tiny_checkpoint(args.tiny, steps=args.steps, seed=args.seed,
                               config_overrides=overrides, progress=True)
    print(f"tiny checkpoint written to {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
