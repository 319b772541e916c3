"""LLaDA-VLA in one file: SigLIP vision tower -> mlp2x_gelu projector -> LLaDA backbone.

The backbone is a Llama-architecture transformer (RMSNorm, RoPE, SwiGLU, no biases, GQA,
untied LM head) with LLaDA-V's weight names, and bidirectional attention by default.

Inference interface (what the decoder uses)::

    obs = model.prepare(image_rgb, instruction)            # vision + projector, once
    logits, cache = model.action_logits(obs, classes)      # (B, K*D, V_a) localized logits
    logits, cache = model.action_logits(obs, classes, update_cache=True)  # + prompt K/V
    logits, _ = model.action_logits(obs, classes, cache=cache)  # only the action positions

``classes`` holds local action classes 0..V_a-1 and -1 for masked positions.
Autoregressive use (baseline benchmarks): ``model.model(embeds, causal=True, use_cache=True)``
then feed new embeddings with ``past_key_values=cache``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel, SiglipVisionModel

from . import anyres
from .checkpoint import load_checkpoint
from .configuration import LladaVlaConfig
from .processing import ImageInput, build_prompt_ids, preprocess_crops

try:  # transformers >= 4.52: layers that model.gradient_checkpointing_enable() recomputes
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # pragma: no cover
    GradientCheckpointingLayer = nn.Module


# ----------------------------------------------------------------------------- caches, inputs

@dataclass
class KVCache:
    """Per-layer (key, value) tensors, each (B, n_kv_heads, T, head_dim); keys after RoPE."""

    layers: list = field(default_factory=list)

    @property
    def length(self) -> int:
        return int(self.layers[0][0].shape[2]) if self.layers else 0

    @property
    def batch_size(self) -> int:
        return int(self.layers[0][0].shape[0]) if self.layers else 0

    def truncate(self, length: int) -> "KVCache":
        """The first ``length`` positions (a new cache; tensors are views)."""
        return KVCache([(k[:, :, :length], v[:, :, :length]) for k, v in self.layers])


PrefixCache = KVCache  # the prompt's K/V, reused while the action tokens are decoded


@dataclass
class Observation:
    """One prepared (image, instruction): everything before the action tokens.

    prefix_embeds: (1, P, H) prompt embeddings with the projected image features spliced in.
    prompt_ids: prompt ids (P - N + 1 of them) with ``config.image_token_index`` for the image.
    image_span: [start, stop) of the N image features inside ``prefix_embeds``.
    A batch of observations (``prepare_batch``): (B, P, H) left-padded embeddings with
    ``prefix_valid`` (B, P) marking the real positions; ids, span and instruction of row 0.
    """

    prefix_embeds: torch.Tensor
    prompt_ids: list
    image_span: tuple
    instruction: str
    prefix_valid: Optional[torch.Tensor] = None

    @property
    def prefix_len(self) -> int:
        return int(self.prefix_embeds.shape[1])


# ----------------------------------------------------------------------------- backbone

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope(positions: torch.Tensor, head_dim: int, theta: float):
    """cos, sin for ``positions`` (T,) or (B, T): shapes (T, hd) or (B, 1, T, hd), float32."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device,
                                            dtype=torch.float32) / head_dim)
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    if positions.dim() == 2:
        cos, sin = cos[:, None], sin[:, None]
    return cos, sin


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, c: LladaVlaConfig):
        super().__init__()
        self.n_head, self.n_kv, self.head_dim = (c.num_attention_heads, c.num_key_value_heads,
                                                 c.head_dim)
        self.q_proj = nn.Linear(c.hidden_size, self.n_head * self.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, c.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask=None, past=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None:
            pk, pv = past
            if pk.shape[0] != B:
                pk, pv = pk.expand(B, -1, -1, -1), pv.expand(B, -1, -1, -1)
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        kv = (k, v)
        if self.n_kv != self.n_head:  # grouped-query attention
            k = k.repeat_interleave(self.n_head // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1)), kv


class MLP(nn.Module):
    def __init__(self, c: LladaVlaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(GradientCheckpointingLayer):
    def __init__(self, c: LladaVlaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask=None, past=None):
        a, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, kv


def causal_mask(T: int, S: int, device) -> torch.Tensor:
    """(T, S) bool: the T newest of S positions attend to themselves and everything before."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


def padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) from the (B, S) real positions of left-padded rows: every query sees the
    real keys and itself (a padding query with no key at all would give NaN under a causal
    mask, and NaN values leak through zero attention weights)."""
    eye = torch.eye(valid.shape[1], dtype=torch.bool, device=valid.device)
    return (valid[:, None, :] | eye)[:, None]


class Backbone(nn.Module):
    """LLaDA's transformer: ``embed_tokens``, ``layers``, final ``norm`` (Llama names)."""

    def __init__(self, c: LladaVlaConfig):
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, inputs_embeds, positions=None, attention_mask=None, causal=False,
                past_key_values: Optional[KVCache] = None, use_cache=False):
        """inputs_embeds (B, T, H) -> (normed hidden (B, T, H), KVCache or None).

        positions: (T,) or (B, T) RoPE positions (default: after the cache).
        attention_mask: bool, True = may attend, broadcastable to (B, 1, T, past + T).
        causal: each position attends only to itself and earlier ones (incl. the cache).
        past_key_values: K/V of earlier positions; use_cache: return past + these K/V.
        """
        B, T, _ = inputs_embeds.shape
        past = past_key_values.length if past_key_values is not None else 0
        device = inputs_embeds.device
        if positions is None:
            positions = torch.arange(past, past + T, device=device)
        mask = attention_mask
        if causal:
            cm = causal_mask(T, past + T, device)
            mask = cm if mask is None else mask & cm
        cos, sin = rope(positions, self.config.head_dim, self.config.rope_theta)
        x, cache = inputs_embeds, KVCache() if use_cache else None
        for i, layer in enumerate(self.layers):
            layer_past = past_key_values.layers[i] if past_key_values is not None else None
            x, kv = layer(x, cos, sin, mask, layer_past)
            if use_cache:
                cache.layers.append(kv)
        return self.norm(x), cache


# ----------------------------------------------------------------------------- vision options

class ConvStem(nn.Module):
    """``vision_stem='conv'``: 3x3 stride-2 convolutions (GELU between; 32, 64, ... channels)
    from the image down to the patch grid, then a 1x1 projection to the tower's width. It
    replaces SigLIP's one-convolution patch embedding (same output: (B, width, T, T))."""

    def __init__(self, channels: int, width: int, patch_size: int):
        super().__init__()
        sizes = [channels] + [min(width, 32 * 2 ** i) for i in range(int(math.log2(patch_size)))]
        layers = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GELU()]
        self.layers = nn.Sequential(*layers, nn.Conv2d(sizes[-1], width, 1))

    @property
    def weight(self) -> torch.Tensor:  # SigLIP's embeddings read the patch conv's dtype
        return self.layers[0].weight

    def forward(self, x):
        return self.layers(x)


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid*grid, dim) fixed position table in row-major patch order: the first half of
    each row encodes the patch's row, the second half its column (MAE's 2-D sin-cos)."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(grid, dtype=torch.float64)[:, None] * omega  # (grid, dim/4)
    one = torch.cat([pos.sin(), pos.cos()], dim=1)  # (grid, dim/2)
    rows = one[:, None, :].expand(grid, grid, -1)
    cols = one[None, :, :].expand(grid, grid, -1)
    return torch.cat([rows, cols], dim=-1).reshape(grid * grid, dim).float()


