"""Checkpoint I/O: safetensors only, local directories only, no remote code.

``load_checkpoint(cls, dir)`` (behind ``LladaVlaForActions.from_pretrained``) loads a
LLaDA-VLA checkpoint written by ``save_pretrained``. ``load_language_model_weights(model,
src)`` loads LLaDA-V weights (Llama names, plus LLaVA-style ``model.vision_tower.*`` /
``model.mm_projector.{0,2}.*`` / ``model.image_newline``) or original LLaDA weights (OLMo
names) into a model, reporting missing and unexpected keys. This module does not import
the model (modeling.py imports it): the model class is an argument.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from .configuration import SQUARE_INPUT, LladaVlaConfig
from .files import PICKLE_SUFFIXES, refuse_pickle, safetensors_files
from .processing import load_text_tokenizer

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}

# original LLaDA (OLMo) block names -> Llama names
OLMO_BLOCK = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
              "v_proj": "self_attn.v_proj", "attn_out": "self_attn.o_proj",
              "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj",
              "attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm"}
OLMO_TOP = {"model.transformer.wte.weight": "model.embed_tokens.weight",
            "model.transformer.ln_f.weight": "model.norm.weight",
            "model.transformer.ff_out.weight": "lm_head.weight"}
OLMO_BLOCK_RE = re.compile(r"model\.transformer\.blocks\.(\d+)\.(\w+)\.(weight|bias)")
VOCAB_KEYS = ("model.embed_tokens.weight", "lm_head.weight")


def resolve_dtype(torch_dtype, device) -> torch.dtype:
    """None/''/'auto' -> bfloat16 on CUDA, float32 elsewhere; names or torch dtypes."""
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if torch_dtype in (None, "", "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    name = str(torch_dtype).replace("torch.", "")
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {torch_dtype!r}; use one of {sorted(DTYPES)}")
    return DTYPES[name]


def map_name(name: str, vision_prefix: str = "") -> str:
    """A checkpoint tensor name -> this model's name (unknown names pass through)."""
    if name in OLMO_TOP:
        return OLMO_TOP[name]
    m = OLMO_BLOCK_RE.fullmatch(name)
    if m and m.group(2) in OLMO_BLOCK:
        return f"model.layers.{m.group(1)}.{OLMO_BLOCK[m.group(2)]}.{m.group(3)}"
    for head in ("model.vision_tower.", "vision_tower."):
        if name.startswith(head):
            rest = name[len(head):]
            while rest.startswith(("vision_tower.", "vision_model.")):
                rest = rest.split(".", 1)[1]
            return "vision_tower." + vision_prefix + rest
    if name.startswith("model.mm_projector.") or name == "model.image_newline":
        return name[len("model."):]
    return name


@dataclass
class LoadReport:
    loaded: int = 0
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    vocab_resized: Optional[tuple] = None  # (old, new) vocabulary size of the model
    new_rows: list = field(default_factory=list)  # ids absent from the checkpoint (mean-init)

    def __str__(self):
        lines = [f"loaded {self.loaded} tensors"]
        if self.missing:
            lines.append(f"missing ({len(self.missing)}): {_summary(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected ({len(self.unexpected)}): {_summary(self.unexpected)}")
        if self.vocab_resized:
            lines.append(f"vocabulary resized {self.vocab_resized[0]} -> {self.vocab_resized[1]}")
        if self.new_rows:
            lines.append(f"{len(self.new_rows)} token rows not in the checkpoint (initialized "
                         f"to the mean row): {self.new_rows[0]}..{self.new_rows[-1]}")
        return "; ".join(lines)


def _summary(names: list, n: int = 6) -> str:
    return ", ".join(names[:n]) + (f", ... (+{len(names) - n})" if len(names) > n else "")


class _Source:
    """Tensors by name from a state dict or safetensors files (read lazily)."""

    def __init__(self, src):
        self._stack = contextlib.ExitStack()
        self._where = {}
        if isinstance(src, dict):
            self._dict = src
            self.names = list(src)
            return
        from safetensors import safe_open

        self._dict = None
        for f in safetensors_files(src):
            handle = self._stack.enter_context(safe_open(str(f), framework="pt", device="cpu"))
            for k in handle.keys():
                self._where[k] = handle
        self.names = list(self._where)

    def shape(self, name) -> tuple:
        if self._dict is not None:
            return tuple(self._dict[name].shape)
        return tuple(self._where[name].get_slice(name).get_shape())

    def get(self, name) -> torch.Tensor:
        return self._dict[name] if self._dict is not None else self._where[name].get_tensor(name)

    def close(self):
        self._stack.close()


def _vision_prefix(model) -> str:
    tail = "embeddings.patch_embedding.weight"
    for k in model.vision_tower.state_dict():
        if k.endswith(tail):
            return k[: -len(tail)]
    return ""


