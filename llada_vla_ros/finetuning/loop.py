"""The training loop, on Hugging Face Accelerate: one process, DDP, FSDP or DeepSpeed ZeRO-3,
whichever ``accelerate launch`` set up (shipped configs: config/accelerate/*.yaml).

A step is one optimizer update over ``global_batch`` examples: every process runs
``accumulation`` micro-batches of ``micro_batch`` examples, so
``global_batch = micro_batch x processes x accumulation``.

Exactness. Which example and which mask a step sees depends only on (seed, step, position
in the global batch), never on the number of processes: a list of examples is visited in a
seeded permutation per epoch, and the mask of position j of step s comes from a generator
seeded with (seed, s, j). The loss is the sum over the global batch divided by the global
count of its terms (objective.py), so 1 process x 4 micro-batches and 2 processes x 2
micro-batches compute the same gradient up to float rounding, and a run resumed from a
training checkpoint continues bit for bit (CPU, same seed).

Data. ``examples`` is a list (map-style: shuffled per epoch, split across processes by
position) or any iterable of examples (streaming). An iterable is read in order; with several
processes it must provide ``shard(num_shards, index)`` returning this process's part, and
``set_epoch(epoch)`` is called before each pass when it has one. Each process then draws its
micro-batches from its own shard; resuming skips the examples already seen.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from .objective import as_example, diffusion_sums, sample_mask

STATE_FILE = "trainer_state.json"
CACHE_BYTES = 4 << 30  # preprocessed images of a list dataset kept in host memory up to this
CHECKPOINTS = "checkpoints"

# The paper's fine-tuning recipe (LLaDA-VLA section 4): 3 epochs, learning rate 2e-5, batch
# 128, chunks of 5 actions. Warm-up 3 % and cosine decay are LLaDA-V's fine-tuning schedule.
RECIPES = {
    "paper": dict(epochs=3.0, lr=2e-5, global_batch=128, chunk_size=5, warmup_ratio=0.03,
                  cosine=True),
}


@dataclass
class FitConfig:
    steps: Optional[int] = None  # optimizer steps; or
    epochs: Optional[float] = None  # passes over a list of examples
    lr: float = 1e-4
    global_batch: int = 8
    micro_batch: Optional[int] = None  # per process; None = no accumulation
    warmup_steps: Optional[int] = None  # None: warmup_ratio x steps
    warmup_ratio: float = 0.0
    cosine: bool = True  # decay to lr / 10
    weight_decay: float = 0.0
    max_grad_norm: Optional[float] = 1.0
    loss_type: str = "lsc"
    eps: float = 1e-3
    reweight: bool = True
    seed: int = 0
    save_every: int = 0  # training checkpoint every N steps (0 = at the end only)
    gradient_checkpointing: bool = False
    random_shift: int = 0  # pixels: pad-and-crop augmentation of each image (0 = none)
    eval_every: int = 0  # steps between evaluations on the validation examples (0: at the end)
    max_seconds: Optional[float] = None  # stop after this much training time


@dataclass
class FitResult:
    losses: list = field(default_factory=list)  # loss of each step (the global batch)
    steps: int = 0
    micro_batch: int = 0
    accumulation: int = 1
    processes: int = 1
    resumed_from: Optional[str] = None
    evals: list = field(default_factory=list)  # validation records (validation.evaluate)
    seconds: float = 0.0  # training time (evaluations and checkpoints excluded)
    stopped: Optional[str] = None  # why the run ended before its last step
    model: object = field(default=None, repr=False)  # the prepared (wrapped) model
    accelerator: object = field(default=None, repr=False)


def total_steps(cfg: FitConfig, n_examples: Optional[int]) -> int:
    if cfg.steps is not None:
        return int(cfg.steps)
    if cfg.epochs is None:
        raise ValueError("give steps or epochs")
    if n_examples is None:
        raise ValueError("epochs need a dataset of known length: give steps for a stream")
    return max(1, math.ceil(cfg.epochs * n_examples / cfg.global_batch))


def batch_layout(cfg: FitConfig, processes: int) -> tuple:
    """(micro_batch, accumulation) with micro_batch x processes x accumulation = global."""
    g = int(cfg.global_batch)
    micro = int(cfg.micro_batch) if cfg.micro_batch else g // processes
    if g < 1 or micro < 1 or g % (micro * processes):
        raise ValueError(f"global batch {g} is not a multiple of micro batch {micro} x "
                         f"{processes} process(es)")
    return micro, g // (micro * processes)


def lr_factor(step: int, steps: int, warmup: int, cosine: bool) -> float:
    f = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if cosine:
        f *= 0.1 + 0.45 * (1.0 + math.cos(math.pi * step / max(steps, 1)))
    return f


@lru_cache(maxsize=8)
def _permutation(n: int, seed: int, epoch: int) -> tuple:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n, generator=g).tolist())


def example_indices(step: int, positions, n: int, global_batch: int, seed: int) -> list:
    """Indices into a list of ``n`` examples at these ``positions`` of global batch ``step``."""
    out = []
    for j in positions:
        epoch, k = divmod(step * global_batch + j, n)
        out.append(_permutation(n, seed, epoch)[k])
    return out


def position_masks(step: int, positions, length: int, eps: float, seed: int,
                   shift: int = 0) -> tuple:
    """(masked (B, length), t (B,), shifts) for these positions of global batch ``step``;
    shifts: per position (pad, dx, dy) with dx, dy in [-shift, shift] (None when 0)."""
    rows, shifts = [], []
    for j in positions:
        g = torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1_000_003 + j) % 2**63)
        rows.append(sample_mask(1, length, eps, g))
        if shift:
            dx, dy = torch.randint(-shift, shift + 1, (2,), generator=g).tolist()
            shifts.append((shift, dx, dy))
    return (torch.cat([m for m, _ in rows]), torch.cat([t for _, t in rows]),
            shifts if shift else None)


class _Stream:
    """This process's examples of an iterable dataset, epoch after epoch."""

    def __init__(self, data, processes: int, index: int):
        if processes > 1:
            if not hasattr(data, "shard"):
                raise ValueError("an iterable dataset needs shard(num_shards, index) to be "
                                 "read by several processes")
            data = data.shard(processes, index)
        self.data, self.epoch, self.it, self.seen = data, 0, None, 0

    def take(self, n: int) -> list:
        out = []
        while len(out) < n:
            if self.it is None:
                if hasattr(self.data, "set_epoch"):
                    self.data.set_epoch(self.epoch)
                self.it, self.seen = iter(self.data), 0
            try:
                out.append(as_example(next(self.it)))
                self.seen += 1
            except StopIteration:
                if not self.seen:
                    raise ValueError("the iterable dataset yields no examples") from None
                self.epoch, self.it = self.epoch + 1, None
        return out


