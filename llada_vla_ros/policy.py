"""Policies: one call from (image, instruction) to an action chunk in robot units.

``Policy.predict(image_rgb, instruction) -> ActionChunk`` is the only thing the ROS node,
the offline evaluator and the demo call. Two implementations:

- ``ScriptedPolicy``: deterministic actions from a table (tests, demos without a checkpoint);
- ``LladaVlaPolicy``: model + action tokenizer + masked-diffusion decoder.

``load_policy(spec)`` picks one from a string: ``scripted``, ``scripted:<table.csv>``, or a
checkpoint directory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from .images import ImageConversionError, check_rgb

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


class ScriptedPolicy:
    """Plays a fixed table of actions, chunk after chunk (wrapping around).

    ``delay_s`` makes each call take at least that long, to test that slow inference never
    blocks the control loop.
    """

    def __init__(self, table: np.ndarray, chunk_size: int = 5, delay_s: float = 0.0,
                 model_id: str = "scripted"):
        table = np.asarray(table, dtype=np.float32)
        if table.ndim != 2 or table.shape[1] != ACTION_DIM or len(table) == 0:
            raise ValueError(f"scripted table must be N x {ACTION_DIM}, got {table.shape}")
        self.table = table
        self.chunk_size = int(chunk_size)
        self.delay_s = float(delay_s)
        self.model_id = model_id
        self._cursor = 0

    @classmethod
    def default(cls, **kwargs) -> "ScriptedPolicy":
        """A small square in the horizontal plane, closing then opening the gripper."""
        step = 0.01
        moves = [(step, 0, 0), (0, step, 0), (-step, 0, 0), (0, -step, 0)]
        rows = []
        for i, (dx, dy, dz) in enumerate(moves):
            for _ in range(5):
                rows.append([dx, dy, dz, 0.0, 0.0, 0.0, 1.0 if i % 2 == 0 else 0.0])
        return cls(np.array(rows, dtype=np.float32), **kwargs)

    @classmethod
    def from_csv(cls, path: str | Path, **kwargs) -> "ScriptedPolicy":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"scripted action table not found: {path}")
        table = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        return cls(table, model_id=f"scripted:{path.name}", **kwargs)

    def predict(self, image_rgb: np.ndarray, instruction: str) -> ActionChunk:
        check_observation(image_rgb, instruction)
        start = time.perf_counter()
        idx = (self._cursor + np.arange(self.chunk_size)) % len(self.table)
        self._cursor = int((self._cursor + self.chunk_size) % len(self.table))
        actions = self.table[idx].copy()
        remaining = self.delay_s - (time.perf_counter() - start)
        if remaining > 0:
            time.sleep(remaining)
        return ActionChunk(
            actions=actions,
            confidence=np.ones(self.chunk_size, dtype=np.float32),
            inference_ms=(time.perf_counter() - start) * 1e3,
            model_id=self.model_id,
        )


def load_policy(spec: str, device: str = "cpu", dtype: Optional[str] = None,
                unnorm_key: Optional[str] = None, decode: Optional[dict] = None,
                delay_s: float = 0.0) -> Policy:
    """``scripted`` | ``scripted:<table.csv>`` | ``expert:<state file>`` (the simulator's
    scripted expert, reading the privileged state ``sim_world`` writes) | path to a LLaDA-VLA
    checkpoint directory."""
    if spec.startswith("expert:"):
        from .sim.expert import ExpertPolicy  # mujoco-free, but only when asked for

        return ExpertPolicy.from_file(spec.split(":", 1)[1])
    if spec == "scripted":
        return ScriptedPolicy.default(delay_s=delay_s)
    if spec.startswith("scripted:"):
        return ScriptedPolicy.from_csv(spec.split(":", 1)[1], delay_s=delay_s)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint directory not found: {path} (give a local LLaDA-VLA checkpoint "
            "directory, or 'scripted')")
    from .llada_policy import LladaVlaPolicy  # torch/transformers only when needed

    return LladaVlaPolicy.from_pretrained(path, device=device, dtype=dtype,
                                          unnorm_key=unnorm_key, decode=decode)
