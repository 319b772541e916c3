"""Fine-tune LLaDA-VLA on recorded bags (console script ``llada-vla-train``).

    llada-vla-train BAG [BAG ...] --init CKPT_DIR --out OUT_DIR [--steps 1000] [--hz 5]
    llada-vla-train BAG [BAG ...] --init tiny --out OUT_DIR     # a fresh tiny model (CPU)

A BAG is a bag (also split, or without metadata.yaml) or a directory of bags.

Examples come from ``dataset.load_examples`` (each frame with an instruction and the next
chunk_size actions the arm made, from its joint states, at ``--hz``, 5 = the control rate,
by default). The action
statistics (q01/q99 per dimension, gripper left raw) are computed from these examples and
saved under ``--unnorm-key``. Training is ``training.train`` (LSC masked-diffusion loss,
AdamW, warm-up + cosine). OUT_DIR receives a checkpoint the policy node loads (config.json,
model.safetensors, tokenizer.json, dataset_statistics.json) plus ``train_log.json``
(arguments, per-bag summary, losses) and ``loss.png``.

Memory: the loop is single-process AdamW over every trainable parameter (about 16 bytes per
parameter in float32), so a full-size (8.4 B) model needs more than one GPU holds; this
command does not shard.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

DEFAULT_UNNORM_KEY = "widowx_bags"


def init_model(spec: str, device: str = "cpu", dtype: Optional[str] = None):
    """``tiny`` (a fresh tiny model) or a LLaDA-VLA checkpoint directory, in float32 unless
    ``dtype`` says otherwise (AdamW on bfloat16 weights loses small updates)."""
    import torch

    from .model import LladaVlaConfig, LladaVlaForActions, build_tiny_tokenizer, from_pretrained
    from .model.checkpoint import resolve_dtype

    dt = resolve_dtype(dtype or "float32", torch.device(device))
    if spec == "tiny":
        config = LladaVlaConfig.tiny()
        model = LladaVlaForActions(config).to(device=device, dtype=dt)
        model.tokenizer = build_tiny_tokenizer(config.num_bins)
        return model
    if not Path(spec).is_dir():
        raise FileNotFoundError(f"--init {spec}: not 'tiny' and not a checkpoint directory")
    return from_pretrained(spec, torch_dtype=dt, device=device)


def plot_losses(path, losses) -> Path:
    """Loss per step and its running mean, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(losses) + 1)
    window = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(steps, losses, color="0.7", lw=0.8, label="loss")
    ax.plot(steps[window - 1:], smooth, "C0", lw=1.5, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("masked-diffusion loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def build_parser() -> argparse.ArgumentParser:
    from .bag import add_bag_arguments, add_episode_arguments

    p = argparse.ArgumentParser(prog="llada-vla-train", description=__doc__.split("\n")[0])
    add_bag_arguments(p, " (one episode per bag)")
    p.add_argument("--init", required=True,
                   help="LLaDA-VLA checkpoint directory to start from, or 'tiny'")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out directory")
    p.add_argument("--unnorm-key", default=DEFAULT_UNNORM_KEY,
                   help="dataset key of the saved action statistics")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="linear warm-up (default: a tenth of --steps, at most 100)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--loss", choices=("lsc", "full_vocab"), default="lsc")
    p.add_argument("--freeze-vision", action="store_true",
                   help="keep the vision tower fixed (the projector still trains)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", default=None, help="float32 (default) | bfloat16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    # train on the motion the arm made, also in policy trials that recorded ActionChunks
    add_episode_arguments(p, hz=5.0, action_source="joint_states")
    return p


def check_args(args) -> None:
    """ValueError naming the first bad argument."""
    for name in ("steps", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got "
                             f"{getattr(args, name)}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if not args.unnorm_key.strip():
        raise ValueError("--unnorm-key must not be empty")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise ValueError(f"--out {out} exists and is not an empty directory "
                         "(give --overwrite to write into it)")


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    from .action_tokenizer import STATS_FILE, NormStats
    from .bag import BagError, episode_options, find_bags
    from .dataset import load_examples
    from .training import action_tokenizer_for, train

    start = time.perf_counter()
    try:
        check_args(args)
        bags = find_bags(args.bags)
        model = init_model(args.init, args.device, args.dtype)
        examples, summary = load_examples(bags, model.config.chunk_size,
                                          progress=not args.quiet, **episode_options(args))
        stats = NormStats.from_actions(np.stack([e.actions for e in examples]))
        tokenizer = action_tokenizer_for(model.config, stats, args.unnorm_key)
    except (BagError, FileNotFoundError, ValueError) as exc:
        print(f"llada-vla-train: error: {exc}", file=sys.stderr)
        return 2
    for bag, s in summary.items():
        skipped = "; ".join(f"{why}: {n}" for why, n in s["skipped"].items()) or "none"
        print(f"{bag}: {s['examples']} examples from {s['frames']} frames "
              f"({s['action_source']}); frames without an action: {skipped}"
              + "".join(f"; {note}" for note in s["notes"]), flush=True)
    if args.freeze_vision:
        model.vision_tower.requires_grad_(False)
    print(f"{len(examples)} examples from {len(summary)} bag(s); training "
          f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} parameters "
          f"for {args.steps} steps on {args.device}", flush=True)
    warmup = args.warmup_steps if args.warmup_steps is not None else min(100, args.steps // 10)
    losses = train(model, tokenizer, examples, args.steps, lr=args.lr,
                   batch_size=args.batch_size, seed=args.seed, loss_type=args.loss,
                   warmup_steps=warmup, cosine=True, weight_decay=args.weight_decay,
                   max_grad_norm=args.max_grad_norm, progress=not args.quiet)
    out = Path(args.out)
    model.save_pretrained(out)
    (out / STATS_FILE).unlink(missing_ok=True)  # --overwrite: no stale keys from an old run
    tokenizer.save_pretrained(out, args.unnorm_key)
    tail = max(1, len(losses) // 10)
    log = {"args": dict(vars(args)), "bags": summary,
           "examples": len(examples), "action_statistics": stats.to_dict(),
           "first_loss": losses[0], "final_loss": float(np.mean(losses[-tail:])),
           "seconds": time.perf_counter() - start, "losses": losses}
    (out / "train_log.json").write_text(json.dumps(log, indent=2), encoding="utf-8")
    plot_losses(out / "loss.png", losses)
    print(f"loss {losses[0]:.4f} -> {log['final_loss']:.4f} (mean of the last {tail} steps); "
          f"checkpoint written to {out} (unnorm_key {args.unnorm_key!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