def processes(acc) -> tuple:
    """(number of processes, this one's index); from torch.distributed when it is up
    (Accelerate counts one process under DeepSpeed on the CPU)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return acc.num_processes, acc.process_index


def reduce_sum(t: torch.Tensor) -> torch.Tensor:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


def bare_model(accelerator, model):
    """The LladaVlaForActions inside DDP/FSDP/DeepSpeed and LoRA wrappers."""
    m = accelerator.unwrap_model(model)
    return m.get_base_model() if hasattr(m, "get_base_model") else m


def make_accelerator(cpu: Optional[bool] = None, model=None, **kwargs):
    """An Accelerator for this process: on the CPU when asked, when there is no CUDA (gloo
    between processes under ``accelerate launch --multi_gpu``) or when ``model`` lives on
    the CPU."""
    from accelerate import Accelerator

    if cpu is None:
        cpu = model is not None and next(model.parameters()).device.type == "cpu"
    cpu = cpu or not torch.cuda.is_available()
    if cpu and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        cpu = False  # DeepSpeed brings its own CPU accelerator (DS_ACCELERATOR=cpu)
    return Accelerator(cpu=cpu, **kwargs)


class Trainer:
    """The loop, resumable in memory: ``run(n)`` trains n more steps with the same optimizer,
    schedule and data order (segments of one run, not restarts). ``fit`` is
    ``Trainer(...).run()``. ``val`` examples are evaluated every ``cfg.eval_every`` steps
    (validation.py: loss, token accuracy, collapse warning) and at the end; ``log`` (e.g.
    ``print``) receives the evaluation lines on the main process."""

    def __init__(self, model, tokenizer, examples, cfg: FitConfig, accelerator=None,
                 out_dir=None, resume: Optional[str] = None, progress: bool = True,
                 on_step=None, val=None, log=None):
        acc = self.acc = accelerator or make_accelerator(model=model)
        self.world, self.rank = processes(acc)
        data = examples if isinstance(examples, (list, tuple)) else None
        if data is not None:
            data = [as_example(e) for e in data]
            if not data:
                raise ValueError("no training examples")
        self.data, self.cfg, self.tokenizer = data, cfg, tokenizer
        self.out_dir, self.progress, self.on_step, self.log = out_dir, progress, on_step, log
        self.val = [as_example(e) for e in val] if val else None
        known = data if data is not None else examples if hasattr(examples, "__len__") else None
        self.steps = total_steps(cfg, None if known is None else len(known))
        self.micro, self.accum = batch_layout(cfg, self.world)
        acc.gradient_accumulation_steps = self.accum
        core = self.core = bare_model(acc, model)
        self.A = core.config.num_action_tokens
        self.warmup = (cfg.warmup_steps if cfg.warmup_steps is not None
                       else int(round(cfg.warmup_ratio * self.steps)))
        for name, p in core.named_parameters():  # features come before post_layernorm
            if "post_layernorm" in name:
                p.requires_grad_(False)
        if cfg.gradient_checkpointing:
            core.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no trainable parameters (every parameter has requires_grad=False)")
        _deepspeed_setup(acc, core, self.micro, self.accum, cfg.global_batch)
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        result = self.result = FitResult(micro_batch=self.micro, accumulation=self.accum,
                                         processes=self.world)
        self.step = 0
        if resume:
            self.step, result.losses = load_checkpoint(acc, resume, cfg, self.world)
            result.resumed_from = str(resume)
        self.stream = _Stream(examples, self.world, self.rank) if data is None else None
        if self.stream is not None and self.step:
            self.stream.take(self.step * self.accum * self.micro)  # examples already seen
        self.prompts, self.pixels = {}, _PixelCache(core, data)
        self.seconds = 0.0

    def _encode(self, batch, indices, shifts):
        core, A = self.core, self.A
        images = [with_state(self.pixels.get(i, e.image), e.state)
                  for i, e in zip(indices, batch)]
        if shifts is not None:
            images = [random_shift(im, s) for im, s in zip(images, shifts)]
        prompts = [self.prompts.get(e.instruction) or self.prompts.setdefault(
            e.instruction, core.prompt_ids(e.instruction)) for e in batch]
        classes = []
        for e in batch:
            c = self.tokenizer.encode(e.actions).reshape(-1)
            if c.size != A:
                raise ValueError(f"actions must be {core.config.chunk_size}x"
                                 f"{core.config.action_dim}, got {e.actions.shape}")
            classes.append(torch.as_tensor(c))
        return images, prompts, torch.stack(classes).to(self.acc.device)

    def evaluate(self) -> dict:
        """Validation metrics now (every process runs it: sharded models need them all)."""
        from .validation import evaluate

        record = evaluate(self.core, self.tokenizer, self.val, seed=self.cfg.seed,
                          eps=self.cfg.eps, loss_type=self.cfg.loss_type, forward=self.model)
        record.update(step=self.step, seconds=round(self.seconds, 3),
                      examples_seen=self.step * self.cfg.global_batch)
        self.result.evals.append(record)
        if self.log is not None and self.rank == 0:
            from .validation import describe
            self.log(describe(record))
        return record

    def run(self, steps: Optional[int] = None) -> FitResult:
        """Train ``steps`` more steps (default: to the end), stopping early at the end of
        the run or when ``cfg.max_seconds`` of training have passed."""
        acc, cfg, result, model = self.acc, self.cfg, self.result, self.model
        stop = self.steps if steps is None else min(self.steps, self.step + int(steps))
        world, rank, micro = self.world, self.rank, self.micro
        model.train()
        bar = tqdm(range(self.step, stop), desc="train",
                   disable=not (self.progress and rank == 0), initial=self.step,
                   total=self.steps)
        for step in bar:
            started = time.perf_counter()
            total = torch.zeros((), device=acc.device)
            count = torch.zeros((), device=acc.device)
            micro_batches = []
            for a in range(self.accum):
                positions = list(range((a * world + rank) * micro,
                                       (a * world + rank + 1) * micro))
                if self.data is not None:
                    idx = example_indices(step, positions, len(self.data), cfg.global_batch,
                                          cfg.seed)
                    batch = [self.data[i] for i in idx]
                else:
                    idx, batch = [None] * micro, self.stream.take(micro)
                masked, t, shifts = position_masks(step, positions, self.A, cfg.eps, cfg.seed,
                                                   cfg.random_shift)
                if self.core.config.autoregressive:  # every token is a target
                    masked = torch.ones_like(masked)
                micro_batches.append((batch, idx, shifts, masked.to(acc.device),
                                      t.to(acc.device)))
                count += micro * self.A if cfg.reweight else masked.sum()
            count = reduce_sum(count)  # the global batch's count
            for batch, idx, shifts, masked, t in micro_batches:
                with acc.accumulate(model):
                    images, prompts, classes = self._encode(batch, idx, shifts)
                    s, _ = diffusion_sums(model, self.core, images, prompts, classes, masked,
                                          t, cfg.loss_type, cfg.reweight)
                    total += s.detach()
                    # backward divides by accumulation and DDP averages over processes: undo
                    # both, so the gradient is that of (sum over the global batch) / count
                    acc.backward(s / count.clamp(min=1) * world * self.accum)
                    if acc.sync_gradients and cfg.max_grad_norm:
                        acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
                    for g in self.optimizer.param_groups:
                        g["lr"] = cfg.lr * lr_factor(step, self.steps, self.warmup, cfg.cosine)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
            loss = float(reduce_sum(total) / count.clamp(min=1))
            result.losses.append(loss)
            self.step = result.steps = step + 1
            self.seconds += time.perf_counter() - started
            bar.set_postfix(loss=f"{loss:.4f}")
            if self.on_step is not None:
                self.on_step(step, loss)
            last = self.step == self.steps
            out_of_time = cfg.max_seconds is not None and self.seconds >= cfg.max_seconds
            if self.val and ((cfg.eval_every and self.step % cfg.eval_every == 0)
                             or last or out_of_time):
                self.evaluate()
                model.train()
            if self.out_dir is not None and ((cfg.save_every and self.step % cfg.save_every == 0)
                                             or last or out_of_time):
                save_checkpoint(acc, Path(self.out_dir) / CHECKPOINTS / f"step-{self.step}",
                                cfg, self.step, result)
            if out_of_time:
                result.stopped = f"time budget of {cfg.max_seconds:g} s"
                break
        bar.close()
        model.eval()
        result.seconds = self.seconds
        result.model, result.accelerator = model, acc
        return result

    @property
    def finished(self) -> bool:
        return self.step >= self.steps or self.result.stopped is not None


def fit(model, tokenizer, examples, cfg: FitConfig, accelerator=None, out_dir=None,
        resume: Optional[str] = None, progress: bool = True,
        on_step=None, val=None, log=None) -> FitResult:
    """Train ``model`` (a LladaVlaForActions, or a LoRA-wrapped one) on ``examples`` with the
    masked-diffusion loss; ``tokenizer`` is the ActionTokenizer. ``accelerator`` comes from
    ``make_accelerator`` (None: one made here, one process). Training checkpoints go to
    ``out_dir/checkpoints/step-N`` every ``cfg.save_every`` steps; ``resume`` is one of
    them. ``on_step(step, loss)`` is called on every process after each step; ``val`` and
    ``log`` as in ``Trainer``. ``export_state_dict(result)`` gives the weights to save."""
    return Trainer(model, tokenizer, examples, cfg, accelerator, out_dir, resume, progress,
                   on_step, val, log).run()


def random_shift(image, shift):
    """DrQ's augmentation of a ``model.processing.ImageInput``: every crop padded by ``pad``
    pixels (edge replicated) and cut back to its size ``dx, dy`` pixels off centre;
    ``shift`` = (pad, dx, dy). Returns a new ImageInput."""
    import torch.nn.functional as F

    from ..model.processing import ImageInput

    pad, dx, dy = shift
    x = image.pixels
    S = x.shape[-1]
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return ImageInput(padded[..., pad + dy:pad + dy + S, pad + dx:pad + dx + S], image.size,
                      image.state)


def with_state(image, state):
    """A preprocessed ImageInput (shared by the pixel cache) with an example's robot state."""
    from ..model.processing import ImageInput, as_state

    return image if state is None else ImageInput(image.pixels, image.size, as_state(state))


