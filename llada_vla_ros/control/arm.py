"""ArmController: the one path from a Bridge delta-EE action to a WidowX joint command.

The policy node and the simulated world both call it, so what the simulator shows is what
the arm does::

    arm = ArmController(SafetyLimits(), period=0.2)
    decision = arm.step(action7, q_measured)   # SafetyDecision: q_cmd + gripper, or a hold

It keeps the Bridge target pose (each delta applies to the previous *target*, not to the
measured pose) and one ``SafetyFilter`` whose last command is the reference of the joint
speed limit for as long as the controller lives. ``replan()`` (a new instruction, a dropped
chunk queue, ~/start) re-anchors the target on the last *command*, never on a lagging
measurement, so no event lets two consecutive commands differ by more than
``max_joint_velocity * period``. numpy only.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..kinematics import fk
from ..safety import SafetyDecision, SafetyFilter, SafetyLimits


class ArmController:
    def __init__(self, limits: Optional[SafetyLimits] = None, period: float = 0.2,
                 gripper_threshold: float = 0.5):
        self.safety = SafetyFilter(limits, period, gripper_threshold)
        self.target: Optional[np.ndarray] = None  # 4x4 Bridge target pose; None = re-anchor

    @property
    def limits(self) -> SafetyLimits:
        return self.safety.limits

    @property
    def period(self) -> float:
        return self.safety.control_period

    @property
    def last_command(self) -> Optional[np.ndarray]:
        return None if self.safety.last_command is None else self.safety.last_command.copy()

    @property
    def fault(self) -> str:
        """The latched tracking-error hold, '' when none."""
        return self.safety.tracking_fault

    def replan(self) -> None:
        """Start a new plan: the next delta applies to the last commanded pose."""
        self.target = None

    def resume(self, q_settled=None) -> str:
        """The operator restarts motion (~/start): see ``SafetyFilter.resume`` (``q_settled``:
        the measured joints when the arm is at rest, else None); re-plans. Returns what was
        done."""
        self.target = None
        return self.safety.resume(q_settled)

    def update(self, limits: Optional[SafetyLimits] = None,
               gripper_threshold: Optional[float] = None) -> None:
        """New limits at runtime (validated by the caller). The last command, the target and
        a latched fault are kept: a new limit never resets the speed-limit reference."""
        old = self.safety
        new = SafetyFilter(limits if limits is not None else old.limits, old.control_period,
                           old.gripper_threshold if gripper_threshold is None else gripper_threshold)
        new.last_command, new.tracking_fault = old.last_command, old.tracking_fault
        self.safety = new

    def step(self, action, q_measured) -> SafetyDecision:
        """One action -> a joint command (``decision.ok``) or a hold with the reasons."""
        if self.target is None:
            anchor = self.safety.last_command
            if anchor is None:
                q = np.asarray(q_measured, dtype=float).ravel()
                if q.shape != (6,) or not np.all(np.isfinite(q)):
                    return SafetyDecision(False, None, np.full((4, 4), np.nan), None,
                                          ["measured joints invalid (need 6 finite values)"])
                anchor = q
            self.target = fk(anchor)
        decision = self.safety.step(action, q_measured, self.target)
        if decision.ok:
            self.target = decision.T_target
        return decision
