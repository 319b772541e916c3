"""The Gymnasium environment: one of the four tasks, 7-D Bridge delta-EE actions at 5 Hz.

    env = WidowXTabletopEnv(task="carrot", layout="random", image_size=(640, 480))
    obs, info = env.reset(seed=3)
    obs, reward, terminated, truncated, info = env.step(action)   # action: (7,)

Each action goes through ``control.ArmController`` (a new one per episode), the very path
of the policy node: the delta applies to the previous target pose, then the safety filter
and IK; a refused action holds still, as on the robot. The joint command is followed under
the Bridge time profile (moving time 1.25 x period, acceleration 0.5 x period) with the
gripper at +-250 pwm, like the node's ``gripper_effort``. Observation: the Bridge camera's
RGB frame (``image``; none when ``image_size`` is None, for physics-only runs), the 6 arm
joints and the gripper opening. ``info``: success, grasped (now), ever_grasped, the object
poses, the safety filter's reasons. An episode terminates on success and is truncated at the
task's step limit. Same seed, same episode: frames and states are identical.
"""
from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..control import ArmController
from ..safety import SafetyLimits
from .tasks import LAYOUTS, TASKS, get_task
from .world import World

GRIPPER_EFFORT = 250.0  # the policy node's default gripper_effort


class WidowXTabletopEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(self, task: str = "carrot", layout: str = "random",
                 image_size: Optional[tuple] = (640, 480), control_hz: float = 5.0,
                 limits: Optional[SafetyLimits] = None, render_mode: str = "rgb_array"):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if not control_hz > 0:
            raise ValueError(f"control_hz must be > 0, got {control_hz}")
        self.world = World(task, layout)
        self.task = self.world.task
        self.period = 1.0 / control_hz
        self.limits = limits or SafetyLimits()
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.render_mode = render_mode
        obs = {"joints": spaces.Box(-np.pi, np.pi, (6,), np.float64),
               "gripper": spaces.Box(0.0, 1.0, (1,), np.float64)}
        if self.image_size:
            w, h = self.image_size
            obs["image"] = spaces.Box(0, 255, (h, w, 3), np.uint8)
        self.observation_space = spaces.Dict(obs)
        lim = self.limits
        self.action_space = spaces.Box(
            np.array([-lim.max_step_m] * 3 + [-lim.max_step_rad] * 3 + [0.0]),
            np.array([lim.max_step_m] * 3 + [lim.max_step_rad] * 3 + [1.0]), dtype=np.float64)
        self.arm: Optional[ArmController] = None
        self.episode = -1  # counts resets (the expert re-plans on a new episode)
        self.steps = 0
        self.ever_grasped = False
        self._frame: Optional[np.ndarray] = None
        self.observer = None  # called with the world every 10 ms of physics (recorders)

    @property
    def instruction(self) -> str:
        return self.task.instruction

    @property
    def max_steps(self) -> int:
        return self.task.max_steps

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2 ** 31 - 1))
        options = options or {}
        self.world.reset(seed, options.get("initial_joints"))
        self.world.set_time_profile(1.25 * self.period, 0.5 * self.period)
        self.arm = ArmController(self.limits, self.period)
        self.episode += 1
        self.steps = 0
        self.ever_grasped = False
        return self._observation(), self._info(None)

    def step(self, action):
        if self.arm is None:
            raise RuntimeError("call reset() before step()")
        decision = self.arm.step(np.asarray(action, dtype=float), self.world.arm_joints())
        effort = None
        if decision.ok:
            refusal = self.world.command_arm(decision.q_cmd)
            if refusal:  # cannot happen after the safety filter's joint margin
                raise RuntimeError(f"the simulated driver refused a safe command: {refusal}")
            effort = GRIPPER_EFFORT if decision.gripper_open else -GRIPPER_EFFORT
            self.world.command_gripper(effort)
        self.world.advance(self.period, self.observer)
        self.steps += 1
        info = self._info(decision)
        info["command"] = None if not decision.ok else decision.q_cmd.copy()
        info["gripper_effort"] = effort
        terminated = info["success"]
        truncated = not terminated and self.steps >= self.task.max_steps
        return self._observation(), float(terminated), terminated, truncated, info

    def _observation(self) -> dict:
        obs = {"joints": self.world.arm_joints(),
               "gripper": np.array([self.world.gripper_opening()])}
        if self.image_size:
            self._frame = self.world.render(*self.image_size)
            obs["image"] = self._frame
        return obs

    def _info(self, decision) -> dict:
        state = self.world.scene_state()
        self.ever_grasped |= state.grasped
        return {"success": self.task.success(state), "grasped": state.grasped,
                "ever_grasped": self.ever_grasped, "steps": self.steps,
                "object_poses": self.world.object_poses(),
                "held": decision is not None and not decision.ok,
                "reasons": [] if decision is None else list(decision.reasons),
                "finite": self.world.is_finite()}

    def render(self):
        if self._frame is None:
            return self.world.render(*(self.image_size or (640, 480)))
        return self._frame

    def close(self):
        self.world.close()


for _task in TASKS.values():
    gym.register(id=f"llada_vla_ros/{_task.env_id}-v0",
                 entry_point="llada_vla_ros.sim.env:WidowXTabletopEnv",
                 kwargs={"task": _task.name}, disable_env_checker=True)


def make(task: str, **kwargs) -> WidowXTabletopEnv:
    """``WidowXTabletopEnv(task, ...)`` by short or SimplerEnv name."""
    return WidowXTabletopEnv(get_task(task).name, **kwargs)
