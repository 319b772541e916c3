"""Fine-tune LLaDA-VLA on recorded bags (console script ``llada-vla-train``).

    llada-vla-train BAG [BAG ...] --init CKPT_DIR --out OUT_DIR [--steps 1000] [--hz 5]
    llada-vla-train BAG [BAG ...] --init small --out OUT_DIR    # a fresh small model (CPU)
    accelerate launch --config_file config/accelerate/fsdp.yaml -m llada_vla_ros.finetune \
        BAG ... --init CKPT_DIR --out OUT_DIR --recipe paper --gradient-checkpointing
    llada-vla-train BAG ... --init CKPT_DIR --out OUT_DIR --lora-rank 16 --dtype bfloat16
    llada-vla-train --plan --gpus 8 --gpu-memory 80            # memory per GPU, no training

A BAG is a bag (also split, or without metadata.yaml) or a directory of bags.

Examples come from ``dataset.load_examples`` (each frame with an instruction and the next
chunk_size actions the arm made, from its joint states, at ``--hz``, 5 = the control rate,
by default). The action statistics (q01/q99 per dimension, gripper left raw) are computed
from these examples and saved under ``--unnorm-key`` with the control rate (``--hz``), so
``llada-vla-eval`` runs at the rate the labels have. Held-out bags (``--val``, or
``--val-split`` of the bags) are evaluated every ``--eval-every`` steps: loss, token
accuracy, and a warning when predictions collapse onto a few bins. A fresh model
(``--init tiny|small``) gets the from-scratch recipe (``FRESH_DEFAULTS``); a checkpoint the
fine-tuning one. Training is ``finetuning.loop.fit``
on Hugging Face Accelerate: run under ``accelerate launch`` for DDP, FSDP or DeepSpeed
ZeRO-3 (config/accelerate/*.yaml), ``--mixed-precision bf16``, ``--gradient-checkpointing``,
``--global-batch`` reached by accumulation, ``--lora-rank`` for LoRA (merged on save),
``--recipe paper`` for the paper's recipe, ``--save-every``/``--resume`` for training
checkpoints. OUT_DIR receives a checkpoint the policy node loads (config.json,
model.safetensors, tokenizer.json, dataset_statistics.json) plus ``train_log.json``
(arguments, per-bag summary, losses) and ``loss.png``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

DEFAULT_UNNORM_KEY = "widowx_bags"
# Schedule defaults. Fine-tuning a checkpoint: small steps. A fresh model (--init tiny |
# small) learns from scratch: a larger learning rate and batch, more steps, and random-shift
# augmentation (measured on the simulated tasks: docs/results.md).
FINETUNE_DEFAULTS = dict(lr=1e-4, global_batch=8, steps=1000, random_shift=0,
                         loss_weight="inverse_t")
FRESH_DEFAULTS = dict(lr=1e-3, global_batch=8, steps=3000, random_shift="auto",
                      loss_weight="mean")  # auto shift: 1/16 of the model's image size
VAL_SPLIT_MIN_BAGS = 10  # --val-split's default (0.1) applies from this many bags
VAL_SAMPLE = 256  # training examples checked for collapse when no bag is held out


def init_model(spec: str, device: str = "cpu", dtype: Optional[str] = None,
               chunk_size: Optional[int] = None, config: Optional[dict] = None):
    """A fresh model of a named config (``tiny``, ``small``: ``LladaVlaConfig.tiny()`` ...,
    with the word-level offline tokenizer) or a LLaDA-VLA checkpoint directory, in float32
    unless ``dtype`` says otherwise (AdamW on bfloat16 weights loses small updates; a LoRA
    run keeps the frozen weights in bfloat16). Seed torch first for a reproducible fresh
    model."""
    import torch

    from .model import LladaVlaForActions, build_tiny_tokenizer, from_pretrained
    from .model.checkpoint import resolve_dtype
    from .model.configuration import NAMED_CONFIGS, SMALL_VOCAB_SIZE, named_config

    dt = resolve_dtype(dtype or "float32", torch.device(device))
    if spec in NAMED_CONFIGS:
        # the word-level tokenizer (a position per word, not per byte) and its vocabulary
        overrides = {"vocab_size": SMALL_VOCAB_SIZE, **(config or {})}
        if chunk_size:
            overrides["chunk_size"] = chunk_size
        config = named_config(spec, **overrides)
        model = LladaVlaForActions(config).to(device=device, dtype=dt)
        model.tokenizer = build_tiny_tokenizer(config.num_bins, words=True)
        return model
    if not Path(spec).is_dir():
        raise FileNotFoundError(f"--init {spec}: not a named config "
                                f"({', '.join(NAMED_CONFIGS)}) and not a checkpoint directory")
    if config:
        raise ValueError("--config changes a fresh model (--init tiny|small), not a checkpoint")
    model = from_pretrained(spec, torch_dtype=dt, device=device)
    if chunk_size:  # the architecture does not depend on it: K x D action positions
        model.config.chunk_size = int(chunk_size)
    return model


def robot_states(model, examples, val, stream: bool) -> None:
    """A model that takes the robot state (``--config state_dim=10``) needs it in every
    example (joint-state recordings); a fresh one gets its standardization from them."""
    from .kinematics import STATE_DIM

    if model.config.state_dim != STATE_DIM:
        raise ValueError(f"state_dim must be {STATE_DIM} (kinematics.robot_state: position, "
                         f"two rotation columns, gripper), got {model.config.state_dim}")
    if stream:
        raise ValueError("a model that takes the robot state trains from examples in memory "
                         "(no --stream)")
    for name, rows in (("training", examples), ("validation", val)):
        missing = sum(e.state is None for e in rows)
        if missing:
            raise ValueError(f"{missing} {name} examples have no robot state (it comes from "
                             "the joint states of a joint-state recording); the model "
                             f"takes one (state_dim={model.config.state_dim})")
    if model.config.state_mean is None:
        model.set_state_statistics(np.stack([e.state for e in examples]))


def plot_losses(path, losses, evals=()) -> Path:
    """Loss per step and its running mean, with the validation loss at each evaluation
    (and the token accuracy on a second axis), one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(losses) + 1)
    window = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(steps, losses, color="0.7", lw=0.8, label="loss")
    ax.plot(steps[window - 1:], smooth, "C0", lw=1.5, label=f"mean of {window}")
    if evals:
        ax.plot([e["step"] for e in evals], [e["loss"] for e in evals], "C1o-", ms=3,
                label="validation loss (eq. 7)")
        acc = ax.twinx()
        acc.plot([e["step"] for e in evals], [100 * e["token_accuracy"] for e in evals],
                 "C2s--", ms=3, label="validation token accuracy")
        acc.set_ylabel("token accuracy %")
        acc.set_ylim(0, 100)
        acc.legend(loc="upper center")
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
    from .finetuning.loop import RECIPES
    from .finetuning.lora import DEFAULT_MODULES

    p = argparse.ArgumentParser(prog="llada-vla-train", description=__doc__.split("\n")[0])
    add_bag_arguments(p, " (one episode per bag)", nargs="*")  # none with --plan
    p.add_argument("--init", help="LLaDA-VLA checkpoint directory to start from, or a fresh "
                                  "model: 'tiny' or 'small'")
    p.add_argument("--config", nargs="+", default=None, metavar="KEY=VALUE",
                   help="options of a fresh model's config (--init tiny|small), e.g. "
                        "autoregressive=true prefix_attention_mask=true hidden_size=192")
    p.add_argument("--out", help="output checkpoint directory")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out directory")
    p.add_argument("--unnorm-key", default=DEFAULT_UNNORM_KEY,
                   help="dataset key of the saved action statistics")
    g = p.add_argument_group("schedule")
    g.add_argument("--recipe", choices=sorted(RECIPES),
                   help="a named recipe; 'paper': 3 epochs, lr 2e-5, global batch 128, chunk "
                        "5, 3%% warm-up, cosine (explicit options override it)")
    g.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps (default {FINETUNE_DEFAULTS['steps']}; "
                        f"{FRESH_DEFAULTS['steps']} for a fresh model)")
    g.add_argument("--epochs", type=float, default=None, help="passes over the examples")
    g.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default {FINETUNE_DEFAULTS['lr']:g}; "
                        f"{FRESH_DEFAULTS['lr']:g} for a fresh model)")
    g.add_argument("--global-batch", "--batch-size", dest="global_batch", type=int,
                   default=None, help="examples per optimizer step over all processes "
                                      f"(default {FINETUNE_DEFAULTS['global_batch']}; "
                                      f"{FRESH_DEFAULTS['global_batch']} for a fresh model)")
    g.add_argument("--micro-batch", type=int, default=None,
                   help="examples per process per forward (default: global batch / "
                        "processes, no accumulation)")
    g.add_argument("--warmup-steps", type=int, default=None,
                   help="linear warm-up (default: a tenth of the steps, at most 100)")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--max-grad-norm", type=float, default=1.0)
    g.add_argument("--loss", choices=("lsc", "full_vocab"), default="lsc")
    g.add_argument("--loss-weight", choices=("inverse_t", "mean"), default=None,
                   help="inverse_t: eq. 5, each masked token's loss over its mask ratio t "
                        "(LLaDA's estimator); mean: eq. 7, the mean over masked tokens "
                        "(default: inverse_t; mean for a fresh model)")
    g.add_argument("--chunk-size", type=int, default=None, help="actions per chunk")
    g.add_argument("--random-shift", type=int, default=None, metavar="PX",
                   help="shift augmentation: each image padded by PX pixels and cropped back "
                        "at a random offset (default 0; for a fresh model 1/16 of its image "
                        "size, 4 for small)")
    g.add_argument("--max-minutes", type=float, default=None,
                   help="stop training after this much time (the checkpoint is written)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("validation")
    g.add_argument("--val", nargs="+", default=None, metavar="BAG",
                   help="held-out bags evaluated during training")
    g.add_argument("--val-split", type=float, default=None,
                   help="hold out this fraction of the bags (whole episodes) for validation "
                        f"(default 0.1 with {VAL_SPLIT_MIN_BAGS} bags or more, else none; "
                        "0: none)")
    g.add_argument("--eval-every", type=int, default=None,
                   help="steps between evaluations (default: a tenth of the run)")
    g = p.add_argument_group("memory and engines")
    g.add_argument("--device", default="auto",
                   help="auto | cpu | cuda (under accelerate launch: the process's GPU)")
    g.add_argument("--dtype", default=None,
                   help="weights: float32 (default) | bfloat16 (default with --lora-rank)")
    g.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default=None,
                   help="autocast (default: accelerate launch's setting, else no)")
    g.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute each layer in the backward pass (memory for time)")
    g.add_argument("--freeze-vision", action="store_true",
                   help="keep the vision tower fixed (the projector still trains)")
    g.add_argument("--lora-rank", type=int, default=0, help="LoRA rank (0 = full fine-tuning)")
    g.add_argument("--lora-alpha", type=float, default=None, help="default 2 x rank")
    g.add_argument("--lora-modules", nargs="+", default=list(DEFAULT_MODULES),
                   help="modules with adapters (default: %(default)s)")
    g.add_argument("--lora-dropout", type=float, default=0.0)
    g.add_argument("--save-every", type=int, default=0,
                   help="training checkpoint every N steps in OUT/checkpoints (0: at the end)")
    g.add_argument("--resume", default=None,
                   help="a training checkpoint directory, or 'latest' in OUT/checkpoints")
    g = p.add_argument_group("data larger than memory")
    g.add_argument("--stream", action="store_true",
                   help="stream the examples from the bags (one bag's images decoded at a "
                        "time, shuffled through a buffer, sharded by bag across processes) "
                        "instead of loading them all: bounded host memory")
    g.add_argument("--max-image-side", type=int, default=None,
                   help="--stream: downscale images to this longest side (aspect kept)")
    g.add_argument("--shuffle-buffer", type=int, default=256,
                   help="--stream: examples in the shuffle buffer")
    g.add_argument("--workers", type=int, default=0,
                   help="--stream: decode in this many DataLoader worker processes")
    g = p.add_argument_group("plan (no training)")
    g.add_argument("--plan", action="store_true",
                   help="print per-GPU memory of full fine-tuning and LoRA, then exit")
    g.add_argument("--gpus", type=int, default=1)
    g.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU")
    g.add_argument("--model-params", type=float, default=None,
                   help="parameters (default: those of --init, or LLaDA-V's 8.4 B)")
    g.add_argument("--image-size", default="640x480", help="camera image WxH")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    # train on the motion the arm made, also in policy trials that recorded ActionChunks
    add_episode_arguments(p, hz=5.0, action_source="joint_states")
    return p


