"""The recorded action of each frame, and the gaps that leave a frame without one.

Two sources:

- ``chunk_actions``: the first action of the latest ActionChunk whose header stamp equals or
  precedes the image stamp (what the policy commanded);
- ``fk_actions``: the end-effector motion from this frame to the next, from the joint states
  through forward kinematics (Bridge delta convention): the motion the arm made (and the
  robot state at each frame, for models that take one). The gripper is the last recorded
  gripper command before the next frame, i.e. the one given during this step (a command
  stamped at the next frame's very time belongs to the next step; pwm: +effort = open 1,
  -effort = closed 0; what the operator asked: fingers closed on an object wider than half
  their travel stay more than half open), else the normalised opening there. With
  ``gripper_label="ahead"`` it is the command in force at the next frame, including one
  given at that very time: each close and open labelled one frame early, as the
  simulator's data version 1 was (docs/results.md, section 3).

A label needs its data around the frame. An interval longer than ``gap_limit`` in a topic a
label uses is a gap: the frame gets no action and a reason, never a value interpolated
across the gap (the dataset then never builds a training chunk across it).
"""
from __future__ import annotations

import numpy as np

from .. import kinematics

ACTION_DIM = 7
# gripper label -> searchsorted side at the next frame's time: the command given during this
# step (one stamped at the next frame's very time belongs to the next step), or in force then
GRIPPER_LABELS = {"step": "left", "ahead": "right"}


def median_interval(stamps_ns) -> float:
    """Median interval (ns) of a stamp sequence; 0 with fewer than two stamps."""
    d = np.diff(np.sort(np.asarray(stamps_ns, dtype=np.int64)))
    return float(np.median(d)) if d.size else 0.0


def gap_limit(max_gap_factor: float, *stamp_arrays) -> float:
    """Longest interval (ns) that is not a gap: ``max_gap_factor`` x the longest median
    interval of the given streams (e.g. joint states and frames: a joint-state stream much
    faster than the frames may miss a message or two without leaving a frame unlabelled)."""
    period = max((median_interval(s) for s in stamp_arrays), default=0.0)
    return max_gap_factor * period if period > 0 else np.inf


def chunk_actions(frame_ns, chunk_ns, chunks, limit_ns: float, topic: str) -> tuple:
    """(actions, reasons): per frame the first action of the latest chunk at or before it,
    or None and why (before the first chunk, or the latest chunk is older than the limit)."""
    chunk_ns = np.asarray(chunk_ns, dtype=np.int64)
    idx = np.searchsorted(chunk_ns, frame_ns, side="right") - 1
    actions, reasons = [], []
    for s, i in zip(frame_ns, idx):
        if i < 0:
            actions.append(None)
            reasons.append(f"before the first ActionChunk on {topic}")
        elif s - chunk_ns[i] > limit_ns:
            actions.append(None)
            reasons.append(f"gap in {topic} (latest ActionChunk older than "
                           f"{limit_ns / 1e9:.3g} s)")
        else:
            actions.append(chunks[i])
            reasons.append("")
    return actions, reasons


