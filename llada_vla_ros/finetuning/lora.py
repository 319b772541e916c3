"""LoRA with peft: low-rank adapters on the backbone's projections, the projector trained
fully, and the adapters merged into the weights when the result is saved (the node loads a
plain checkpoint).

Module names (``modules``): the backbone's ``q_proj k_proj v_proj o_proj gate_proj up_proj
down_proj`` (in every decoder layer only: the SigLIP tower has its own q/k/v_proj, left
frozen), ``lm_head`` and ``embed_tokens``. ``train`` names modules trained in full.
"""
from __future__ import annotations

import re

BACKBONE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TOP = {"lm_head": r"lm_head", "embed_tokens": r"model\.embed_tokens"}
DEFAULT_MODULES = BACKBONE + ("lm_head",)
PEFT_PREFIX = "base_model.model."


def target_pattern(modules) -> str:
    """A regex that peft full-matches against module names."""
    modules = list(modules)
    bad = sorted(set(modules) - set(BACKBONE) - set(TOP))
    if bad or not modules:
        raise ValueError(f"unknown LoRA module(s) {bad}; choose from {list(BACKBONE + tuple(TOP))}")
    parts = [TOP[m] for m in modules if m in TOP]
    inner = [m for m in modules if m in BACKBONE]
    if inner:
        parts.append(r"model\.layers\.\d+\.(?:self_attn|mlp)\.(?:" + "|".join(inner) + ")")
    return "|".join(f"(?:{p})" for p in parts)


def add_lora(model, rank: int = 16, alpha=None, modules=DEFAULT_MODULES, dropout: float = 0.0,
             train=("mm_projector",)):
    """Wrap ``model`` with LoRA adapters (peft); only the adapters and ``train`` learn."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=dropout,
                        target_modules=target_pattern(modules),
                        modules_to_save=list(train) or None, bias="none")
    return get_peft_model(model, config)


def merge_lora_state_dict(state: dict, config) -> dict:
    """A peft model's full state dict -> the plain model's, with W + (alpha/r) B A merged
    into every adapted weight (works on a state dict gathered from FSDP/ZeRO-3 too)."""
    scale = config.lora_alpha / (config.r ** 0.5 if config.use_rslora else config.r)
    plain, lora = {}, {}
    for key, value in state.items():
        k = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        m = re.fullmatch(r"(.+)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
                         r"\.default(?:\.weight)?", k)
        if m:
            lora[(m.group(1), m.group(2))] = value
        elif ".original_module." not in k:
            plain[k.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")] = value
    for (module, kind), a in lora.items():
        if kind == "lora_A":
            delta = lora[(module, "lora_B")].float() @ a.float()
        elif kind == "lora_embedding_A":
            delta = (lora[(module, "lora_embedding_B")].float() @ a.float()).T
        else:
            continue
        w = plain[module + ".weight"]
        plain[module + ".weight"] = (w.float() + scale * delta).to(w.dtype)
    return plain


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
