"""ControlLoop: everything the policy node decides, without ROS.

The node feeds it events (an image, an instruction, joint states, estop, ~/start, ~/stop,
new parameters) and calls ``tick(now)`` at the control rate; a tick returns one ``Command``
or None (hold still: nothing is sent, the driver keeps the motors where they are), and
``hold_reason`` says why. The inference thread takes jobs with ``next_job`` and hands chunks
back with ``add_chunk``. One lock guards everything, so events from any thread are safe.

Invariants (property-tested over random event sequences in test/test_control_loop.py):
- after an estop no command is returned until the estop is released AND ``start()`` is
  called, whatever else happens (the shutdown ramp included);
- every command goes through the one ``ArmController`` (safety filter), whose last command
  is the speed-limit reference for the life of the loop: two consecutive commands never
  differ by more than ``max_joint_velocity * period`` on any joint (the one exception is
  ``start()`` when the arm is known not to be where the commands were: a latched tracking
  fault, or an arm at rest elsewhere (moved while stopped). The next command then steps
  from the measured joints, within the same limit).

Times are seconds of a monotonic clock chosen by the caller (arrival times, not message
stamps: robust to clock skew between the camera host and this one).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..execution import ChunkExecutor
from ..kinematics import SLEEP_POSE
from ..safety import SafetyLimits
from .arm import ArmController

WAITING = "waiting for the next action chunk"
STARTING = "starting: listening for a latched estop"  # the hold reason during startup_hold
SETTLE_WINDOW_S = 0.3  # an arm whose joints moved less than SETTLED_RAD over this is at rest
SETTLED_RAD = 0.005


@dataclass
class Command:
    q: np.ndarray                 # 6 arm joint targets (rad), ARM_JOINTS order
    gripper_open: Optional[bool]  # None = leave the gripper as it is
    target: np.ndarray            # 4x4 target pose of the end effector


@dataclass
class Job:
    """One inference request: the newest frame and the instruction in force."""

    image: np.ndarray
    stamp: object
    instruction: str
    generation: int
    joints: Optional[np.ndarray] = None  # the newest arm joints and gripper opening, for
    gripper: Optional[float] = None      # a policy that takes the robot state


class ControlLoop:
    def __init__(self, limits: SafetyLimits, period: float, executor: ChunkExecutor,
                 execute: bool = False, max_image_age: float = 0.5,
                 max_joint_state_age: float = 0.5, gripper_threshold: float = 0.5,
                 hold_until: float = -np.inf):
        self.arm = ArmController(limits, period, gripper_threshold)
        self.period = float(period)
        self.chunks = executor
        self.max_image_age, self.max_joint_state_age = max_image_age, max_joint_state_age
        # No motion before this time: a latched estop (or any input) published before the
        # node started needs DDS discovery to arrive.
        self.hold_until = hold_until
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.execute, self.estop = bool(execute), False
        self.estopped = False  # an estop engaged since the last start(): no sleep ramp
        self.instruction, self.instruction_error = "", ""
        self.generation = 0  # bumped by every new instruction: older chunks are dropped
        self.image = self.image_stamp = self.image_time = None
        self.image_fresh, self.image_error = False, ""
        self.q = self.joint_time = self.gripper = None
        self.joint_history: deque = deque()  # (time, q) over the last SETTLE_WINDOW_S
        self.step = 0
        self.last_tick: Optional[float] = None  # time of the last tick (inference schedule)
        self.policy_ready, self.policy_error = False, ""
        self.running = True      # False once shutdown began: no more inference jobs
        self.ramp_goal = None    # joint goal of the shutdown ramp, while it runs
        self.hold_reason = "starting"
        self.last_refusal = ""     # why the last observation or action was refused
        self.last_input_refusal = ""  # why the last input (message, observation) was: the
        # safety filter refusing every tick (e.g. at a joint limit) never hides it
        self.last_adjustment = ""  # what the safety filter last clipped in a sent command
        self.stats = {"chunks": 0, "dropped_frames": 0, "commands": 0, "refusals": 0}
        self.inference_ms: deque = deque(maxlen=50)
        self.confidence: dict = {}            # step -> confidence of the newest chunk's action
        self.last_confidence = float("nan")   # of the action executed last
        self.frame_times: deque = deque(maxlen=90)    # arrival times: the camera rate seen here
        self.frame_latency: deque = deque(maxlen=90)  # s from the camera's stamp to arrival

    # ------------------------------------------------------------------ inputs
    def set_image(self, rgb: np.ndarray, stamp, now: float, latency_s: float = None) -> None:
        """A usable frame; ``latency_s`` = arrival minus the camera's stamp, when known."""
        with self.lock:
            if self.image_fresh:
                self.stats["dropped_frames"] += 1
            self.image, self.image_stamp, self.image_time = rgb, stamp, now
            self.image_fresh, self.image_error = True, ""
            self.frame_times.append(now)
            if latency_s is not None:
                self.frame_latency.append(latency_s)
            self.wake.notify_all()

    def refuse(self, reason: str, image: bool = False) -> None:
        """An input was refused (bad image, malformed message...): count it and say why;
        a refused image also makes the loop hold until a good one arrives."""
        with self.lock:
            self.stats["refusals"] += 1
            self.last_refusal = self.last_input_refusal = reason
            if image:
                self.image_error = reason

    def set_joints(self, q: np.ndarray, now: float, gripper: Optional[float] = None) -> None:
        """Measured arm joints (and the gripper opening 0..1, when the message has it)."""
        with self.lock:
            self.q, self.joint_time = np.array(q, dtype=float), now
            self.gripper = gripper
            self.joint_history.append((now, self.q))
            while now - self.joint_history[0][0] > SETTLE_WINDOW_S:
                self.joint_history.popleft()

    def _settled_q(self) -> Optional[np.ndarray]:
        """The measured joints if the arm has been at rest for ``SETTLE_WINDOW_S`` (moved
        less than SETTLED_RAD on every joint), else None."""
        h = self.joint_history
        if len(h) < 2 or h[-1][0] - h[0][0] < 0.8 * SETTLE_WINDOW_S:
            return None
        qs = np.stack([q for _, q in h])
        return self.q if float(np.max(qs.max(axis=0) - qs.min(axis=0))) < SETTLED_RAD else None

    def set_instruction(self, text: str, max_bytes: int) -> str:
        """A new instruction drops the queued actions and re-plans from the last command.
        Returns '' or why it was refused (the loop then holds: no instruction in force)."""
        size = len(text.encode("utf-8"))
        with self.lock:
            self.generation += 1
            self.chunks.clear()
            self.arm.replan()
            if size > max_bytes:
                self.instruction = ""
                self.instruction_error = (f"instruction refused: {size} bytes, more than "
                                          f"the {max_bytes}-byte limit")
            else:
                self.instruction, self.instruction_error = text.strip(), ""
            self.wake.notify_all()
            return self.instruction_error

    def set_estop(self, active: bool) -> bool:
        """Returns True when this engaged the estop. Engaging it disables motion and aborts
        the shutdown ramp; releasing it does not re-enable motion (``start()`` does)."""
        with self.lock:
            engaged = active and not self.estop
            if active:
                self.execute, self.ramp_goal, self.estopped = False, None, True
                self.chunks.clear()
            self.estop = bool(active)
            return engaged

    def start(self) -> tuple:
        """~/start: (ok, message). Refused while the estop is active or during shutdown."""
        with self.lock:
            if self.estop:
                return False, "estop is active: release it first"
            if not self.running:
                return False, "shutting down"
            self.execute, self.estopped = True, False
            self.chunks.clear()
            return True, "motion enabled; " + self.arm.resume(self._settled_q())

    def stop(self) -> None:
        with self.lock:
            self.execute = False
            self.chunks.clear()

    def set_policy(self, ready: bool, error: str = "") -> None:
        with self.lock:
            self.policy_ready, self.policy_error = ready, error
            self.wake.notify_all()

    def update(self, limits: Optional[SafetyLimits] = None, gripper_threshold=None,
               max_image_age=None, max_joint_state_age=None) -> None:
        """New validated parameters at runtime; the speed-limit reference is kept."""
        with self.lock:
            self.arm.update(limits, gripper_threshold)
            if max_image_age is not None:
                self.max_image_age = float(max_image_age)
            if max_joint_state_age is not None:
                self.max_joint_state_age = float(max_joint_state_age)

    # ------------------------------------------------------------------ inference
    def next_job(self, timeout: float, now: Optional[float] = None) -> Optional[Job]:
        """Block up to ``timeout`` s for an inference job; None when there is none. ``now``:
        the caller's clock (default ``time.monotonic``, the node's), e.g. to test schedules."""
        clock = time.monotonic if now is None else (lambda: now)
        with self.lock:
            wait = self._inference_wait(clock())
            if wait != 0.0:
                self.wake.wait(timeout if wait is None else min(timeout, wait))
                if self._inference_wait(clock()) != 0.0:
                    return None
            self.image_fresh = False
            return Job(self.image, self.image_stamp, self.instruction, self.generation,
                       None if self.q is None else self.q.copy(), self.gripper)

    def _inference_wait(self, now: float) -> Optional[float]:
        """0.0: start inference now; > 0: in that many seconds; None: not wanted."""
        if not (self.running and self.policy_ready and self.image_fresh and self.instruction
                and not self.estop):
            return None
        if self.chunks.mode != "receding_horizon":
            return 0.0 if self.chunks.needs_chunk() else None
        # Latency hiding, with the observation as late as it can be: the queue's q actions
        # last until (q + 1) periods after the last tick, so inference starts its lead time
        # before that (p90 of the recent inference times plus a quarter period for the
        # thread hand-over). Fast inference observes late in the last action's period, as
        # the in-process evaluation and the recordings do (after the motion, not at its
        # command); slow inference overlaps the queue, whose last actions the newer chunk
        # replaces. A chunk is never asked for before one of the current one has run.
        queued = self.chunks.queued()
        if queued >= self.chunks.actions_per_chunk:
            return None
        if self.last_tick is None:
            return 0.0
        lat = np.percentile(self.inference_ms, 90) / 1000 if self.inference_ms else 0.0
        due = self.last_tick + (queued + 1) * self.period - (lat + 0.25 * self.period)
        return max(0.0, due - now)

    def add_chunk(self, actions: np.ndarray, job: Job, inference_ms: float,
                  confidence=None) -> bool:
        """A chunk for ``job`` (``confidence``: one per action, optional); False when it is
        stale (the instruction changed meanwhile). It executes from the tick after it
        arrives, whatever time inference took."""
        with self.lock:
            if job.generation != self.generation or not self.running:
                return False
            self.chunks.add_chunk(actions, self.step + 1)
            if confidence is not None:
                self.confidence = {self.step + 1 + i: float(c) for i, c in enumerate(confidence)}
            self.stats["chunks"] += 1
            self.inference_ms.append(float(inference_ms))
            return True

    # ------------------------------------------------------------------ control
    def _reason(self, now: float) -> str:
        if self.estop:
            return "estop active"
        if self.policy_error:  # a fault to fix names itself at once, even while starting
            return self.policy_error
        if now < self.hold_until:
            return STARTING
        if not self.execute:
            return "execution disabled (execute=false; call ~/start)"
        if self.instruction_error:
            return self.instruction_error
        if not self.instruction:
            return "idle: no instruction"
        if self.image_error:
            return self.image_error
        if self.image_time is None or now - self.image_time > self.max_image_age:
            return "stale image: no camera frame for more than max_image_age"
        return self._joints_reason(now) or self.arm.fault  # the fault latches until ~/start

    def _joints_reason(self, now: float) -> str:
        if self.joint_time is None or now - self.joint_time > self.max_joint_state_age:
            return "stale joint states: none for more than max_joint_state_age"
        return ""

    def tick(self, now: float) -> Optional[Command]:
        """One control period: a command, or None (hold; ``hold_reason`` says why)."""
        with self.lock:
            if not self.running:
                return self._ramp_tick(now)
            self.step += 1
            self.last_tick = now
            reason = self._reason(now)
            # The queue advances with time even while holding, so a dry run (execute=false)
            # keeps re-planning and publishing chunks.
            action = self.chunks.pop(self.step)
            if not reason and action is None:
                reason = WAITING
            if reason:
                return self._hold(reason)
            decision = self.arm.step(action, self.q)
            if not decision.ok:
                self.chunks.clear()
                self.stats["refusals"] += 1
                self.last_refusal = "; ".join(decision.reasons) or "safety filter refused"
                return self._hold(self.last_refusal)
            if decision.reasons:
                self.last_adjustment = "; ".join(decision.reasons)
            self.hold_reason = ""
            self.stats["commands"] += 1
            self.last_confidence = self.confidence.get(self.step, float("nan"))
            return Command(decision.q_cmd, decision.gripper_open, decision.T_target)

    def _hold(self, reason: str) -> None:
        self.hold_reason = reason
        return None

    # ------------------------------------------------------------------ shutdown
    def begin_shutdown(self, sleep: bool) -> str:
        """Stop planning; with ``sleep``, ramp to the sleep pose on the next ticks (unless
        the estop is active or was engaged since the last ``start()``, the arm is not
        following or the startup hold is not over). Returns what will happen."""
        with self.lock:
            self.running, self.execute = False, False
            self.chunks.clear()
            self.wake.notify_all()
            if not sleep:
                return "stopping"
            if self.estop:
                return "estop active: no sleep ramp"
            if self.estopped:
                return "estop engaged since the last ~/start: no sleep ramp"
            if self.arm.fault:
                return "arm not following (tracking fault): no sleep ramp"
            if self.arm.last_command is None and self.q is None:
                return "no joint states: no sleep ramp"
            self.ramp_goal = SLEEP_POSE.copy()
            return "ramping to the sleep pose"

    def _ramp_tick(self, now: float) -> Optional[Command]:
        if self.ramp_goal is None:
            return self._hold("shut down")
        # within the startup hold a latched estop may not have arrived yet: no ramp either
        reason = ("estop active" if self.estop else STARTING if now < self.hold_until
                  else self._joints_reason(now))
        if reason:
            self.ramp_goal = None
            return self._hold(f"sleep ramp aborted: {reason}")
        decision = self.arm.safety.step_joints(self.ramp_goal, self.q)
        if not decision.ok:
            self.ramp_goal = None
            return self._hold("sleep ramp aborted: " + "; ".join(decision.reasons))
        if np.array_equal(decision.q_cmd, self.ramp_goal):
            self.ramp_goal = None  # this is the last ramp command
        self.stats["commands"] += 1
        return Command(decision.q_cmd, None, decision.T_target)

    def ramping(self) -> bool:
        with self.lock:
            return self.ramp_goal is not None

    # ------------------------------------------------------------------ status
    def status(self, now: float) -> dict:
        """Everything /diagnostics reports, as strings."""
        with self.lock:
            lat = list(self.inference_ms)
            return {
                "state": "moving" if not self.hold_reason else "holding",
                "hold_reason": self.hold_reason,
                "last_refusal": self.last_refusal,
                "last_input_refusal": self.last_input_refusal,
                "last_adjustment": self.last_adjustment,
                "execute": str(self.execute).lower(),
                "estop": str(self.estop).lower(),
                "tracking_fault": self.arm.fault,
                "instruction": self.instruction[:200],
                "chunks": str(self.stats["chunks"]),
                "commands_sent": str(self.stats["commands"]),
                "dropped_frames": str(self.stats["dropped_frames"]),
                "refusals": str(self.stats["refusals"]),
                "inference_ms_last": f"{lat[-1]:.1f}" if lat else "",
                "inference_ms_median": f"{float(np.median(lat)):.1f}" if lat else "",
                "image_age_s": f"{now - self.image_time:.3f}" if self.image_time else "",
                "image_hz": _rate(self.frame_times, now),
                "image_latency_ms_median": (f"{1e3 * float(np.median(self.frame_latency)):.1f}"
                                            if self.frame_latency else ""),
                "joint_state_age_s": f"{now - self.joint_time:.3f}" if self.joint_time else "",
                "queued_actions": str(self.chunks.queued()),
            }


def _rate(times, now: float, window: float = 2.0) -> str:
    """Events per second over the last ``window`` s (what arrived, not what was sent)."""
    recent = [t for t in times if now - t <= window]
    if len(recent) < 2:
        return "0.0"
    return f"{(len(recent) - 1) / max(recent[-1] - recent[0], 1e-9):.1f}"
