"""LladaVlaConfig: sizes of the vision tower, projector and diffusion backbone, plus the
action-token layout. The defaults are LLaDA-V's (``full()``); ``tiny()`` is a sub-million
parameter model for tests and demos, with its own small special ids; ``small()`` is the
size that learns the simulated tasks on a CPU (a convolutional stem in front of the same
SigLIP encoder, and a spatial-softmax keypoint token beside it; sizes chosen by
measurement, docs/results.md)."""
from __future__ import annotations

import math
import re
from typing import Optional

from transformers import PretrainedConfig, SiglipVisionConfig

from ..action_tokenizer import default_action_token_ids, validate_action_token_ids
from ..kinematics import STATE_DIM, STATE_NAMES

# SigLIP-2 so400m/14 at 384 with its last encoder layer dropped (27 -> 26), no pooling head.
FULL_VISION = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                   num_attention_heads=16, patch_size=14, image_size=384,
                   hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
TINY_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, patch_size=8, image_size=32,
                   hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
SMALL_VISION = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, patch_size=16, image_size=64,
                    hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
# How pixels become the vision transformer's tokens: SigLIP's one strided convolution per
# patch ("patch"), or a convolutional stem (3x3 stride-2 convolutions down to the patch
# grid, then a 1x1 projection: "conv"), which a tower trained from scratch needs to learn
# where small objects are. Position embeddings: SigLIP's learned table ("learned"), or a
# fixed 2-D sine-cosine table of (row, column) ("sincos2d").
VISION_STEMS = ("patch", "conv")
VISION_POSITION_EMBEDDINGS = ("learned", "sincos2d")

# Special ids of the tiny byte-level tokenizer (see processing.build_tiny_tokenizer):
# 256 byte tokens, then these, then the 32 action tokens.
TINY_SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>",
                       "<|end_header_id|>", "<|eot_id|>", "<|mdm_mask|>", "<image>", "<|pad|>"]
TINY_FIRST_ACTION_ID = 256 + len(TINY_SPECIAL_TOKENS)
# small(): the same ids, then the word tokens of build_tiny_tokenizer(words=True).
SMALL_VOCAB_SIZE = 1024

# LLaDA-V's input (its ``conv_llava_llada`` template and training arguments): a system turn,
# anyres tiling on a grid of up to 6 x 6 tiles, features unpadded and bilinearly reduced to
# about 4 tiles' worth, an ``image_newline`` after every feature row (model/anyres.py).
LLADA_V_SYSTEM_PROMPT = ("You are a helpful language and vision assistant. You are able to "
                         "understand the visual content that the user provides, and assist the "
                         "user with a variety of tasks using natural language.")
LLADA_V_INPUT = dict(system_prompt=LLADA_V_SYSTEM_PROMPT, image_aspect_ratio="anyres_max_4",
                     mm_patch_merge_type="spatial_unpad", image_grid_pinpoints=None)
# The cheap input: one squashed square image, no image_newline, no system turn. What
# checkpoints written before these options existed were trained with (checkpoint.py).
SQUARE_INPUT = dict(system_prompt=None, image_aspect_ratio="square", mm_patch_merge_type="flat",
                    image_grid_pinpoints=None)
ASPECT_RATIOS = ("square", "anyres", "anyres_max_N")
MERGE_TYPES = ("flat", "spatial_unpad")