class _PixelCache:
    """Preprocessed images of a list dataset, computed once (a resize to the model's input
    per example per step otherwise costs as much as a small model's forward), kept while
    the whole dataset fits in CACHE_BYTES."""

    def __init__(self, core, data):
        self.core, self.cache, self.enabled = core, {}, False
        if data:
            first = core.preprocess(data[0].image).pixels
            self.enabled = first.numel() * first.element_size() * len(data) <= CACHE_BYTES

    def get(self, index, image):
        if not self.enabled or index is None:
            return self.core.preprocess(image)
        hit = self.cache.get(index)
        if hit is None:
            hit = self.cache[index] = self.core.preprocess(image)
        return hit


def _deepspeed_setup(acc, core, micro: int, accum: int, global_batch: int) -> None:
    """DeepSpeed needs the batch sizes in its config (no dataloader is prepared), and ZeRO-3
    must gather lm_head.weight for the model's own forward (LSC reads 32 of its rows)."""
    from accelerate.utils import DistributedType

    if acc.distributed_type != DistributedType.DEEPSPEED:
        return
    ds = acc.state.deepspeed_plugin.deepspeed_config
    ds.update(train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=accum,
              train_batch_size=global_batch)
    if ds.get("zero_optimization", {}).get("stage") == 3:
        import deepspeed

        deepspeed.zero.register_external_parameter(core, core.lm_head.weight)


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(acc, path: Path, cfg: FitConfig, step: int, result: FitResult) -> Path:
    """Accelerate's training state (model, optimizer, RNG) + step and losses so far."""
    acc.wait_for_everyone()
    acc.save_state(str(path), safe_serialization=True)
    if processes(acc)[1] == 0:
        state = {"step": step, "losses": result.losses, "config": asdict(cfg),
                 "processes": result.processes, "micro_batch": result.micro_batch,
                 "accumulation": result.accumulation}
        (path / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    acc.wait_for_everyone()
    return path


def latest_checkpoint(out_dir) -> Optional[Path]:
    root = Path(out_dir) / CHECKPOINTS
    done = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()] if root.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def load_checkpoint(acc, path, cfg: FitConfig, world: int) -> tuple:
    """Restore a training checkpoint into the prepared model/optimizer -> (step, losses)."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint (no {STATE_FILE})")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    saved = state["config"]
    for key in ("global_batch", "seed", "loss_type", "reweight", "eps"):
        if saved.get(key) != getattr(cfg, key):
            raise ValueError(f"cannot resume {path}: it was trained with {key}="
                             f"{saved.get(key)!r}, this run has {getattr(cfg, key)!r}")
    acc.load_state(str(path))
    return int(state["step"]), list(state["losses"])


def export_state_dict(result: FitResult) -> Optional[dict]:
    """The trained weights as a plain state dict of LladaVlaForActions names (LoRA merged),
    gathered on the main process (None on the others)."""
    from .lora import merge_lora_state_dict

    acc, model = result.accelerator, result.model
    acc.wait_for_everyone()
    state = acc.get_state_dict(model)
    if processes(acc)[1] != 0:
        return None
    unwrapped = acc.unwrap_model(model)
    if hasattr(unwrapped, "peft_config"):
        state = merge_lora_state_dict(state, unwrapped.peft_config["default"])
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}