def fk_actions(frame_ns, next_ok, js_ns, js_q, js_grip, limit_ns: float, topic: str,
               frame_bag_ns=None, gripper_commands=None, gripper_label: str = "step") -> tuple:
    """(actions, reasons, states): per frame the delta-EE motion to the next frame, or None
    and why; and the robot state at the frame (``kinematics.robot_state``: end-effector pose,
    measured gripper opening; None where the joint states have a gap), from the same poses.

    ``next_ok[k]``: frame k+1 follows frame k without a gap in the image stream. A pose at a
    frame time comes from the joint states on either side of it, and only when they are at
    most ``limit_ns`` apart (or one is at that very time). ``gripper_commands``: (bag times,
    openings 0/1) of the recorded gripper commands, matched to ``frame_bag_ns``;
    ``gripper_label`` (a GRIPPER_LABELS key) which of them labels a frame (module docstring)."""
    side = GRIPPER_LABELS[gripper_label]
    frame_ns = np.asarray(frame_ns, dtype=np.int64)
    cmd_ns, cmd_open = gripper_commands if gripper_commands is not None else ([], [])
    order = np.argsort(js_ns, kind="stable")
    ts, q, g = np.asarray(js_ns)[order], np.asarray(js_q)[order], np.asarray(js_grip)[order]
    poses, grips, why = _poses(frame_ns, ts, q, g, limit_ns, topic)
    actions, reasons = [], []
    for k in range(len(frame_ns)):
        reason = (why[k] or ("last frame (no next frame to measure the motion)"
                             if k + 1 == len(frame_ns) else "")
                  or ("" if next_ok[k] else "the next frame comes after a gap in the images")
                  or why[k + 1])
        if reason:
            actions.append(None)
            reasons.append(reason)
            continue
        T0, T1 = poses[k], poses[k + 1]
        droll, dpitch, dyaw = kinematics.matrix_to_euler_sxyz(T1[:3, :3] @ T0[:3, :3].T)
        dp = T1[:3, 3] - T0[:3, 3]
        grip = grips[k + 1]
        if len(cmd_ns) and frame_bag_ns is not None:
            j = int(np.searchsorted(cmd_ns, frame_bag_ns[k + 1], side=side)) - 1
            grip = cmd_open[j] if j >= 0 else grip
        actions.append(np.array([*dp, droll, dpitch, dyaw, grip], dtype=np.float32))
        reasons.append("")
    states = [None if T is None else kinematics.state_from_pose(T, grip)
              for T, grip in zip(poses, grips)]
    return actions, reasons, states


def _poses(frame_ns, ts, q, g, limit_ns, topic) -> tuple:
    """End-effector pose and gripper opening at each frame time, or a reason."""
    n = len(ts)
    hi = np.searchsorted(ts, frame_ns, side="right")  # ts[hi - 1] <= s < ts[hi]
    poses, grips, why = [None] * len(frame_ns), [None] * len(frame_ns), [""] * len(frame_ns)
    for k, (s, h) in enumerate(zip(frame_ns, hi)):
        lo = h - 1
        if lo < 0 or (h == n and s > ts[-1]):
            why[k] = f"outside the joint states on {topic}"
        elif s == ts[lo]:
            poses[k], grips[k] = kinematics.fk(q[lo]), float(g[lo])
        elif ts[h] - ts[lo] > limit_ns:
            why[k] = f"gap in {topic} (no joint state for more than {limit_ns / 1e9:.3g} s)"
        else:
            w = (s - ts[lo]) / (ts[h] - ts[lo])
            poses[k] = kinematics.fk(q[lo] + w * (q[h] - q[lo]))
            grips[k] = float(g[lo] + w * (g[h] - g[lo]))
    return poses, grips, why


NO_GRIPPER, FINGER, GRIPPER_JOINT = -1, 0, 1


def gripper_opening(names: list, positions) -> tuple:
    """(kind, value): (FINGER, 0..1) from left_finger, (GRIPPER_JOINT, raw angle) from the
    gripper joint, or (NO_GRIPPER, nan) when neither is in the joint state."""
    if "left_finger" in names:
        return FINGER, kinematics.finger_opening(positions[names.index("left_finger")])
    if "gripper" in names:
        return GRIPPER_JOINT, float(positions[names.index("gripper")])
    return NO_GRIPPER, float("nan")


def normalised_gripper(kinds, values) -> np.ndarray:
    """Opening in [0, 1] per joint state: fingers by their travel, the gripper joint by the
    range it covers in the bag; 1 (open, Bridge's default) where unknown."""
    kinds = set(np.asarray(kinds).tolist()) - {NO_GRIPPER}
    values = np.asarray(values, dtype=np.float64)
    if FINGER in kinds or not kinds:
        return np.nan_to_num(values, nan=1.0)
    lo, hi = np.nanmin(values), np.nanmax(values)
    if hi - lo < 1e-6:
        return np.ones_like(values)  # never moved: Bridge's default, open
    return np.nan_to_num((values - lo) / (hi - lo), nan=1.0)
