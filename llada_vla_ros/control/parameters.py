"""The policy node's parameters: names, defaults, which may change at runtime, and their
validation, without ROS (config/policy.yaml documents the same names and defaults; a test
checks).

``coerce(name, value)`` gives a value of the declared type or a ValueError naming the
parameter: integers are accepted where a double is declared (``-p control_hz:=10``), a bool
is never a number. ``validate(values)`` checks a complete set (ranges, and what depends on
several parameters, such as the workspace box) and returns the objects the node runs on.
The node validates a runtime change (``ros2 param set``) as the whole set with the change
applied, so a change is refused with the same message a bad start-up value gets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict

from .. import topics
from ..execution import ChunkExecutor
from ..safety import SafetyLimits

MAX_GRIPPER_EFFORT = 885.0  # Dynamixel PWM limit of the WidowX gripper (xs_sdk)
MAX_AGE_S = 10.0


@dataclass(frozen=True)
class Param:
    default: Any
    description: str
    dynamic: bool = False  # may change at runtime; read-only otherwise


PARAMETERS: Dict[str, Param] = {
    # --- policy
    "model_path": Param("", "local LLaDA-VLA checkpoint directory; empty = scripted test policy"),
    "device": Param("cpu", "inference device: cpu, cuda or cuda:N"),
    "dtype": Param("", "empty = bf16 on GPU, fp32 on CPU; or float32, bfloat16, float16"),
    "unnorm_key": Param("", "dataset key of the action statistics; empty = the only one"),
    "scripted_delay": Param(0.0, "scripted policy only: seconds each chunk takes"),
    "decoding.strategy": Param("hierarchical", "hierarchical, vanilla or parallel_threshold"),
    "decoding.steps": Param(10, "vanilla: diffusion steps over the K*D action tokens"),
    "decoding.iterations_per_action": Param(2, "hierarchical: steps inside each action"),
    "decoding.temperature": Param(0.0, "0 = deterministic argmax"),
    "decoding.threshold": Param(0.9, "parallel_threshold: commit tokens above this"),
    "decoding.prompt_refresh_interval": Param(0, "0 = prefix cache never refreshed"),
    # --- topics
    "robot_name": Param(topics.ROBOT_NAME, "namespace of the Interbotix driver"),
    "image_topic": Param(topics.IMAGE, "camera color topic (sensor_msgs/Image)"),
    "image_transport": Param("raw", "raw (Image on image_topic) or compressed (JPEG/PNG "
                             "CompressedImage on image_topic/compressed)"),
    "instruction_topic": Param(topics.INSTRUCTION, "instruction topic (std_msgs/String)"),
    "estop_topic": Param(topics.ESTOP, "estop topic (std_msgs/Bool), any QoS"),
    "success_topic": Param("", "std_msgs/Bool that ends an ExecuteInstruction goal as "
                           "succeeded when true; empty = none"),
    "instruction": Param("", "instruction in force; setting it at runtime instructs the policy",
                         dynamic=True),
    "frame_id": Param("wx250s/base_link", "frame of the target pose and action chunks"),
    # --- execution
    "execute": Param(False, "send commands to the arm (= ~/start / ~/stop at runtime)",
                     dynamic=True),
    "control_hz": Param(5.0, "command rate, one action per tick"),
    "execution_mode": Param("receding_horizon", "receding_horizon or temporal_ensemble"),
    "actions_per_chunk": Param(5, "receding horizon: actions executed before re-planning"),
    "ensemble_decay": Param(0.0, "temporal ensembling: weight exp(-decay * age)"),
    "max_image_age": Param(0.5, "s; an older image makes the node hold", dynamic=True),
    "max_joint_state_age": Param(0.5, "s; older joint states make the node hold", dynamic=True),
    "startup_hold": Param(5.0, "s without motion after start-up: time for DDS discovery to "
                          "deliver an estop latched before the node started (Fast DDS "
                          "re-announces every 3 s: a missed first exchange costs that)"),
    "set_time_profile": Param(True, "on the first command, set the arm's time profile"),
    "sleep_on_shutdown": Param(False, "ramp to the sleep pose on shutdown", dynamic=True),
    # --- gripper
    "gripper_effort": Param(250.0, "pwm effort; +effort opens, -effort closes", dynamic=True),
    "gripper_threshold": Param(0.5, "gripper action >= threshold -> open", dynamic=True),
    # --- safety
    "safety.max_step_m": Param(0.05, "per-step translation clip (m)", dynamic=True),
    "safety.max_step_rad": Param(0.25, "per-step rotation clip (rad)", dynamic=True),
    "safety.workspace_min": Param([0.10, -0.20, -0.01], "m, in wx250s/base_link", dynamic=True),
    "safety.workspace_max": Param([0.45, 0.25, 0.30], "m, in wx250s/base_link", dynamic=True),
    "safety.joint_margin": Param(0.05, "rad kept away from every joint limit", dynamic=True),
    "safety.max_joint_velocity": Param(1.0, "rad/s per joint (hardware limit pi)", dynamic=True),
    "safety.max_tracking_error": Param(0.5, "rad; measured this far from the last command -> "
                                       "hold until ~/start", dynamic=True),
    # --- recording without rosbag2
    "record_to": Param("", "directory of a rosbag2 bag the node writes itself; empty = off"),
    "record_storage": Param("sqlite3", "sqlite3 or mcap"),
}

DEFAULTS = {name: p.default for name, p in PARAMETERS.items()}
DYNAMIC = frozenset(name for name, p in PARAMETERS.items() if p.dynamic)


def coerce(name: str, value):
    """``value`` as the type of ``name``'s default, or ValueError naming the parameter."""
    if name not in PARAMETERS:
        raise ValueError(f"unknown parameter '{name}'")
    default = PARAMETERS[name].default

    def bad(kind):
        return ValueError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")

    def number(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad("a number")
        return float(v)

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not float(value).is_integer():
            raise bad("an integer")
        return int(value)
    if isinstance(default, float):
        return number(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if isinstance(default, list):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            raise bad(f"a list of {len(default)} numbers")
        values = [number(v) for v in value]
        if len(values) != len(default):
            raise bad(f"a list of {len(default)} numbers")
        return values
    raise TypeError(f"no rule for {name}")  # pragma: no cover - table error


@dataclass(frozen=True)
class Settings:
    """What the node runs on, built from a validated parameter set."""

    values: Dict[str, Any]
    limits: SafetyLimits
    period: float

    def __getitem__(self, name):
        return self.values[name]


def _positive(values, name, upper=math.inf):
    v = values[name]
    if not (math.isfinite(v) and 0 < v <= upper):
        raise ValueError(f"{name} must be > 0" + (f" and <= {upper:g}" if upper < math.inf else "")
                         + f", got {v}")


def validate(values: Dict[str, Any]) -> Settings:
    """Coerce and check a complete parameter set; ValueError names the first bad one."""
    missing = sorted(set(PARAMETERS) - set(values))
    if missing:
        raise ValueError(f"missing parameters {missing}")
    v = {name: coerce(name, values[name]) for name in PARAMETERS}
    _positive(v, "control_hz", 100.0)
    _positive(v, "max_image_age", MAX_AGE_S)
    _positive(v, "max_joint_state_age", MAX_AGE_S)
    if not (math.isfinite(v["startup_hold"]) and 0 <= v["startup_hold"] <= 60):
        raise ValueError(f"startup_hold must be in [0, 60] s, got {v['startup_hold']}")
    _positive(v, "gripper_effort", MAX_GRIPPER_EFFORT)
    if not 0.0 <= v["gripper_threshold"] <= 1.0:
        raise ValueError(f"gripper_threshold must be in [0, 1], got {v['gripper_threshold']}")
    if not (math.isfinite(v["scripted_delay"]) and v["scripted_delay"] >= 0):
        raise ValueError(f"scripted_delay must be >= 0, got {v['scripted_delay']}")
    ChunkExecutor(v["execution_mode"], v["actions_per_chunk"], v["ensemble_decay"])  # raises
    topics.image_transport_topic(v["image_topic"], v["image_transport"])  # raises
    limits = SafetyLimits(**{k.split(".", 1)[1]: v[k] for k in v if k.startswith("safety.")})
    return Settings(values=v, limits=limits, period=1.0 / v["control_hz"])
