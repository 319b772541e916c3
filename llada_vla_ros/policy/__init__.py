"""Policies: one call from (image, instruction) to an action chunk in robot units.

``Policy.predict(image_rgb, instruction) -> ActionChunk`` is the only thing the ROS node,
the offline evaluator and the demo call (``base``). Implementations:

- ``ScriptedPolicy`` (``scripted``): deterministic actions from a table;
- ``LladaVlaPolicy`` (``llada``): model + action tokenizer + masked-diffusion decoder;
- ``sim.expert.ExpertPolicy``: the simulator's scripted expert.

``load_policy(spec)`` picks one from a string. Implementations import ``base`` only, never this
package's ``__init__``, and the heavy ones (torch, the simulator) load only when asked for.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .base import (ACTION_DIM, MAX_INSTRUCTION_BYTES, ActionChunk, Policy, PolicyInputError,
                   check_observation, wants_state)
from .scripted import ScriptedPolicy

__all__ = ["ACTION_DIM", "MAX_INSTRUCTION_BYTES", "ActionChunk", "Policy", "PolicyInputError",
           "ScriptedPolicy", "check_observation", "load_policy", "wants_state"]


def load_policy(spec: str, device: str = "cpu", dtype: Optional[str] = None,
                unnorm_key: Optional[str] = None, decode: Optional[dict] = None,
                delay_s: float = 0.0) -> Policy:
    """``scripted`` | ``scripted:<table.csv>`` | ``expert:<state file>`` (the simulator's
    scripted expert, reading the privileged state ``sim_world`` writes) | path to a LLaDA-VLA
    checkpoint directory."""
    if spec.startswith("expert:"):
        from ..sim.expert import ExpertPolicy  # mujoco-free, but only when asked for

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
    from .llada import LladaVlaPolicy  # torch/transformers only when needed

    return LladaVlaPolicy.from_pretrained(path, device=device, dtype=dtype,
                                          unnorm_key=unnorm_key, decode=decode)