class SpatialKeypoints(nn.Module):
    """``vision_keypoints=K``: a small convolutional branch beside the vision tower whose K
    feature maps (at a quarter of the image size) become their expected image coordinates
    under a spatial softmax (Levine et al. 2016, "End-to-end training of deep visuomotor
    policies"), projected into one extra image token. A tower trained from scratch learns
    where small objects are slowly; coordinates it can read directly, it uses at once. With
    ``moments`` each map also gives its spread: the standard deviations of x and y under the
    softmax and their correlation. With ``pooled`` the token also gets the branch's hidden
    features max-pooled over the image (translation-invariant: which local patterns, such as
    an edge at some angle, appear anywhere), i.e. which way an elongated object lies."""

    HIDDEN = 64  # channels of the branch's last hidden layer

    def __init__(self, keypoints: int, width: int, moments: bool = False,
                 pooled: bool = False):
        super().__init__()
        self.moments, self.pooled = bool(moments), bool(pooled)
        self.convs = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, self.HIDDEN, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(self.HIDDEN, self.HIDDEN, 3, padding=1), nn.GELU(),
            nn.Conv2d(self.HIDDEN, keypoints, 1))
        self.log_temperature = nn.Parameter(torch.zeros(()))
        inputs = (5 if moments else 2) * keypoints + (self.HIDDEN if pooled else 0)
        self.proj = nn.Sequential(nn.Linear(inputs, width), nn.GELU(), nn.Linear(width, width))

    def coordinates(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, K, 2) expected (x, y) in [-1, 1] of each feature map; with
        ``moments`` (B, K, 5): then std x, std y and the x-y correlation."""
        return self.spatial_softmax(self.convs(pixels))

    def spatial_softmax(self, f: torch.Tensor) -> torch.Tensor:
        """``coordinates`` from the maps (B, K, H, W)."""
        B, K, H, W = f.shape
        p = torch.softmax(f.flatten(2).float() / self.log_temperature.exp(), -1).view(B, K, H, W)
        xs = torch.linspace(-1, 1, W, device=f.device)
        ys = torch.linspace(-1, 1, H, device=f.device)
        px, py = p.sum(2), p.sum(3)  # marginals over x (B, K, W) and y (B, K, H)
        mx, my = (px * xs).sum(-1), (py * ys).sum(-1)
        out = [mx, my]
        if self.moments:
            dx, dy = xs - mx[..., None], ys - my[..., None]
            sx = ((px * dx ** 2).sum(-1) + 1e-6).sqrt()
            sy = ((py * dy ** 2).sum(-1) + 1e-6).sqrt()
            cov = (p * dy[..., :, None] * dx[..., None, :]).sum((-2, -1))
            out += [sx, sy, cov / (sx * sy)]
        return torch.stack(out, -1).to(f.dtype)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 1, width) keypoint token."""
        return self.proj(self.features(pixels))[:, None]

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> what the token is projected from: the K maps' coordinates (and
        moments), flattened, then with ``pooled`` the hidden features' maxima (B, HIDDEN)."""
        if not self.pooled:
            return self.coordinates(pixels).flatten(1)
        hidden = self.convs[:-1](pixels)
        return torch.cat([self.spatial_softmax(self.convs[-1](hidden)).flatten(1),
                          hidden.amax((2, 3))], 1)