def _resize_vocab(model, size: int) -> None:
    w = model.lm_head.weight
    hidden = model.config.hidden_size
    model.model.embed_tokens = nn.Embedding(size, hidden, device=w.device, dtype=w.dtype)
    model.lm_head = nn.Linear(hidden, size, bias=False, device=w.device, dtype=w.dtype)
    model.config.vocab_size = size


@torch.no_grad()
def load_language_model_weights(model, path_or_state_dict,
                                strict: bool = False) -> LoadReport:
    """Copy weights into ``model`` by name (LLaDA-V Llama names, LLaVA vision/projector names,
    original LLaDA OLMo names, or this model's own names). Returns a LoadReport; with
    ``strict`` any missing or unexpected key raises ValueError. The embedding and LM head are
    resized only to hold the checkpoint's vocabulary plus any special/action id outside it
    (rows the checkpoint lacks start as its mean row)."""
    src = _Source(path_or_state_dict)
    try:
        prefix = _vision_prefix(model)
        names = {n: map_name(n, prefix) for n in src.names}
        if len(set(names.values())) != len(names):
            raise ValueError("several checkpoint tensors map to the same name (mixed formats?)")
        report = LoadReport()
        src_vocab = None
        for n, t in names.items():
            if t in VOCAB_KEYS:
                rows = src.shape(n)[0]
                if src_vocab is not None and rows != src_vocab:
                    raise ValueError(f"embedding and LM head rows differ ({src_vocab} vs {rows})")
                src_vocab = rows
        c = model.config
        if src_vocab is not None:
            needed = 1 + max(c.action_token_ids + [c.mask_token_id, c.bos_token_id,
                                                   c.eos_token_id, c.start_header_id,
                                                   c.end_header_id, c.eot_token_id])
            size = max(src_vocab, needed)
            if size != c.vocab_size:
                report.vocab_resized = (c.vocab_size, size)
                _resize_vocab(model, size)
            report.new_rows = list(range(src_vocab, size))
        params = dict(model.state_dict(keep_vars=True))
        for n, t in names.items():
            if t not in params:
                report.unexpected.append(n)
                continue
            tensor, dest = src.get(n), params.pop(t)
            if t in VOCAB_KEYS and tensor.shape[0] < dest.shape[0]:
                dest[: tensor.shape[0]].copy_(tensor)
                dest[tensor.shape[0]:].copy_(tensor.float().mean(0, keepdim=True))
            elif tuple(tensor.shape) != tuple(dest.shape):
                raise ValueError(f"shape mismatch for {n} -> {t}: checkpoint "
                                 f"{tuple(tensor.shape)}, model {tuple(dest.shape)}")
            else:
                dest.copy_(tensor)
            report.loaded += 1
        report.missing = sorted(params)
    finally:
        src.close()
    if strict and (report.missing or report.unexpected):
        raise ValueError(f"checkpoint does not match the model: {report}")
    if report.missing or report.unexpected or report.new_rows:
        log.warning("load_language_model_weights: %s", report)
    return report


def load_checkpoint(model_cls, directory, torch_dtype=None, device=None):
    """Load a LLaDA-VLA checkpoint directory: config.json + safetensors (+ tokenizer.json)
    into a new ``model_cls``. Default device cpu; default dtype float32 on CPU, bfloat16 on
    CUDA. Returns eval mode. A config.json older than the input options (no
    ``image_aspect_ratio``) keeps the square input it was trained with."""
    directory = Path(directory).expanduser()
    if directory.is_file():
        if directory.suffix in PICKLE_SUFFIXES:
            refuse_pickle(directory)
        raise ValueError(f"give the checkpoint directory, not the file {directory}")
    safetensors_files(directory)  # refuses pickle-only checkpoints early
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no config.json in {directory}")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    if cfg.get("model_type") != LladaVlaConfig.model_type:
        raise ValueError(f"{cfg_path} has model_type {cfg.get('model_type')!r}, expected "
                         f"{LladaVlaConfig.model_type!r}")
    if "image_aspect_ratio" not in cfg:
        cfg.update(SQUARE_INPUT)
    config = LladaVlaConfig.from_dict(cfg)
    device = torch.device(device or "cpu")
    dtype = resolve_dtype(torch_dtype, device)
    with _no_init(), default_dtype(dtype), device:
        model = model_cls(config)
    load_language_model_weights(model, directory, strict=True)
    model.config.dtype = dtype
    model.tokenizer = load_text_tokenizer(directory)
    return model.eval()


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Build modules directly in ``dtype`` (no fp32 copy first)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _no_init():
    """Skip random initialization (every weight is loaded afterwards)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()
