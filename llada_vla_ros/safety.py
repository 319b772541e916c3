"""Safety filter between policy actions and WidowX joint commands.

``SafetyFilter.step`` turns one 7-dim Bridge action (dx, dy, dz, droll, dpitch, dyaw, gripper)
into joint radians for the arm, or a hold. Order of the checks:

1. non-finite action / joint state / previous target -> hold; the measured joints farther
   than ``max_tracking_error`` from the last command (the arm is not following: torque off,
   blocked, driver restarted elsewhere) -> hold, latched until ``resume()`` (the operator's
   ~/start), even when the joints come back;
2. translation clipped by its norm (direction kept) to ``max_step_m``; each rotation
   component clipped to +-``max_step_rad``;
3. the delta is applied to the previous target pose (``kinematics.apply_delta``) and the
   target position is clamped into the workspace box;
4. IK seeded by the measured joints; failure -> hold;
5. IK joints closer than ``joint_margin`` to a limit -> hold (no clamping: a clamped joint
   would reach a different pose than the target). Hence, from a start at least
   ``joint_margin`` away from every limit, every command is too. A start closer than that
   is left: the scaled step moves toward the IK solution, out of the margin band;
6. the joint step from the last command (the measured joints on the very first step, or
   after ``resume()`` cleared a tracking fault) is scaled so the fastest joint moves
   ``max_joint_velocity * control_period``;
   the new target is then ``fk(q_cmd)`` so target and command agree. Joint-space scaling
   follows a slightly curved path: a scaled target up to ``SCALED_BOX_TOLERANCE`` outside
   the box is clamped onto it, one further out holds, except that when the previous target
   was already outside the box a step that gets closer to it is allowed (recovery).

A hold means no motion at all: ``q_cmd`` and ``gripper_open`` are None and the target is
unchanged, so the next action applies to the same pose.

The speed limit is an invariant of the command stream: the last command is the reference of
the next one across everything that re-plans (a new instruction, ~/stop and ~/start, an
estop release, new limits). The only exception is ``resume()`` when the arm is known not to
be there (a latched tracking fault, or an arm at rest elsewhere): the next command then steps
from where the arm is (the measured joints), within the same limit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from .kinematics import (
    ARM_JOINTS, JOINT_LOWER, JOINT_UPPER, JOINT_VELOCITY_LIMIT, apply_delta, fk, ik)

SCALED_BOX_TOLERANCE = 2e-3  # m a velocity-scaled step may end outside the box (then clamped)


@dataclass
class SafetyLimits:
    """Limits of the safety filter; defaults are those of config/policy.yaml (safety.*)."""

    max_step_m: float = 0.05
    max_step_rad: float = 0.25
    workspace_min: Sequence[float] = (0.10, -0.20, -0.01)
    workspace_max: Sequence[float] = (0.45, 0.25, 0.30)
    joint_margin: float = 0.05
    max_joint_velocity: float = 1.0
    max_tracking_error: float = 0.5

    def __post_init__(self):
        for name in ("max_step_m", "max_step_rad", "joint_margin", "max_joint_velocity",
                     "max_tracking_error"):
            value = float(getattr(self, name))
            if not np.isfinite(value):
                raise ValueError(f"safety.{name} must be finite, got {value}")
            setattr(self, name, value)
        for name in ("max_step_m", "max_step_rad", "max_joint_velocity", "max_tracking_error"):
            if getattr(self, name) <= 0:
                raise ValueError(f"safety.{name} must be > 0, got {getattr(self, name)}")
        if self.max_joint_velocity > JOINT_VELOCITY_LIMIT:
            raise ValueError(f"safety.max_joint_velocity must be <= {JOINT_VELOCITY_LIMIT:.4f} "
                             f"rad/s (hardware limit), got {self.max_joint_velocity}")
        half_range = float(np.min(JOINT_UPPER - JOINT_LOWER)) / 2.0
        if not 0.0 <= self.joint_margin < half_range:
            raise ValueError(f"safety.joint_margin must be in [0, {half_range:.3f}) rad, "
                             f"got {self.joint_margin}")
        lo = np.asarray(self.workspace_min, dtype=float)
        hi = np.asarray(self.workspace_max, dtype=float)
        if lo.shape != (3,) or hi.shape != (3,):
            raise ValueError("safety.workspace_min and workspace_max must have 3 values (x, y, z)")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError("safety.workspace_min/max must be finite")
        if np.any(lo >= hi):
            raise ValueError(f"safety.workspace_min {lo.tolist()} must be < workspace_max "
                             f"{hi.tolist()} on every axis")
        self.workspace_min = tuple(lo.tolist())
        self.workspace_max = tuple(hi.tolist())


@dataclass
class SafetyDecision:
    ok: bool                        # False = hold (no command sent)
    q_cmd: Optional[np.ndarray]     # 6 joint radians in ARM_JOINTS order, None on hold
    T_target: np.ndarray            # new target pose (unchanged on hold)
    gripper_open: Optional[bool]    # None on hold
    reasons: List[str] = field(default_factory=list)  # what was clipped, or why it holds


class SafetyFilter:
    """Stateful filter: remembers the last command to limit joint velocity between steps."""

    def __init__(self, limits: Optional[SafetyLimits] = None, control_period: float = 0.2,
                 gripper_threshold: float = 0.5):
        control_period = float(control_period)
        if not (np.isfinite(control_period) and control_period > 0):
            raise ValueError(f"control_period must be > 0 s, got {control_period}")
        if not np.isfinite(gripper_threshold):
            raise ValueError(f"gripper_threshold must be finite, got {gripper_threshold}")
        self.limits = limits if limits is not None else SafetyLimits()
        self.control_period = control_period
        self.gripper_threshold = float(gripper_threshold)
        self.box_min = np.array(self.limits.workspace_min)
        self.box_max = np.array(self.limits.workspace_max)
        self.q_min = JOINT_LOWER + self.limits.joint_margin
        self.q_max = JOINT_UPPER - self.limits.joint_margin
        self.max_joint_step = self.limits.max_joint_velocity * control_period
        self.last_command: Optional[np.ndarray] = None
        self.tracking_fault = ""  # latched tracking-error hold ('' = none)

    def resume(self, q_settled=None) -> str:
        """The operator restarts motion (~/start). The last command stays the speed
        reference (a lagging arm never lets the next command jump), except when the arm is
        known not to be where the commands were: a latched tracking fault (cleared here), or
        ``q_settled`` (the measured joints of an arm at rest) farther than one speed-limited
        step from the last command (moved by hand or by a simulator reset while stopped).
        Then the next step counts from the measured joints. Returns what was done."""
        if self.last_command is None:
            return "resuming from the measured joints"
        if self.tracking_fault:
            self.tracking_fault, self.last_command = "", None
            return "tracking fault cleared: resuming from the measured joints"
        if q_settled is not None:
            moved = float(np.max(np.abs(np.asarray(q_settled, float) - self.last_command)))
            if moved > self.max_joint_step:
                self.last_command = None
                return (f"the arm rests {moved:.2f} rad from the last command: resuming from "
                        "the measured joints")
        return "resuming from the last command"

    def _box_distance(self, p) -> float:
        return float(np.linalg.norm(p - np.clip(p, self.box_min, self.box_max)))

    def step(self, action, q_measured, T_target_prev) -> SafetyDecision:
        """One action -> joint command or hold. See the module docstring for the rules."""
        T_prev = np.asarray(T_target_prev, dtype=float)
        reasons: List[str] = []

        def hold(reason: str) -> SafetyDecision:
            reasons.append(reason)
            return SafetyDecision(False, None, T_prev.copy(), None, reasons)

        a = np.asarray(action, dtype=float).ravel()
        q_meas = np.asarray(q_measured, dtype=float).ravel()
        if a.shape != (7,):
            return hold(f"action has {a.size} values, expected 7")
        if q_meas.shape != (6,) or not np.all(np.isfinite(q_meas)):
            return hold("measured joints invalid (need 6 finite values)")
        if T_prev.shape != (4, 4) or not np.all(np.isfinite(T_prev)):
            return hold("previous target pose invalid")
        if not np.all(np.isfinite(a)):
            return hold("action contains NaN/Inf")
        if self._tracking_fault(q_meas):
            return hold(self.tracking_fault)

        lim = self.limits
        dxyz = a[:3].copy()
        biggest = float(np.max(np.abs(dxyz)))
        unit = dxyz / biggest if biggest > 0 else dxyz  # avoids overflow in the norm
        norm = biggest * float(np.linalg.norm(unit))
        if norm > lim.max_step_m:
            dxyz = unit * (lim.max_step_m / float(np.linalg.norm(unit)))
            reasons.append(f"translation clipped to {lim.max_step_m:g} m (asked {norm:.3g} m)")
        drot = np.clip(a[3:6], -lim.max_step_rad, lim.max_step_rad)
        if np.any(drot != a[3:6]):
            reasons.append(f"rotation clipped to {lim.max_step_rad:g} rad per axis")

        T = apply_delta(T_prev, np.concatenate([dxyz, drot]))
        p_clamped = np.clip(T[:3, 3], self.box_min, self.box_max)
        if np.any(p_clamped != T[:3, 3]):
            reasons.append("target clamped to workspace")
            T[:3, 3] = p_clamped

        sol = ik(T, q_meas)
        if not sol.success:
            return hold(f"IK failed: target unreachable (error {sol.pos_err * 1e3:.1f} mm, "
                        f"{sol.rot_err:.3f} rad)")
        bad = self._joint_outside_margin(sol.q)
        if bad:
            return hold(f"joint limit: IK solution puts {bad} within "
                        f"{lim.joint_margin:g} rad of its limit")

        q_ref = self.last_command if self.last_command is not None else q_meas
        dq = sol.q - q_ref
        fastest = float(np.max(np.abs(dq)))
        q_cmd = sol.q
        if fastest > self.max_joint_step:
            scale = self.max_joint_step / fastest
            q_cmd = q_ref + dq * scale
            reasons.append(f"joint velocity limit: step scaled to {scale:.1%}")
            bad = self._joint_outside_margin(q_cmd)
            if bad:  # only when q_ref is outside the margin; the step reduces the violation
                reasons.append(f"joint limit: {bad} inside the margin, moving away")
            T = fk(q_cmd)
            outside = self._box_distance(T[:3, 3])
            if outside > SCALED_BOX_TOLERANCE:
                if outside < self._box_distance(T_prev[:3, 3]):
                    reasons.append("target outside workspace, moving back in")
                else:
                    return hold("joint velocity limit: scaled step leaves the workspace")
            elif outside > 0:
                T[:3, 3] = np.clip(T[:3, 3], self.box_min, self.box_max)

        self.last_command = q_cmd.copy()
        gripper_open = bool(a[6] >= self.gripper_threshold)
        return SafetyDecision(True, q_cmd.copy(), T, gripper_open, reasons)

    def step_joints(self, q_goal, q_measured) -> SafetyDecision:
        """One joint-space step toward ``q_goal`` (the shutdown ramp to the sleep pose): the
        same input, tracking and speed checks as ``step``, no workspace box (the sleep pose
        is outside it). A goal inside the joint margin is refused; a start inside it is left
        (the step moves toward the goal, out of the band). The gripper is left alone."""
        q_meas = np.asarray(q_measured, dtype=float).ravel()
        goal = np.asarray(q_goal, dtype=float).ravel()
        ref = self.last_command if self.last_command is not None else q_meas
        T_ref = fk(ref) if ref.shape == (6,) and np.all(np.isfinite(ref)) else np.eye(4)

        def hold(reason: str) -> SafetyDecision:
            return SafetyDecision(False, None, T_ref, None, [reason])

        if q_meas.shape != (6,) or not np.all(np.isfinite(q_meas)):
            return hold("measured joints invalid (need 6 finite values)")
        if goal.shape != (6,) or not np.all(np.isfinite(goal)):
            return hold("joint goal invalid (need 6 finite values)")
        bad = self._joint_outside_margin(goal)
        if bad:
            return hold(f"joint limit: goal puts {bad} within {self.limits.joint_margin:g} rad "
                        "of its limit")
        if self._tracking_fault(q_meas):
            return hold(self.tracking_fault)
        dq = goal - ref
        fastest = float(np.max(np.abs(dq)))
        q_cmd = goal.copy() if fastest <= self.max_joint_step else ref + dq * (self.max_joint_step / fastest)
        self.last_command = q_cmd.copy()
        return SafetyDecision(True, q_cmd.copy(), fk(q_cmd), None, [])

    def _tracking_fault(self, q_meas) -> str:
        """The latched tracking fault; latches a new one when the measured joints are farther
        than ``max_tracking_error`` from the last command."""
        if not self.tracking_fault and self.last_command is not None:
            lag = float(np.max(np.abs(q_meas - self.last_command)))
            if lag > self.limits.max_tracking_error:
                self.tracking_fault = (
                    f"tracking error: arm was {lag:.2f} rad from the last command (limit "
                    f"{self.limits.max_tracking_error:g}); is torque on? call ~/start to "
                    "resume from the measured pose")
        return self.tracking_fault

    def _joint_outside_margin(self, q) -> str:
        """Name (and value) of the first joint outside the margin box, '' if none."""
        for i, name in enumerate(ARM_JOINTS):
            if not self.q_min[i] <= q[i] <= self.q_max[i]:
                return f"{name} ({q[i]:.3f} rad)"
        return ""