def fix_position_table(tower: SiglipVisionModel, c: LladaVlaConfig) -> None:
    """``vision_position_embedding='sincos2d'``: the tower's position table set to
    ``sincos_2d`` and frozen."""
    v, emb = c.vision_config, tower.embeddings
    table = sincos_2d(int(v.image_size) // int(v.patch_size), int(v.hidden_size))
    with torch.no_grad():
        emb.position_embedding.weight.copy_(table)
    emb.position_embedding.weight.requires_grad_(False)


# ----------------------------------------------------------------------------- the model

class LladaVlaForActions(PreTrainedModel):
    """Vision tower + projector + LLaDA backbone + LM head, predicting action tokens."""

    config_class = LladaVlaConfig
    config: LladaVlaConfig
    base_model_prefix = "llada_vla"
    main_input_name = "pixel_values"
    _no_split_modules = ["Block", "SiglipEncoderLayer"]
    supports_gradient_checkpointing = True

    def __init__(self, config: LladaVlaConfig):
        super().__init__(config)
        c = config
        self.vision_tower = SiglipVisionModel(c.vision_config)
        if c.vision_stem == "conv":
            v = c.vision_config
            self.vision_tower.embeddings.patch_embedding = ConvStem(
                int(v.num_channels), int(v.hidden_size), int(v.patch_size))
        self.mm_projector = nn.Sequential(  # "mlp2x_gelu"
            nn.Linear(c.vision_config.hidden_size, c.hidden_size), nn.GELU(),
            nn.Linear(c.hidden_size, c.hidden_size))
        if c.vision_keypoints:
            self.keypoints = SpatialKeypoints(c.vision_keypoints, c.hidden_size,
                                              c.vision_keypoint_moments,
                                              c.vision_keypoint_pooled)
        if c.state_dim:  # the robot state token (an option of this package)
            self.state_projector = nn.Sequential(
                nn.Linear(len(c.state_inputs), c.hidden_size), nn.GELU(),
                nn.Linear(c.hidden_size, c.hidden_size))
        self.model = Backbone(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        if c.uses_image_newline:  # LLaDA-V's model.image_newline, ends each feature row
            self.image_newline = nn.Parameter(torch.randn(c.hidden_size) / c.hidden_size ** 0.5)
        self.tokenizer = None  # text tokenizer; from_pretrained attaches tokenizer.json
        self.post_init()
        if c.vision_position_embedding == "sincos2d":  # after post_init's random table
            fix_position_table(self.vision_tower, c)
        if c.vision_keypoints:  # torch's fan-in init (post_init's std 0.02 flattens the maps)
            for m in self.keypoints.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.reset_parameters()

    # -- loading / saving (safetensors only, local directories only; see checkpoint.py)
    @classmethod
    def from_pretrained(cls, path, torch_dtype=None, device=None, dtype=None, **kwargs):
        """Load a local checkpoint directory (config.json + safetensors [+ tokenizer.json]).
        dtype default: float32 on CPU, bfloat16 on CUDA. Never runs remote code."""
        if kwargs:
            raise TypeError(f"unsupported from_pretrained arguments: {sorted(kwargs)}")
        return load_checkpoint(cls, path, torch_dtype=torch_dtype or dtype, device=device)

    def save_pretrained(self, save_directory, **kwargs):
        """config.json + model.safetensors, plus tokenizer files when a tokenizer is set."""
        super().save_pretrained(save_directory, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)

    # -- prompt
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) crops -> (B, T*T, H) projected features. Features are the output of
        the last kept encoder layer, before post_layernorm (LLaVA's ``hidden_states[-1]``),
        then the keypoint token when the config has one."""
        out = self.vision_tower(pixel_values, output_hidden_states=True)
        feats = self.mm_projector(out.hidden_states[-1])
        if self.config.vision_keypoints:
            feats = torch.cat([feats, self.keypoints(pixel_values.to(feats.dtype))], dim=1)
        return feats

    def image_features(self, images) -> list:
        """ImageInputs (or a (B, 3, S, S) tensor of square-input images) -> one (N_i, H)
        tensor of prompt features per image: every crop of the batch goes through the
        vision tower in one pass, then anyres.merge lays each image's features out; a model
        with ``state_dim`` appends each image's robot state token (``state_token``)."""
        if isinstance(images, torch.Tensor):
            images = [ImageInput(p[None], (p.shape[-1], p.shape[-2])) for p in images]
        feats = self.encode_images(torch.cat([im.pixels for im in images]))
        out, start = [], 0
        newline = getattr(self, "image_newline", None)
        for im in images:
            n = im.pixels.shape[0]
            merged = anyres.merge(feats[start:start + n], im.size, self.config, newline)
            if self.config.state_dim:
                merged = torch.cat([merged, self.state_token(im.state).to(merged.dtype)])
            out.append(merged)
            start += n
        return out

    STATE_STD_FLOOR = 1e-2  # a state value that barely varies in the data is not amplified

    def set_state_statistics(self, states) -> None:
        """The standardization of the robot state (config ``state_mean``/``state_std``) from
        the training examples' states, (N, state_dim)."""
        s = np.asarray(states, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] != self.config.state_dim or not len(s):
            raise ValueError(f"need (N, {self.config.state_dim}) robot states, got {s.shape}")
        self.config.state_mean = [float(v) for v in s.mean(0)]
        self.config.state_std = [float(v) for v in np.maximum(s.std(0), self.STATE_STD_FLOOR)]

    def state_token(self, state) -> torch.Tensor:
        """(state_dim,) robot state -> (1, H): standardized with the config's statistics,
        the values named by ``state_features`` kept (all by default), then projected.
        ValueError naming the cause when it is missing or malformed."""
        c = self.config
        if state is None:
            raise ValueError(f"this model takes the robot state ({c.state_dim} values: "
                             "kinematics.robot_state of the arm joints and gripper); none given")
        w = self.state_projector[0].weight
        s = torch.as_tensor(state, dtype=torch.float32, device=w.device).reshape(-1)
        if s.numel() != c.state_dim or not torch.isfinite(s).all():
            raise ValueError(f"robot state must be {c.state_dim} finite values, got "
                             f"{s.tolist()}")
        if c.state_mean is not None:
            s = s - torch.tensor(c.state_mean, device=w.device)
        if c.state_std is not None:
            s = s / torch.tensor(c.state_std, device=w.device)
        return self.state_projector(s[c.state_inputs].to(w.dtype))[None]

    def embed_prompt(self, prompt_ids: Sequence[int], image_features: torch.Tensor):
        """Prompt ids with one image placeholder + (N, H) features -> ((P, H), image span)."""
        ids = list(prompt_ids)
        marker = self.config.image_token_index
        if ids.count(marker) != 1:
            raise ValueError(f"prompt must hold exactly one image placeholder ({marker})")
        i = ids.index(marker)
        dev = self.lm_head.weight.device
        before = self.model.embed_tokens(torch.tensor(ids[:i], dtype=torch.long, device=dev))
        after = self.model.embed_tokens(torch.tensor(ids[i + 1:], dtype=torch.long, device=dev))
        feats = image_features.to(before.dtype)
        return torch.cat([before, feats, after], dim=0), (i, i + feats.shape[0])

    def prefix_embeds(self, images, prompts: Sequence[Sequence[int]]):
        """B images (see image_features) + B prompts -> (B, P, H) left-padded prefix and
        (B, P) validity mask."""
        feats = self.image_features(images)
        rows = [self.embed_prompt(p, f)[0] for p, f in zip(prompts, feats)]
        P = max(r.shape[0] for r in rows)
        out = rows[0].new_zeros(len(rows), P, rows[0].shape[1])
        valid = torch.zeros(len(rows), P, dtype=torch.bool, device=out.device)
        for b, r in enumerate(rows):
            out[b, P - r.shape[0]:] = r
            valid[b, P - r.shape[0]:] = True
        return out, valid

    def preprocess(self, image_rgb: np.ndarray, state=None) -> ImageInput:
        """uint8 HxWx3 RGB (any size) [+ robot state] -> ImageInput (crops on the model's
        device and dtype)."""
        w = self.lm_head.weight
        return preprocess_crops(image_rgb, self.config, w.device, w.dtype, state)

    def prompt_ids(self, instruction: str) -> list:
        if self.tokenizer is None:
            raise RuntimeError("no text tokenizer set: load a checkpoint directory holding "
                               "tokenizer.json, or assign model.tokenizer")
        return build_prompt_ids(self.tokenizer, instruction, self.config)

    @torch.no_grad()
    def prepare(self, image_rgb: np.ndarray, instruction: str, state=None) -> Observation:
        """Run the vision tower + projector once and build the (1, P, H) prompt embeddings.
        Raises ValueError on a bad image (not HxWx3 uint8, empty), an empty instruction, or
        a missing or malformed robot state (a model with ``state_dim``)."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("instruction is empty")
        image = self.preprocess(image_rgb, state)
        ids = self.prompt_ids(instruction)
        embeds, span = self.embed_prompt(ids, self.image_features([image])[0])
        return Observation(embeds[None], ids, span, instruction)

    @torch.no_grad()
    def prepare_batch(self, images, instructions: Sequence[str], states=None) -> Observation:
        """``prepare`` for B (image, instruction[, state]) in one vision pass: an Observation
        of B left-padded rows, for batched ``action_logits`` and decoding."""
        if len(images) != len(instructions) or not len(images):
            raise ValueError("give as many images as instructions, at least one")
        states = [None] * len(images) if states is None else list(states)
        if len(states) != len(images):
            raise ValueError("give as many robot states as images")
        for text in instructions:
            if not isinstance(text, str) or not text.strip():
                raise ValueError("instruction is empty")
        ids = [self.prompt_ids(t) for t in instructions]
        embeds, valid = self.prefix_embeds(
            [self.preprocess(im, st) for im, st in zip(images, states)], ids)
        marker = ids[0].index(self.config.image_token_index)
        span = (marker, marker + embeds.shape[1] - len(ids[0]) + 1)
        return Observation(embeds, ids[0], span, instructions[0], valid)

    # -- action positions
    def action_token_ids(self, device=None) -> torch.Tensor:
        return torch.tensor(self.config.action_token_ids, dtype=torch.long,
                            device=device or self.lm_head.weight.device)

    def classes_to_ids(self, classes) -> torch.Tensor:
        """(B, K*D) local classes (-1 = masked) -> vocabulary ids (mask id where masked)."""
        c = torch.as_tensor(classes, device=self.lm_head.weight.device).long()
        A, V = self.config.num_action_tokens, self.config.num_bins
        if c.dim() != 2 or c.shape[1] != A:
            raise ValueError(f"classes must be (batch, {A}), got {tuple(c.shape)}")
        if c.numel() and (int(c.min()) < -1 or int(c.max()) >= V):
            raise ValueError(f"classes must lie in -1..{V - 1}")
        ids = self.action_token_ids(c.device)[c.clamp(min=0)]
        return torch.where(c < 0, torch.full_like(c, self.config.mask_token_id), ids)

    def localized_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states times the V_a LM-head rows of the action tokens: (..., V_a)."""
        return hidden @ self.lm_head.weight[self.action_token_ids(hidden.device)].T

    def action_hidden(self, prefix_embeds, action_ids, prefix_valid=None,
                      cache: Optional[KVCache] = None, use_cache=False):
        """Final hidden states (B, A, H) at the action positions.

        Without ``cache``: one pass over [prefix | actions]; ``use_cache`` also returns the
        prefix positions' K/V from that pass. With ``cache``: only the actions go through
        the backbone, attending to the cached prefix K/V and to themselves.
        ``prefix_valid`` (B, P): the real positions of a left-padded prefix.
        An autoregressive model (``config.autoregressive``) reads [prefix | a_0 .. a_{A-2}]
        causally: the hidden state before each action token predicts it.
        """
        if self.config.autoregressive:
            return self._causal_hidden(prefix_embeds, action_ids, prefix_valid), None
        B, A = action_ids.shape
        x = self.model.embed_tokens(action_ids)
        if cache is not None:
            if cache.batch_size not in (1, B):
                raise ValueError(f"cache batch {cache.batch_size} does not match batch {B}")
            P = cache.length
            mask, pos = None, torch.arange(P, P + A, device=x.device)
            if prefix_valid is not None:
                mask = torch.cat([prefix_valid, prefix_valid.new_ones(B, A)], 1)[:, None, None]
                pos = prefix_valid.sum(1, keepdim=True) + torch.arange(A, device=x.device)
            h, _ = self.model(x, positions=pos, attention_mask=mask, past_key_values=cache)
            return h, cache
        prefix = prefix_embeds.to(x.dtype)
        if prefix.shape[0] != B:
            prefix = prefix.expand(B, -1, -1)
        P, S = prefix.shape[1], prefix.shape[1] + A
        mask, pos = None, torch.arange(S, device=x.device)
        if prefix_valid is not None:  # left padding (training batches)
            keys = torch.cat([prefix_valid, prefix_valid.new_ones(B, A)], dim=1)
            mask = keys[:, None, None, :]
            pos = (keys.long().cumsum(1) - 1).clamp(min=0)
        if self.config.prefix_attention_mask:  # prompt does not see the actions
            pm = torch.ones(S, S, dtype=torch.bool, device=x.device)
            pm[:P, P:] = False
            mask = pm if mask is None else mask & pm
        h, kv = self.model(torch.cat([prefix, x], dim=1), positions=pos, attention_mask=mask,
                           use_cache=use_cache)
        return h[:, P:], (kv.truncate(P) if use_cache else None)

    def _causal_hidden(self, prefix_embeds, action_ids, prefix_valid=None):
        """Teacher forcing: hidden states at the last prefix position and the first A - 1
        action positions of a causal pass (the positions that predict a_0 .. a_{A-1})."""
        B, A = action_ids.shape
        x = self.model.embed_tokens(action_ids[:, :-1])
        prefix = prefix_embeds.to(x.dtype)
        if prefix.shape[0] != B:
            prefix = prefix.expand(B, -1, -1)
        P = prefix.shape[1]
        mask, pos = None, None
        if prefix_valid is not None:
            keys = torch.cat([prefix_valid, prefix_valid.new_ones(B, A - 1)], dim=1)
            mask, pos = padding_mask(keys), (keys.long().cumsum(1) - 1).clamp(min=0)
        h, _ = self.model(torch.cat([prefix, x], dim=1), positions=pos, attention_mask=mask,
                          causal=True)
        return h[:, P - 1:]

    @torch.no_grad()
    def action_logits(self, obs: Observation, classes, cache: Optional[KVCache] = None,
                      update_cache: bool = False):
        """Localized logits (B, K*D, V_a) float32 for ``classes`` (B, K*D), -1 = masked.

        cache=None: exact full forward over prompt + actions; with ``update_cache`` the
        returned cache holds the prompt K/V (after RoPE) of this pass, else it is None.
        cache given: prefix-cached forward (exact when config.prefix_attention_mask, else an
        approximation); the given cache is returned unchanged.
        """
        ids = self.classes_to_ids(classes)
        if cache is not None and cache.length != obs.prefix_len:
            raise ValueError(f"cache holds {cache.length} positions, prompt has {obs.prefix_len}")
        h, new = self.action_hidden(obs.prefix_embeds, ids, obs.prefix_valid, cache=cache,
                                    use_cache=update_cache and cache is None)
        return self.localized_logits(h).float(), new

    @torch.no_grad()
    def full_logits(self, obs: Observation, classes, cache: Optional[KVCache] = None):
        """Full-vocabulary LM-head logits (B, K*D, vocab) float32 at the action positions."""
        h, _ = self.action_hidden(obs.prefix_embeds, self.classes_to_ids(classes),
                                  obs.prefix_valid, cache=cache)
        return self.lm_head(h).float()

    @torch.no_grad()
    def generate_autoregressive(self, obs: Observation) -> tuple:
        """An autoregressive model's chunk: causal prefill of the prompt, then the A action
        tokens left to right with a KV cache, argmax over the action classes. Returns
        (classes (B, A), confidences (B, A) float64, forward passes)."""
        if not self.config.autoregressive:
            raise ValueError("generate_autoregressive needs a model trained with "
                             "autoregressive=True")
        valid = obs.prefix_valid
        B = obs.prefix_embeds.shape[0]
        pos = None if valid is None else (valid.long().cumsum(1) - 1).clamp(min=0)
        h, cache = self.model(obs.prefix_embeds, positions=pos, causal=True, use_cache=True,
                              attention_mask=None if valid is None else padding_mask(valid))
        mask = None if valid is None else valid[:, None, None, :]
        ids = self.action_token_ids(h.device)
        nxt = (torch.full((B, 1), obs.prefix_len, device=h.device) if valid is None
               else valid.sum(1, keepdim=True))
        classes, conf = [], []
        A = self.config.num_action_tokens
        for i in range(A):
            p = torch.softmax(self.localized_logits(h[:, -1]).double(), -1)
            c = p.argmax(-1)
            classes.append(c)
            conf.append(p.gather(-1, c[:, None])[:, 0])
            if i + 1 < A:
                if valid is not None:
                    mask = torch.cat([mask, mask.new_ones(B, 1, 1, 1)], dim=-1)
                h, cache = self.model(self.model.embed_tokens(ids[c])[:, None], positions=nxt + i,
                                      attention_mask=mask, causal=True, past_key_values=cache,
                                      use_cache=True)
        return torch.stack(classes, 1), torch.stack(conf, 1), A

    def forward(self, images, prompts, action_ids, localized: bool = True):
        """Training forward: B images (ImageInputs, or a (B, 3, S, S) tensor with the square
        input), B prompt id lists, action-position ids (B, K*D) (mask id where masked) ->
        logits at the action positions, (B, K*D, V_a) if ``localized`` else (B, K*D, vocab)."""
        prefix, valid = self.prefix_embeds(images, prompts)
        h, _ = self.action_hidden(prefix, action_ids, prefix_valid=valid)
        return self.localized_logits(h) if localized else self.lm_head(h)


def from_pretrained(path, torch_dtype=None, device=None) -> LladaVlaForActions:
    """``LladaVlaForActions.from_pretrained``: a local checkpoint directory, safetensors only."""
    return LladaVlaForActions.from_pretrained(path, torch_dtype=torch_dtype, device=device)


def count_parameters(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
