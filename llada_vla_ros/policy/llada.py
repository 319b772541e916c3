"""LladaVlaPolicy: LLaDA-VLA checkpoint + action tokenizer + masked-diffusion decoder.

    policy = LladaVlaPolicy.from_pretrained("ckpt/", device="cuda", decode={"steps": 10})
    chunk = policy.predict(image_rgb, "put the spoon on the towel")  # ActionChunk, robot units
    chunk = policy.predict(image_rgb, text, state=robot_state(q, opening))  # state_dim > 0
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..action_tokenizer import STATS_FILE, ActionTokenizer
from ..decoding import DecodeConfig, DecodeResult, generate
from .base import ActionChunk, PolicyInputError, check_observation


class LladaVlaPolicy:
    """Implements ``policy.Policy``: ``predict(image_rgb, instruction) -> ActionChunk``;
    a checkpoint with ``state_dim`` > 0 also needs ``state`` (``kinematics.robot_state``)."""

    def __init__(self, model, tokenizer: ActionTokenizer,
                 decode: Union[dict, DecodeConfig, None] = None, name: str = "llada_vla"):
        self.model = model
        self.tokenizer = tokenizer
        self.decode_config = (decode if isinstance(decode, DecodeConfig)
                              else DecodeConfig.from_dict(decode))
        c = model.config
        if tokenizer.num_bins != c.num_bins or tokenizer.action_dim != c.action_dim:
            raise ValueError(f"action tokenizer ({tokenizer.num_bins} bins, "
                             f"{tokenizer.action_dim} dims) does not match the model "
                             f"({c.num_bins} bins, {c.action_dim} dims)")
        self.chunk_size = int(c.chunk_size)
        self.state_dim = int(getattr(c, "state_dim", 0))
        self.model_id = f"{name}:{self.decode_config.strategy}"
        self.last_result: Optional[DecodeResult] = None

    @classmethod
    def from_pretrained(cls, path, device: str = "cpu", dtype=None,
                        unnorm_key: Optional[str] = None,
                        decode: Union[dict, DecodeConfig, None] = None) -> "LladaVlaPolicy":
        """Load model + action tokenizer from a local checkpoint directory (config.json,
        safetensors weights, tokenizer.json, dataset_statistics.json). ``dtype`` None or ""
        = bfloat16 on CUDA, float32 on CPU."""
        path = Path(path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint directory not found: {path}")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"not a LLaDA-VLA checkpoint: no config.json in {path}")
        if not (path / STATS_FILE).is_file():
            raise FileNotFoundError(
                f"no {STATS_FILE} in {path}: the action statistics are needed to turn "
                "action tokens into robot units")
        decode_config = (decode if isinstance(decode, DecodeConfig)
                         else DecodeConfig.from_dict(decode))  # bad options fail before loading
        from ..model import from_pretrained  # torch/transformers only when needed

        model = from_pretrained(path, torch_dtype=dtype or None, device=device)
        if model.tokenizer is None:
            raise FileNotFoundError(f"no tokenizer.json in {path}")
        tokenizer = ActionTokenizer.from_pretrained(path, unnorm_key=unnorm_key or None)
        return cls(model, tokenizer, decode=decode_config, name=path.name)

    def predict(self, image_rgb: np.ndarray, instruction: str, state=None) -> ActionChunk:
        check_observation(image_rgb, instruction)
        if self.state_dim:
            if state is None:
                raise PolicyInputError(
                    f"{self.model_id} takes the robot state (end-effector pose and gripper "
                    "opening from the joint states); none given")
            state = np.asarray(state, dtype=np.float32).reshape(-1)
            if state.size != self.state_dim or not np.all(np.isfinite(state)):
                raise PolicyInputError(f"robot state must be {self.state_dim} finite values, "
                                       f"got {state.tolist()}")
        result = generate(self.model, image_rgb, instruction, self.decode_config,
                          state if self.state_dim else None)
        self.last_result = result
        return ActionChunk(
            actions=self.tokenizer.decode(result.classes),
            confidence=result.action_confidence.astype(np.float32),
            inference_ms=float(result.timing["total_ms"]),
            model_id=self.model_id,
            tokens=result.classes,
            timing=dict(result.timing),
        )
