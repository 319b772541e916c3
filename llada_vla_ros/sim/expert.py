"""A scripted expert from privileged object poses: Bridge delta actions at 5 Hz.

Approach above the source (gripper pointing down, fingers across the source's length),
descend, close, lift, carry over the target, lower, release, retreat. Each action moves the
*commanded* end-effector pose (the Bridge target the delta applies to) toward the phase's
goal by at most ``max_step_m`` / ``max_step_rad``; optional Gaussian action noise (seeded)
diversifies demonstrations and the feedback corrects it (``noise`` m on x/y/z; on roll,
pitch and yaw ``rotation_noise`` rad each, by default twice ``noise``).

``ExpertPolicy`` is the expert behind the package's ``Policy`` interface
(``predict(image, instruction) -> ActionChunk``), so the offline tools, the simulated
evaluation and the real policy node can run it. It plans a chunk of K actions ahead on its
own prediction of the commanded pose and re-reads the privileged state at every chunk,
from a ``World`` in this process, or from the JSON file the ``sim_world`` node writes
(``expert:<file>``); actions of a chunk that never ran (dropped by the node) do not advance
its phases (``ScriptedExpert._rewind``). The instruction names the task.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .. import kinematics as K
from ..policy.base import ActionChunk, check_observation
from .tasks import TASKS, Task, get_task

# Gripper pointing down, fingers closing along world y (yaw 0): ee x = -z, ee y = y.
DOWN = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
PHASES = ("approach", "descend", "close", "lift", "carry", "lower", "release", "retreat",
          "done")
HOVER = 0.07      # m above the grasp height before descending
CARRY_Z = 0.12    # m, carry height (clears the basket walls)
DWELL = {"close": 3, "release": 2}  # steps with the arm still while the fingers move
SLIPPED = 0.03    # m between the gripper and the grasp point of an object not held


def down_pose(x: float, y: float, z: float, yaw: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = K.euler_sxyz_to_matrix(0.0, 0.0, yaw) @ DOWN
    T[:3, 3] = (x, y, z)
    return T


def yaw_of(R: np.ndarray) -> float:
    return float(np.arctan2(R[1, 0], R[0, 0]))


def grasp_yaw(task: Task, source_R: np.ndarray, current_yaw: float) -> float:
    """Gripper yaw that closes the fingers across the source (its x axis), the one of the
    equivalent yaws (period pi, or pi/2 for a cube) nearest to the current one."""
    period = np.pi if task.source.elongated else np.pi / 2
    yaw = yaw_of(source_R)
    return float(current_yaw + (yaw - current_yaw + period / 2) % period - period / 2)


@dataclass
class State:
    """Privileged state the expert reads (``world_state`` or the sim_world node's file)."""

    task: str
    episode: int
    source: np.ndarray          # 4x4
    target: np.ndarray          # 4x4
    commanded_q: Optional[np.ndarray]  # last arm command (None before the first)
    measured_q: np.ndarray
    grasped: bool
    commands: Optional[int] = None  # arm commands the world accepted this episode

    def to_json(self) -> str:
        return json.dumps({"task": self.task, "episode": self.episode,
                           "source": self.source.tolist(), "target": self.target.tolist(),
                           "commanded_q": None if self.commanded_q is None
                           else self.commanded_q.tolist(),
                           "measured_q": self.measured_q.tolist(), "grasped": self.grasped,
                           "commands": self.commands})

    @classmethod
    def from_json(cls, text: str) -> "State":
        d = json.loads(text)
        return cls(d["task"], int(d["episode"]), np.array(d["source"]), np.array(d["target"]),
                   None if d["commanded_q"] is None else np.array(d["commanded_q"]),
                   np.array(d["measured_q"]), bool(d["grasped"]), d.get("commands"))


def world_state(world, episode: int) -> State:
    """The expert's view of a ``World`` (commanded pose: its last accepted arm command)."""
    return State(world.task.name, episode, world.object_pose("source"),
                 world.object_pose("target"), world.last_command, world.arm_joints(),
                 world.grasped(), world.commands)


class ScriptedExpert:
    """The phase machine. ``plan(state, k)`` returns k actions (k x 7)."""

    def __init__(self, noise: float = 0.0, seed: int = 0, max_step_m: float = 0.03,
                 max_step_rad: float = 0.15, rotation_noise: Optional[Sequence[float]] = None):
        self.noise = float(noise)
        self.rotation_noise = (np.full(3, 2 * self.noise) if rotation_noise is None
                               else np.asarray(rotation_noise, dtype=float))
        if self.rotation_noise.shape != (3,) or not np.all(self.rotation_noise >= 0):
            raise ValueError("rotation_noise takes three stds >= 0 (roll, pitch, yaw rad), "
                             f"got {rotation_noise!r}")
        self.rng = np.random.default_rng(seed)
        self.max_step_m, self.max_step_rad = max_step_m, max_step_rad
        self.reset()

    def reset(self) -> None:
        self.phase, self.dwell, self.episode = "approach", 0, None
        self.offset = None  # source origin -> end effector, measured once grasped
        self.trace = None   # the last plan: (world commands then, machine before each action)

    def _rewind(self, state: State) -> None:
        """Actions of the last plan that never ran (its chunk dropped or cut short: the
        node's ~/start, a new instruction, a hold, fewer actions per chunk) must not advance
        the machine: resume from its phase after the ones that ran, counted by the world's
        accepted arm commands. When all ran (always, in the recordings) nothing changes."""
        if self.trace is None or state.commands is None:
            return
        commands, machines = self.trace
        ran = state.commands - commands
        if 0 <= ran < len(machines) - 1:
            self.phase, self.dwell, self.offset = machines[ran]

    def resume(self, state: State) -> None:
        """Take over an episode in progress (from a learned policy): carry on with the
        object if it is held, else start with the approach (fingers open)."""
        self.reset()
        self.episode = state.episode
        if state.grasped:
            self.phase = "lift"

    def plan(self, state: State, k: int = 1) -> np.ndarray:
        task = get_task(state.task)
        if state.episode != self.episode:
            self.reset()
            self.episode = state.episode
        self._rewind(state)
        q_ref = state.commanded_q if state.commanded_q is not None else state.measured_q
        T = K.fk(q_ref)
        T_meas = K.fk(state.measured_q)
        if self.phase in ("lift", "carry", "lower"):
            grasp = state.source[:3, :3] @ [*task.source.grasp_point, 0.0] + state.source[:3, 3]
            if state.grasped:
                self.offset = T_meas[:3, 3] - state.source[:3, 3]
            elif np.linalg.norm(T_meas[:3, 3] - grasp) > SLIPPED:  # dropped: start over
                self.phase, self.dwell, self.offset = "approach", 0, None
        actions, machines = [], []
        for _ in range(k):
            machines.append((self.phase, self.dwell, self.offset))
            a = self._step(task, state, T)
            actions.append(a)
            T = K.apply_delta(T, a[:6])
        machines.append((self.phase, self.dwell, self.offset))
        self.trace = (state.commands, machines) if state.commands is not None else None
        return np.array(actions, dtype=np.float32)

    def _goal(self, task: Task, s: State, T: np.ndarray) -> np.ndarray:
        src, tgt = s.source, s.target
        yaw_now = yaw_of(T[:3, :3] @ DOWN.T)
        if self.phase in ("approach", "descend", "close"):
            gx, gy = (src[:3, :3] @ [*task.source.grasp_point, 0.0])[:2] + src[:2, 3]
            yaw = grasp_yaw(task, src[:3, :3], yaw_now)
            z = task.source.grasp_z + (HOVER if self.phase == "approach" else 0.0)
            return down_pose(gx, gy, z, yaw)
        yaw = yaw_now
        if self.phase == "lift":
            return down_pose(T[0, 3], T[1, 3], CARRY_Z, yaw)
        # over the target: the source's middle over the target's centre
        middle = src[:3, :3] @ [task.source.center_x(), 0.0, 0.0]
        offset = self.offset if self.offset is not None else T[:3, 3] - src[:3, 3]
        x, y = tgt[:2, 3] - middle[:2] + offset[:2]
        if self.phase == "carry":
            return down_pose(x, y, CARRY_Z, yaw)
        if self.phase in ("lower", "release"):
            return down_pose(x, y, task.place_z(), yaw)
        return down_pose(T[0, 3], T[1, 3], CARRY_Z, yaw)  # retreat, done

    def _step(self, task: Task, s: State, T: np.ndarray) -> np.ndarray:
        goal = self._goal(task, s, T)
        dp = goal[:3, 3] - T[:3, 3]
        rot = K.rotation_log(goal[:3, :3] @ T[:3, :3].T)
        n = np.linalg.norm(dp)
        reached = n <= self.max_step_m and np.linalg.norm(rot) <= self.max_step_rad
        if n > self.max_step_m:
            dp *= self.max_step_m / n
        a = float(np.linalg.norm(rot))
        R = (K.screw_exp(np.concatenate([rot / a, np.zeros(3)]), min(a, self.max_step_rad))[:3, :3]
             if a > 1e-12 else np.eye(3))
        d = np.array([*dp, *K.matrix_to_euler_sxyz(R)])
        if self.phase not in ("close", "release", "done"):
            if self.noise > 0:
                d[:3] += self.rng.normal(0.0, self.noise, 3)
            if np.any(self.rotation_noise > 0):
                d[3:] += self.rng.normal(0.0, 1.0, 3) * self.rotation_noise
        closed = self.phase in ("close", "lift", "carry", "lower")
        self._advance(reached)
        return np.array([*d, 0.0 if closed else 1.0])

    def _advance(self, reached: bool) -> None:
        if self.phase in DWELL:
            self.dwell += 1
            if self.dwell >= DWELL[self.phase]:
                self.dwell = 0
                self.phase = PHASES[PHASES.index(self.phase) + 1]
        elif reached and self.phase != "done":
            self.phase = PHASES[PHASES.index(self.phase) + 1]


class ExpertPolicy:
    """The expert as a ``Policy``: chunks of ``chunk_size`` actions from privileged state."""

    def __init__(self, state_fn: Callable[[], State], chunk_size: int = 5, noise: float = 0.0,
                 seed: int = 0, model_id: str = "expert",
                 rotation_noise: Optional[Sequence[float]] = None):
        self.state_fn = state_fn
        self.chunk_size = int(chunk_size)
        self.expert = ScriptedExpert(noise, seed, rotation_noise=rotation_noise)
        self.model_id = model_id

    @classmethod
    def from_file(cls, path, **kwargs) -> "ExpertPolicy":
        """Reads the state the ``sim_world`` node writes (its ``expert_state_file``)."""
        path = Path(path)

        def read() -> State:
            for _ in range(50):  # the writer replaces the file atomically; wait for the first
                try:
                    return State.from_json(path.read_text())
                except (FileNotFoundError, ValueError):
                    time.sleep(0.02)
            raise FileNotFoundError(f"expert state file {path} missing or unreadable: start "
                                    "sim_world with expert_state_file set to it")
        return cls(read, model_id=f"expert:{path.name}", **kwargs)

    def predict(self, image_rgb: np.ndarray, instruction: str) -> ActionChunk:
        check_observation(image_rgb, instruction)
        start = time.perf_counter()
        state = self.state_fn()
        wanted = [t.name for t in TASKS.values() if t.instruction == instruction.strip()]
        if wanted and wanted[0] != state.task:
            raise ValueError(f"instruction '{instruction}' is task {wanted[0]}, but the world "
                             f"runs {state.task}")
        actions = self.expert.plan(state, self.chunk_size)
        return ActionChunk(actions=actions, confidence=np.ones(self.chunk_size, np.float32),
                           inference_ms=(time.perf_counter() - start) * 1e3,
                           model_id=self.model_id)


def expert_for(env, **kwargs) -> ExpertPolicy:
    """The expert on a ``WidowXTabletopEnv`` in this process."""
    return ExpertPolicy(lambda: world_state(env.world, env.episode), **kwargs)