def resolve_args(args) -> None:
    """Recipe, then defaults, for the schedule options left unset; ValueError naming the
    first bad argument."""
    from .finetuning.loop import RECIPES

    from .model.configuration import NAMED_CONFIGS

    recipe = RECIPES.get(args.recipe, {})
    fresh = args.init in NAMED_CONFIGS
    defaults = {**(FRESH_DEFAULTS if fresh else FINETUNE_DEFAULTS), "epochs": None,
                "chunk_size": None}
    for key in ("lr", "global_batch", "epochs", "chunk_size", "random_shift", "loss_weight"):
        if getattr(args, key) is None:
            setattr(args, key, recipe.get(key, defaults[key]))
    args.warmup_ratio = recipe.get("warmup_ratio", 0.0)
    if args.steps is None and args.epochs is None:
        args.steps = defaults["steps"]
    if args.plan:
        return
    if not args.bags:
        raise ValueError("give at least one bag (or --plan)")
    for name in ("init", "out"):
        if not getattr(args, name):
            raise ValueError(f"--{name} is required")
    for name in ("steps", "global_batch", "micro_batch", "chunk_size", "eval_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.random_shift != "auto" and args.random_shift < 0:
        raise ValueError(f"--random-shift must be >= 0, got {args.random_shift}")
    if args.val_split is not None and not 0 <= args.val_split < 1:
        raise ValueError(f"--val-split must be in [0, 1), got {args.val_split}")
    if args.val and args.val_split:
        raise ValueError("give --val or --val-split, not both")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ValueError(f"--max-minutes must be > 0, got {args.max_minutes}")
    if args.epochs is not None and not args.epochs > 0:
        raise ValueError(f"--epochs must be > 0, got {args.epochs}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if args.lora_rank < 0:
        raise ValueError(f"--lora-rank must be >= 0, got {args.lora_rank}")
    if not args.unnorm_key.strip():
        raise ValueError("--unnorm-key must not be empty")
    out = Path(args.out)
    if (out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite
            and not args.resume):
        raise ValueError(f"--out {out} exists and is not an empty directory "
                         "(give --overwrite to write into it)")



def print_plan(args) -> int:
    from .finetuning.plan import format_plan
    from .model import LladaVlaConfig

    from .model.configuration import NAMED_CONFIGS, named_config

    if args.init in NAMED_CONFIGS:
        config = named_config(args.init)
    elif args.init:
        config = LladaVlaConfig.from_json_file(str(Path(args.init) / "config.json"))
    else:
        config = LladaVlaConfig.full()
    w, h = (int(x) for x in args.image_size.lower().split("x"))
    print(format_plan(config, args.gpus, args.gpu_memory, global_batch=args.global_batch,
                      params=args.model_params, micro_batch=args.micro_batch or 1,
                      lora_rank=args.lora_rank or 16, lora_modules=args.lora_modules,
                      image_size=(w, h), checkpointing=True))
    return 0


def training_sample(examples, n: int) -> list:
    """A fixed sample of ``n`` training examples: drawn at random from a list, the first
    ``n`` of one pass over a stream (BagExamples shuffles through its buffer)."""
    if isinstance(examples, list):
        return [examples[i] for i in np.random.default_rng(0).permutation(len(examples))[:n]]
    return list(itertools.islice(iter(examples), n))


def _held_out(args, bags) -> tuple:
    """(training bags, validation bags) from --val / --val-split (see build_parser)."""
    from .bag import find_bags
    from .dataset import split_bags

    if args.val:
        return bags, find_bags(args.val)
    fraction = args.val_split
    if fraction is None:
        fraction = 0.1 if len(bags) >= VAL_SPLIT_MIN_BAGS else 0.0
    if not fraction:
        return bags, []
    return split_bags(bags, fraction)


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolve_args(args)
    except ValueError as exc:
        print(f"llada-vla-train: error: {exc}", file=sys.stderr)
        return 2
    if args.plan:
        return print_plan(args)
    import torch

    from .action_tokenizer import STATS_FILE, NormStats
    from .bag import BagError, episode_options, find_bags
    from .dataset import BagExamples, load_examples, write_dataset_info
    from .finetuning.loop import (FitConfig, export_state_dict, fit, latest_checkpoint,
                                  make_accelerator, processes)
    from .finetuning.lora import add_lora, trainable_parameters
    from .training import action_tokenizer_for

    start = time.perf_counter()
    try:
        device = args.device if args.device != "auto" else (
            "cuda" if torch.cuda.is_available() else "cpu")
        accelerator = make_accelerator(cpu=device == "cpu",
                                       mixed_precision=args.mixed_precision)
        torch.manual_seed(args.seed)  # before the model is built: a fresh model is seeded too
        dtype = args.dtype or ("bfloat16" if args.lora_rank else None)
        bags, val_bags = _held_out(args, find_bags(args.bags))
        from .decoding import parse_options
        model = init_model(args.init, "cpu", dtype, args.chunk_size, parse_options(args.config))
        if args.random_shift == "auto":
            args.random_shift = model.config.image_size // 16
        options = episode_options(args)
        if args.stream:  # statistics from one pass over the labels, no pixels kept
            examples = BagExamples(bags, model.config.chunk_size, args.max_image_side,
                                   args.shuffle_buffer, args.seed, args.workers,
                                   progress=not args.quiet, **options)
            summary, stats, actions = examples.summary, examples.stats, examples.action_sample
        else:
            examples, summary = load_examples(bags, model.config.chunk_size,
                                              progress=not args.quiet, **options)
            actions = np.stack([e.actions for e in examples])
            stats = NormStats.from_actions(actions)
        val, val_summary = (load_examples(val_bags, model.config.chunk_size, progress=False,
                                          **options) if val_bags else ([], {}))
        if model.config.state_dim:
            robot_states(model, examples, val, args.stream)
        tokenizer = action_tokenizer_for(model.config, stats, args.unnorm_key)
        resume = args.resume
        if resume == "latest":
            resume = latest_checkpoint(args.out)
            if resume is None:
                raise FileNotFoundError(f"--resume latest: no training checkpoint in "
                                        f"{args.out}/checkpoints")
    except (BagError, FileNotFoundError, ValueError) as exc:
        print(f"llada-vla-train: error: {exc}", file=sys.stderr)
        return 2
    if args.freeze_vision:
        model.vision_tower.requires_grad_(False)
    trained = model
    if args.lora_rank:
        trained = add_lora(model, args.lora_rank, args.lora_alpha, args.lora_modules,
                           args.lora_dropout)
    world, rank = processes(accelerator)
    main_process = rank == 0
    steps_text = (f"{args.steps} steps" if args.steps is not None
                  else f"{args.epochs:g} epochs")
    # without held-out bags, the collapse check still runs on a fixed sample of the
    # training examples (what the model fits, not how it generalizes)
    val_source = "held-out bags" if val else "training sample"
    checked = val or training_sample(examples, VAL_SAMPLE)
    if main_process:
        for bag, s in summary.items():
            skipped = "; ".join(f"{why}: {n}" for why, n in s["skipped"].items()) or "none"
            print(f"{bag}: {s['examples']} examples from {s['frames']} frames "
                  f"({s['action_source']}); frames without an action: {skipped}"
                  + "".join(f"; {note}" for note in s["notes"]), flush=True)
        print(f"{len(examples)} examples from {len(summary)} bag(s); validation: "
              + (f"{len(val)} examples from {len(val_summary)} held-out bag(s)" if val else
                 f"none held out (a sample of {len(checked)} training examples is checked)")
              + f"; training {trainable_parameters(trained):,} parameters for {steps_text} "
              f"on {world} process(es) ({accelerator.distributed_type}), lr {args.lr:g}, "
              f"global batch {args.global_batch}, loss weight {args.loss_weight}, random shift "
              f"{args.random_shift} px",
              flush=True)
    warmup = args.warmup_steps
    if warmup is None and not args.warmup_ratio:
        warmup = min(100, (args.steps or 0) // 10)
    cfg = FitConfig(steps=args.steps, epochs=args.epochs, lr=args.lr,
                    global_batch=args.global_batch, micro_batch=args.micro_batch,
                    warmup_steps=warmup, warmup_ratio=args.warmup_ratio, cosine=True,
                    weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
                    loss_type=args.loss, reweight=args.loss_weight == "inverse_t",
                    seed=args.seed, save_every=args.save_every,
                    gradient_checkpointing=args.gradient_checkpointing,
                    random_shift=args.random_shift, eval_every=args.eval_every or 0,
                    max_seconds=None if args.max_minutes is None else 60 * args.max_minutes)
    if not args.eval_every:
        from .finetuning.loop import total_steps
        cfg.eval_every = max(1, total_steps(cfg, len(examples)) // 10)
    log = (lambda line: print(f"[{val_source}] {line}", flush=True)) if main_process else None
    try:
        result = fit(trained, tokenizer, examples, cfg, accelerator, out_dir=args.out,
                     resume=resume, progress=not args.quiet, val=checked, log=log)
    except ValueError as exc:
        print(f"llada-vla-train: error: {exc}", file=sys.stderr)
        return 2
    state = export_state_dict(result)
    if not main_process:
        return 0
    losses = result.losses
    out = Path(args.out)
    model.save_pretrained(out, state_dict=state)
    (out / STATS_FILE).unlink(missing_ok=True)  # --overwrite: no stale keys from an old run
    tokenizer.save_pretrained(out, args.unnorm_key)
    write_dataset_info(out, args.unnorm_key, actions, args.hz, len(examples), len(summary))
    tail = max(1, len(losses) // 10)
    evals = [{k: v for k, v in e.items()} for e in result.evals]
    log = {"args": dict(vars(args)), "bags": summary, "val_bags": val_summary,
           "examples": len(examples), "val_examples": len(val), "val_source": val_source,
           "action_statistics": stats.to_dict(), "control_hz": args.hz,
           "processes": result.processes, "micro_batch": result.micro_batch,
           "accumulation": result.accumulation, "resumed_from": result.resumed_from,
           "first_loss": losses[0], "final_loss": float(np.mean(losses[-tail:])),
           "stopped": result.stopped, "training_seconds": result.seconds,
           "seconds": time.perf_counter() - start, "evals": evals, "losses": losses}
    (out / "train_log.json").write_text(json.dumps(log, indent=2), encoding="utf-8")
    plot_losses(out / "loss.png", losses, evals)
    last = evals[-1] if evals else None
    rate = f"control rate {args.hz:g} Hz" if args.hz else "control rate not recorded (no --hz)"
    print(f"loss {losses[0]:.4f} -> {log['final_loss']:.4f} (mean of the last {tail} steps)"
          + (f"; {val_source}: loss {last['loss']:.4f}, token accuracy "
             f"{100 * last['token_accuracy']:.1f} %" if last else "")
          + (f"; stopped: {result.stopped}" if result.stopped else "")
          + f"; checkpoint written to {out} (unnorm_key {args.unnorm_key!r}, {rate})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
