"""What hardware a fine-tuning run needs: per-GPU memory of full fine-tuning and of LoRA.

Standard per-parameter accounting (mixed precision AdamW, ZeRO paper), P parameters,
N GPUs, bytes:

- full fine-tuning keeps fp32 weights (4), fp32 gradients (4) and Adam's two moments (8):
  16 P; FSDP full-shard / ZeRO-3 split them over N GPUs (16 P / N) and gather one layer at
  a time in bf16 (2 x 2 P_layer with prefetch); DDP keeps all 16 P on every GPU;
- LoRA keeps the frozen weights in bf16 (2 P, not sharded) plus 16 bytes per trainable
  parameter (adapters + the fully trained projector);
- activations with gradient checkpointing: each layer's bf16 input is kept (2 b S H per
  layer), and one layer is recomputed at a time (about 34 b S H bytes: Korthikanti et al.,
  with fused attention so no S^2 term), for the backbone (S = prompt + action tokens) and the
  vision tower (crops x 729 tokens); without checkpointing every layer keeps its 34 b S H;
- a fixed 2 GiB for the CUDA context, allocator fragmentation and communication buffers.

b is the micro batch per GPU; S comes from the model's input (LLaDA-V's anyres prompt for
a camera image of the given size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

GIB = 1 << 30
OVERHEAD = 2 * GIB
ACT_BYTES = 34  # per token per hidden unit of one recomputed layer (16-bit)


@dataclass
class Plan:
    name: str
    parts: dict  # bytes per GPU by part
    gpu_bytes: float
    micro_batch: int

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.total <= self.gpu_bytes


def model_numbers(config, params: float = None) -> dict:
    """Parameter counts of a config (whole model, one decoder block, projector), counted on
    a model built on the meta device; ``params`` overrides the total."""
    total, block, projector = _counts(config.to_json_string())
    return {"params": float(params or total), "computed": total, "block": block,
            "projector": projector}


@lru_cache(maxsize=4)
def _counts(config_json: str) -> tuple:
    import json

    import torch

    from ..model import LladaVlaConfig, LladaVlaForActions

    with torch.device("meta"):
        m = LladaVlaForActions(LladaVlaConfig.from_dict(json.loads(config_json)))
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    return count(m), count(m.model.layers[0]), count(m.mm_projector)


def lora_params(config, rank: int, modules) -> int:
    c = config
    H, F, kv = c.hidden_size, c.intermediate_size, c.num_key_value_heads * c.head_dim
    shapes = {"q_proj": (H, H), "k_proj": (H, kv), "v_proj": (H, kv), "o_proj": (H, H),
              "gate_proj": (H, F), "up_proj": (H, F), "down_proj": (F, H)}
    n = sum(rank * sum(shapes[m]) for m in modules if m in shapes) * c.num_hidden_layers
    if "lm_head" in modules:
        n += rank * (H + c.vocab_size)
    if "embed_tokens" in modules:
        n += rank * (H + c.vocab_size)
    return n


def sequence(config, image_size=(640, 480), instruction_tokens: int = 16) -> tuple:
    """(backbone tokens, vision crops) of one example."""
    from ..model.anyres import num_crops, num_features

    text = 20 + instruction_tokens + (40 if config.system_prompt else 0)  # template + system
    return (text + num_features(config, image_size) + config.num_action_tokens,
            num_crops(config, image_size))


def activations(config, micro_batch: int, seq: int, crops: int, checkpointing=True) -> float:
    c, v = config, config.vision_config
    per_layer = micro_batch * seq * c.hidden_size
    vis = micro_batch * crops * c.num_image_tokens * v.hidden_size
    if checkpointing:
        return (2 * per_layer * c.num_hidden_layers + ACT_BYTES * per_layer
                + 2 * vis * v.num_hidden_layers + ACT_BYTES * vis)
    return ACT_BYTES * (per_layer * c.num_hidden_layers + vis * v.num_hidden_layers)


def plan(config, gpus: int, gpu_gb: float, params: float = None, micro_batch: int = 1,
         lora_rank: int = 16, lora_modules=None, image_size=(640, 480),
         checkpointing: bool = True) -> list:
    """Full fine-tuning (FSDP full shard / ZeRO-3 and DDP) and LoRA, per GPU."""
    from .lora import DEFAULT_MODULES

    n = model_numbers(config, params)
    P = n["params"]
    seq, crops = sequence(config, image_size)
    act = activations(config, micro_batch, seq, crops, checkpointing)
    gpu = gpu_gb * GIB
    lora = lora_params(config, lora_rank, lora_modules or DEFAULT_MODULES) + n["projector"]
    plans = [
        Plan(f"full fine-tuning, FSDP full shard / ZeRO-3 over {gpus} GPU(s)",
             {"weights+grads+Adam (16 P / N)": 16 * P / gpus,
              "gathered layers (2 x 2 P_layer)": 4 * n["block"],
              "activations": act, "overhead": OVERHEAD}, gpu, micro_batch),
        Plan(f"full fine-tuning, DDP on {gpus} GPU(s)",
             {"weights+grads+Adam (16 P)": 16 * P, "activations": act, "overhead": OVERHEAD},
             gpu, micro_batch),
        Plan(f"LoRA rank {lora_rank} (+ projector), 1 GPU or DDP",
             {"frozen bf16 weights (2 P)": 2 * P,
              f"trainable {lora / 1e6:.1f} M params (16 B each)": 16 * lora,
              "activations": act, "overhead": OVERHEAD}, gpu, micro_batch),
    ]
    return plans


def largest_micro_batch(config, plan_index: int, **kwargs) -> int:
    """The largest micro batch (power of two, <= 64) with which plan ``plan_index`` fits."""
    best = 0
    for b in (1, 2, 4, 8, 16, 32, 64):
        if plan(config, micro_batch=b, **kwargs)[plan_index].fits:
            best = b
    return best


def format_plan(config, gpus: int, gpu_gb: float, global_batch: int = 128, **kwargs) -> str:
    plans = plan(config, gpus, gpu_gb, **kwargs)
    n = model_numbers(config, kwargs.get("params"))
    seq, crops = sequence(config, kwargs.get("image_size", (640, 480)))
    lines = [f"model: {n['params'] / 1e9:.2f} B parameters; one example = {seq} backbone "
             f"tokens ({config.image_aspect_ratio} input), {crops} vision crop(s); "
             f"{gpus} x {gpu_gb:g} GiB GPUs, micro batch {plans[0].micro_batch}, gradient "
             f"checkpointing {'on' if kwargs.get('checkpointing', True) else 'off'}"]
    for i, p in enumerate(plans):
        lines.append(f"\n{p.name}: {p.total / GIB:.1f} GiB per GPU -> "
                     f"{'fits' if p.fits else 'does NOT fit'} in {gpu_gb:g} GiB")
        lines += [f"  {k:<40} {v / GIB:8.2f} GiB" for k, v in p.parts.items()]
        b = largest_micro_batch(config, i, gpus=gpus, gpu_gb=gpu_gb,
                                **{k: v for k, v in kwargs.items() if k != "micro_batch"})
        if b:
            per_step = b * (gpus if i < 2 else 1)
            accum = math.ceil(global_batch / per_step)
            lines.append(f"  largest micro batch that fits: {b} -> global batch "
                         f"{global_batch} = {b} x {gpus if i < 2 else 1} GPU(s) x {accum} "
                         "accumulation steps")
    lines.append(f"\nhost memory per process while loading: full fine-tuning float32 "
                 f"(4 P = {4 * n['params'] / GIB:.0f} GiB), LoRA bfloat16 "
                 f"(2 P = {2 * n['params'] / GIB:.0f} GiB)")
    return "\n".join(lines)