class LladaVlaConfig(PretrainedConfig):
    """Configuration of :class:`LladaVlaForActions` (model_type ``llada_vla``).

    Action layout: ``num_bins`` local classes map to ``action_token_ids`` (vocabulary ids);
    a chunk is ``chunk_size`` x ``action_dim`` tokens. ``prefix_attention_mask=True`` stops
    prompt positions from attending to action positions (exact prefix cache); the paper's
    default is full bidirectional attention (False). ``autoregressive=True`` makes the
    same network a causal next-token predictor of the action tokens (the baseline).

    Robot state (an option of this package, not the paper's model): ``state_dim`` > 0 adds
    one prompt token after the image features, a projection of the standardized robot state
    (``kinematics.robot_state``: end-effector position, rotation as its first two columns,
    gripper opening; ``state_mean``/``state_std`` from the training data). 0: images and
    instructions only, as LLaDA-VLA. ``state_features`` (names of ``kinematics.STATE_NAMES``,
    a list or "z,gripper") lets the token see only those values of the state (default: all):
    the state still comes whole, standardized whole, then the named values are projected.
    """

    model_type = "llada_vla"

    def __init__(self, vision_config=None, projector_type: str = "mlp2x_gelu",
                 vocab_size: int = 126464, hidden_size: int = 4096,
                 intermediate_size: int = 12288, num_hidden_layers: int = 32,
                 num_attention_heads: int = 32, num_key_value_heads: int = 32,
                 rms_norm_eps: float = 1e-5, rope_theta: float = 500000.0,
                 initializer_range: float = 0.02,
                 mask_token_id: int = 126336, bos_token_id: int = 126080,
                 eos_token_id: int = 126081, start_header_id: int = 126346,
                 end_header_id: int = 126347, eot_token_id: int = 126348,
                 image_token_index: int = -200, action_token_ids=None, num_bins: int = 32,
                 action_dim: int = 7, chunk_size: int = 5, prefix_attention_mask: bool = False,
                 tie_word_embeddings: bool = False,
                 system_prompt: Optional[str] = LLADA_V_SYSTEM_PROMPT,
                 image_aspect_ratio: str = "anyres_max_4", image_grid_pinpoints=None,
                 mm_patch_merge_type: str = "spatial_unpad", vision_stem: str = "patch",
                 vision_position_embedding: str = "learned", vision_keypoints: int = 0,
                 vision_keypoint_moments: bool = False, vision_keypoint_pooled: bool = False,
                 autoregressive: bool = False, state_dim: int = 0, state_mean=None,
                 state_std=None, state_features=None, **kwargs):
        if not isinstance(vision_config, SiglipVisionConfig):
            vision_config = SiglipVisionConfig(**{**FULL_VISION, **(vision_config or {})})
        self.vision_config = vision_config
        if vision_stem not in VISION_STEMS:
            raise ValueError(f"vision_stem must be one of {VISION_STEMS}, got {vision_stem!r}")
        patch = int(vision_config.patch_size)
        if vision_stem == "conv" and (patch < 2 or patch & (patch - 1)):
            raise ValueError(f"vision_stem 'conv' halves the image per layer: patch_size must "
                             f"be a power of two >= 2, got {patch}")
        if vision_position_embedding not in VISION_POSITION_EMBEDDINGS:
            raise ValueError(f"vision_position_embedding must be one of "
                             f"{VISION_POSITION_EMBEDDINGS}, got {vision_position_embedding!r}")
        if vision_position_embedding == "sincos2d" and int(vision_config.hidden_size) % 4:
            raise ValueError("vision_position_embedding 'sincos2d' needs a vision hidden_size "
                             "divisible by 4")
        self.vision_stem, self.vision_position_embedding = vision_stem, vision_position_embedding
        # A spatial-softmax branch beside the tower (small): K feature maps -> their expected
        # image coordinates -> one extra image token (modeling.SpatialKeypoints).
        self.vision_keypoints = int(vision_keypoints)
        if self.vision_keypoints < 0:
            raise ValueError(f"vision_keypoints must be >= 0, got {vision_keypoints}")
        if self.vision_keypoints and (image_aspect_ratio != "square"
                                      or mm_patch_merge_type != "flat"):
            raise ValueError("vision_keypoints needs the square input (image_aspect_ratio "
                             "'square', mm_patch_merge_type 'flat')")
        # ... and with moments, each map's spread too (standard deviations in x and y, their
        # correlation): the orientation of an elongated object, which a mean alone lacks.
        self.vision_keypoint_moments = bool(vision_keypoint_moments)
        if self.vision_keypoint_moments and not self.vision_keypoints:
            raise ValueError("vision_keypoint_moments needs vision_keypoints > 0")
        # ... and with pooled, the branch's features max-pooled over the image: which local
        # patterns (an edge at some angle) are there anywhere, e.g. which way an object lies.
        self.vision_keypoint_pooled = bool(vision_keypoint_pooled)
        if self.vision_keypoint_pooled and not self.vision_keypoints:
            raise ValueError("vision_keypoint_pooled needs vision_keypoints > 0")
        if projector_type != "mlp2x_gelu":
            raise ValueError(f"only projector_type 'mlp2x_gelu' is supported, got "
                             f"{projector_type!r}")
        self.projector_type = projector_type
        self.vocab_size, self.hidden_size = int(vocab_size), int(hidden_size)
        self.intermediate_size, self.num_hidden_layers = intermediate_size, num_hidden_layers
        self.num_attention_heads, self.num_key_value_heads = (num_attention_heads,
                                                              num_key_value_heads)
        if num_attention_heads % num_key_value_heads:
            raise ValueError(f"num_attention_heads ({num_attention_heads}) must be a multiple "
                             f"of num_key_value_heads ({num_key_value_heads})")
        if hidden_size % num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        self.rms_norm_eps, self.rope_theta = rms_norm_eps, rope_theta
        self.initializer_range = initializer_range
        # special ids (LLaDA); image_token_index is a placeholder replaced by image features
        self.mask_token_id = int(mask_token_id)
        self.start_header_id, self.end_header_id = start_header_id, end_header_id
        self.eot_token_id, self.image_token_index = eot_token_id, image_token_index
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise ValueError(f"mask_token_id {mask_token_id} is outside the vocabulary "
                             f"(vocab_size={vocab_size})")
        # actions
        self.num_bins, self.action_dim, self.chunk_size = num_bins, action_dim, chunk_size
        if action_token_ids is None:
            action_token_ids = default_action_token_ids(num_bins)
        self.action_token_ids = validate_action_token_ids(
            action_token_ids, num_bins, self.mask_token_id, self.vocab_size)
        self.prefix_attention_mask = bool(prefix_attention_mask)
        # The diffusion-vs-autoregressive baseline (the paper's Table 1 peer, OpenVLA-style):
        # causal attention, the action tokens predicted left to right (decoding.py).
        self.autoregressive = bool(autoregressive)
        self.state_dim = int(state_dim)
        if self.state_dim < 0:
            raise ValueError(f"state_dim must be >= 0, got {state_dim}")
        for name, value in (("state_mean", state_mean), ("state_std", state_std)):
            if value is not None and (len(value) != self.state_dim
                                      or not all(math.isfinite(float(v)) for v in value)):
                raise ValueError(f"{name} must be {self.state_dim} finite numbers, got {value!r}")
        if state_std is not None and min(float(v) for v in state_std) <= 0:
            raise ValueError(f"state_std must be positive, got {state_std!r}")
        self.state_mean = None if state_mean is None else [float(v) for v in state_mean]
        self.state_std = None if state_std is None else [float(v) for v in state_std]
        self.state_features = _state_features(state_features, self.state_dim)
        # input format
        self.system_prompt = system_prompt.strip() if system_prompt else None
        if image_aspect_ratio != "square" and image_aspect_ratio != "anyres" \
                and not re.fullmatch(r"anyres_max_[1-9]\d*", str(image_aspect_ratio)):
            raise ValueError(f"image_aspect_ratio must be one of {ASPECT_RATIOS}, got "
                             f"{image_aspect_ratio!r}")
        if mm_patch_merge_type not in MERGE_TYPES:
            raise ValueError(f"mm_patch_merge_type must be one of {MERGE_TYPES}, got "
                             f"{mm_patch_merge_type!r}")
        self.image_aspect_ratio, self.mm_patch_merge_type = image_aspect_ratio, mm_patch_merge_type
        if image_grid_pinpoints is not None:
            image_grid_pinpoints = [[int(w), int(h)] for w, h in image_grid_pinpoints]
            if not image_grid_pinpoints or min(min(p) for p in image_grid_pinpoints) < 1:
                raise ValueError("image_grid_pinpoints must be a non-empty list of positive "
                                 "[width, height] pairs")
        self.image_grid_pinpoints = image_grid_pinpoints
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_action_tokens(self) -> int:
        return self.chunk_size * self.action_dim

    @property
    def image_size(self) -> int:
        return int(self.vision_config.image_size)

    @property
    def num_image_tokens(self) -> int:
        """Vision tokens per crop (per image with the square input), the keypoint token
        included."""
        return ((self.image_size // int(self.vision_config.patch_size)) ** 2
                + int(self.vision_keypoints > 0))

    @property
    def grid_pinpoints(self) -> list:
        """Candidate tiled resolutions [width, height] in pixels (anyres)."""
        if self.image_grid_pinpoints is not None:
            return self.image_grid_pinpoints
        s = self.image_size
        return [[i * s, j * s] for i in range(1, 7) for j in range(1, 7)]

    @property
    def uses_image_newline(self) -> bool:
        return "unpad" in self.mm_patch_merge_type

    @classmethod
    def full(cls, **overrides) -> "LladaVlaConfig":
        """LLaDA-V sizes (LLaDA-8B backbone, SigLIP-2 so400m/14-384 minus its last layer) and
        LLaDA-V's input (system turn, anyres_max_4, spatial_unpad). ``**SQUARE_INPUT`` as
        overrides gives the cheap single-image input."""
        return cls(**{**LLADA_V_INPUT, **overrides})

    @property
    def state_inputs(self) -> list:
        """Indices of the robot state values the state token sees (all by default)."""
        if self.state_features is None:
            return list(range(self.state_dim))
        return [STATE_NAMES.index(f) for f in self.state_features]

    @classmethod
    def tiny(cls, **overrides) -> "LladaVlaConfig":
        """A ~0.6M-parameter model (hidden 128, 2 layers, GQA 4/2 heads, 32x32 images) with the
        tiny byte-level tokenizer's ids. A large init (0.1) makes it overfit in ~100 steps.

        A partial ``vision_config`` dict fills its other keys from tiny's tower, and a
        ``hidden_size`` override scales what depends on it (heads of 32 dimensions, half as
        many key/value heads, a 3x MLP, init at most 1/sqrt(hidden_size)), unless those are
        given too."""
        ids = {tok: 256 + i for i, tok in enumerate(TINY_SPECIAL_TOKENS)}
        num_bins = overrides.get("num_bins", 32)
        args = dict(
            **SQUARE_INPUT, vision_config=dict(TINY_VISION), vocab_size=320, hidden_size=128,
            intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rope_theta=10000.0, initializer_range=0.1,
            mask_token_id=ids["<|mdm_mask|>"], bos_token_id=ids["<|startoftext|>"],
            eos_token_id=ids["<|endoftext|>"], start_header_id=ids["<|start_header_id|>"],
            end_header_id=ids["<|end_header_id|>"], eot_token_id=ids["<|eot_id|>"],
            action_token_ids=list(range(TINY_FIRST_ACTION_ID, TINY_FIRST_ACTION_ID + num_bins)),
        )
        return cls(**_sized(args, overrides, TINY_VISION))

    @classmethod
    def small(cls, **overrides) -> "LladaVlaConfig":
        """The CPU-trainable size (~1.3 M parameters; docs/results.md has the sweep that chose
        it): 64x64 images through a convolutional stem to a 4x4 grid of tokens (learned
        position table) in a 2-layer 128-wide SigLIP encoder, plus one spatial-softmax
        keypoint token (32 keypoints); a 2-layer 128-wide bidirectional backbone (GQA 4/2
        heads, init 1/sqrt(128)); the word-level offline tokenizer's ids
        (``build_tiny_tokenizer(words=True)``)."""
        ids = {tok: 256 + i for i, tok in enumerate(TINY_SPECIAL_TOKENS)}
        num_bins = overrides.get("num_bins", 32)
        args = dict(
            **SQUARE_INPUT, vision_config=dict(SMALL_VISION), vision_stem="conv",
            vision_position_embedding="learned", vision_keypoints=32,
            vocab_size=SMALL_VOCAB_SIZE, hidden_size=128, intermediate_size=384,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            rope_theta=10000.0, initializer_range=0.088,
            mask_token_id=ids["<|mdm_mask|>"], bos_token_id=ids["<|startoftext|>"],
            eos_token_id=ids["<|endoftext|>"], start_header_id=ids["<|start_header_id|>"],
            end_header_id=ids["<|end_header_id|>"], eot_token_id=ids["<|eot_id|>"],
            action_token_ids=list(range(TINY_FIRST_ACTION_ID, TINY_FIRST_ACTION_ID + num_bins)),
        )
        return cls(**_sized(args, overrides, SMALL_VISION))


NAMED_CONFIGS = ("tiny", "small")


def named_config(name: str, **overrides) -> LladaVlaConfig:
    """``LladaVlaConfig.tiny`` or ``.small`` by name (``llada-vla-train --init NAME``)."""
    if name not in NAMED_CONFIGS:
        raise ValueError(f"unknown config {name!r}; named configs: {', '.join(NAMED_CONFIGS)}")
    return getattr(LladaVlaConfig, name)(**overrides)


def _sized(args: dict, overrides: dict, base_vision: dict) -> dict:
    """``args`` updated with ``overrides``: a partial vision_config fills from
    ``base_vision``, and sizes that follow hidden_size follow an overridden one."""
    overrides = dict(overrides)
    vision = overrides.pop("vision_config", None)
    if vision is not None and not isinstance(vision, SiglipVisionConfig):
        vision = {**base_vision, **vision}
    if "hidden_size" in overrides and overrides["hidden_size"] != args["hidden_size"]:
        h = int(overrides["hidden_size"])
        heads = overrides.get("num_attention_heads", max(1, h // 32))
        derived = dict(num_attention_heads=heads,
                       num_key_value_heads=max(1, heads // 2) if heads % 2 == 0 else heads,
                       intermediate_size=3 * h,
                       initializer_range=min(args["initializer_range"], round(h ** -0.5, 4)))
        args.update(derived)
    args.update(overrides)
    if vision is not None:
        args["vision_config"] = vision
    return args


def _state_features(features, state_dim: int):
    """``state_features`` checked: None, or distinct names of ``kinematics.STATE_NAMES`` (a
    list, or one comma-separated string as ``--config state_features=z,gripper`` gives)."""
    if features is None:
        return None
    if isinstance(features, str):
        features = [f.strip() for f in features.split(",")]
    features = [str(f) for f in features]
    if state_dim != STATE_DIM:
        raise ValueError(f"state_features names values of kinematics.robot_state: it needs "
                         f"state_dim={STATE_DIM}, got state_dim={state_dim}")
    unknown = [f for f in features if f not in STATE_NAMES]
    if not features or unknown or len(set(features)) != len(features):
        raise ValueError(f"state_features must be distinct names of {', '.join(STATE_NAMES)}; "
                         f"got {features!r}")
    return features
