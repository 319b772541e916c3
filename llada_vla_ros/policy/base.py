"""The policy interface: ``Policy.predict(image_rgb, instruction) -> ActionChunk`` in robot
units, the observation checks every implementation runs, and the error they raise."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol

import numpy as np

from ..images import ImageConversionError, check_rgb

ACTION_DIM = 7  # dx, dy, dz, droll, dpitch, dyaw, gripper
MAX_INSTRUCTION_BYTES = 4096


class PolicyInputError(ValueError):
    """The observation cannot be used (bad image, bad instruction); the caller should hold."""


@dataclass
class ActionChunk:
    """K x D actions in robot units (m, rad, gripper 0..1 with 1 = open)."""

    actions: np.ndarray  # (K, D) float32
    confidence: np.ndarray  # (K,) float32, one per action
    inference_ms: float
    model_id: str
    tokens: Optional[np.ndarray] = None  # (K, D) local action classes 0..V_a-1, if any
    timing: dict = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])


class Policy(Protocol):
    """``predict(image_rgb, instruction)``; a policy with a ``state_dim`` attribute > 0 also
    takes ``state=`` (``kinematics.robot_state``), which callers pass only to such policies
    (``wants_state``)."""

    model_id: str
    chunk_size: int

    def predict(self, image_rgb: np.ndarray, instruction: str) -> ActionChunk: ...


def wants_state(policy) -> bool:
    """Does ``policy`` take the robot state (``predict(..., state=...)``)?"""
    return int(getattr(policy, "state_dim", 0) or 0) > 0


def check_observation(image_rgb: np.ndarray, instruction: str) -> None:
    """Raise PolicyInputError naming the cause when an observation is unusable."""
    try:
        check_rgb(image_rgb)
    except ImageConversionError as err:
        raise PolicyInputError(str(err)) from err
    if not instruction or not instruction.strip():
        raise PolicyInputError("instruction is empty")
    size = len(instruction.encode("utf-8"))
    if size > MAX_INSTRUCTION_BYTES:
        raise PolicyInputError(
            f"instruction is {size} bytes, more than the {MAX_INSTRUCTION_BYTES}-byte limit")
