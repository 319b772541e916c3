"""WidowX 250s kinematics: product-of-exponentials FK, space Jacobian, damped-least-squares IK.

Frames and numbers follow the Interbotix wx250s description (modern_robotics convention):
space frame ``wx250s/base_link``, end effector ``ee_gripper_link``, screw axes as rows
``[omega | v]``. Poses are 4x4 homogeneous matrices, angles in radians, lengths in metres.

The Bridge delta-EE action convention (``apply_delta``) and the Euler 'sxyz' helpers used by
Bridge/OpenVLA live here too, and ``robot_state``, the state vector a model may take as
input. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")

JOINT_LOWER = np.array([-np.pi, -1.885, -2.1468, -np.pi, -1.7453, -np.pi])
JOINT_UPPER = np.array([np.pi, 1.9897, 1.6057, np.pi, 2.1468, np.pi])
JOINT_VELOCITY_LIMIT = np.pi  # rad/s, every arm joint
SLEEP_POSE = np.array([0.0, -1.80, 1.55, 0.0, 0.8, 0.0])
READY_POSE = np.array([0.0, -0.484, 0.749, 0.0, 0.334, 0.0])  # gripper at (0.30, 0, 0.20) m
FINGER_CLOSED_M, FINGER_OPEN_M = 0.015, 0.037  # left_finger travel (right_finger = -left)


def finger_opening(left_finger_m: float) -> float:
    """Gripper opening 0 (closed) .. 1 (open) from the left finger position (m)."""
    return float(np.clip((left_finger_m - FINGER_CLOSED_M) / (FINGER_OPEN_M - FINGER_CLOSED_M),
                         0.0, 1.0))

def arm_joint_positions(names, positions) -> np.ndarray:
    """The 6 arm joints, in ARM_JOINTS order, from a sensor_msgs/JointState's ``name`` and
    ``position`` (looked up by name, as the driver's order is not fixed). ValueError naming
    the cause for a legal but unusable message: a missing arm joint, fewer positions than
    names (a driver may publish only velocities or efforts), a duplicated name, NaN/Inf."""
    names = list(names)
    missing = [j for j in ARM_JOINTS if j not in names]
    if missing:
        raise ValueError(f"joint_states lacks arm joint(s) {missing}")
    if len(positions) != len(names):
        raise ValueError(f"joint_states has {len(positions)} positions for {len(names)} names")
    dup = sorted({j for j in ARM_JOINTS if names.count(j) > 1})
    if dup:
        raise ValueError(f"joint_states names {dup} more than once")
    q = np.array([positions[names.index(j)] for j in ARM_JOINTS], dtype=float)
    if not np.all(np.isfinite(q)):
        raise ValueError("joint_states arm positions contain NaN/Inf")
    return q


def joint_state_opening(names, positions):
    """The gripper opening 0..1 from a JointState's ``left_finger`` position, or None when
    the message has no (finite) left_finger."""
    names = list(names)
    if "left_finger" not in names or len(positions) != len(names):
        return None
    value = float(positions[names.index("left_finger")])
    return finger_opening(value) if np.isfinite(value) else None


# End-effector pose at q = 0.
HOME_M = np.array([
    [1.0, 0.0, 0.0, 0.458325],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.36065],
    [0.0, 0.0, 0.0, 1.0],
])

# Space-frame screw axes, one row per joint: [wx, wy, wz, vx, vy, vz].
SCREW_AXES = np.array([
    [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, -0.11065, 0.0, 0.0],
    [0.0, 1.0, 0.0, -0.36065, 0.0, 0.04975],
    [1.0, 0.0, 0.0, 0.0, 0.36065, 0.0],
    [0.0, 1.0, 0.0, -0.36065, 0.0, 0.29975],
    [1.0, 0.0, 0.0, 0.0, 0.36065, 0.0],
])


# --- small SO(3)/SE(3) helpers ---------------------------------------------------------------

def skew(w) -> np.ndarray:
    """3-vector -> 3x3 skew-symmetric matrix [w]."""
    return np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])


def screw_exp(screw, theta: float) -> np.ndarray:
    """exp([S] theta) for a screw S = [omega | v] with |omega| = 1 or omega = 0."""
    w, v = np.asarray(screw[:3], float), np.asarray(screw[3:], float)
    T = np.eye(4)
    if np.linalg.norm(w) < 1e-12:  # prismatic
        T[:3, 3] = v * theta
        return T
    W = skew(w)
    W2 = W @ W
    s, c = np.sin(theta), np.cos(theta)
    T[:3, :3] = np.eye(3) + s * W + (1.0 - c) * W2
    T[:3, 3] = (theta * np.eye(3) + (1.0 - c) * W + (theta - s) * W2) @ v
    return T


def adjoint(T: np.ndarray) -> np.ndarray:
    """6x6 adjoint of T, acting on twists ordered [omega | v]."""
    R, p = T[:3, :3], T[:3, 3]
    Ad = np.zeros((6, 6))
    Ad[:3, :3] = R
    Ad[3:, 3:] = R
    Ad[3:, :3] = skew(p) @ R
    return Ad


def rotation_log(R: np.ndarray) -> np.ndarray:
    """Axis-angle vector (axis * angle, angle in [0, pi]) of a rotation matrix."""
    cos_a = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos_a))
    axis_sin = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2.0
    if angle < 1e-6:
        return axis_sin  # sin(a) ~ a
    if np.pi - angle > 1e-4:
        return axis_sin * (angle / np.sin(angle))
    # Near pi: R ~ 2 a a^T - I; take the best-conditioned column, sign from axis_sin.
    B = (R + np.eye(3)) / 2.0
    i = int(np.argmax(np.diag(B)))
    axis = B[:, i] / np.sqrt(max(B[i, i], 1e-12))
    axis /= np.linalg.norm(axis)
    if axis @ axis_sin < 0:
        axis = -axis
    return axis * angle


def rotation_angle(R: np.ndarray) -> float:
    """Rotation angle of R in [0, pi]."""
    return float(np.linalg.norm(rotation_log(R)))


# --- forward kinematics --------------------------------------------------------------------

def _fk_and_jacobian(q, want_jacobian: bool):
    T = np.eye(4)
    J = np.zeros((6, 6)) if want_jacobian else None
    for i in range(6):
        if want_jacobian:
            J[:, i] = adjoint(T) @ SCREW_AXES[i]
        T = T @ screw_exp(SCREW_AXES[i], q[i])
    return T @ HOME_M, J


def fk(q) -> np.ndarray:
    """End-effector pose (4x4, in wx250s/base_link) for the 6 arm joint angles q."""
    q = np.asarray(q, float).reshape(6)
    return _fk_and_jacobian(q, False)[0]


def space_jacobian(q) -> np.ndarray:
    """6x6 space Jacobian; column i is the space twist [omega | v] of joint i."""
    q = np.asarray(q, float).reshape(6)
    return _fk_and_jacobian(q, True)[1]


# --- inverse kinematics --------------------------------------------------------------------

@dataclass
class IKResult:
    q: np.ndarray          # best joints found (within the joint limits)
    success: bool          # True only if pos_err <= tol_pos and rot_err <= tol_rot
    pos_err: float         # m, |p_target - p(q)|
    rot_err: float         # rad, angle of R_target R(q)^T
    iterations: int


def _pose_error(T_target, T):
    """World-frame error [rotation vector | position difference] between two poses."""
    e_rot = rotation_log(T_target[:3, :3] @ T[:3, :3].T)
    e_pos = T_target[:3, 3] - T[:3, 3]
    return np.concatenate([e_rot, e_pos])


def ik(T_target, q_seed, max_iters: int = 100, damping: float = 0.2,
       tol_pos: float = 1e-3, tol_rot: float = 1e-3,
       lower=JOINT_LOWER, upper=JOINT_UPPER) -> IKResult:
    """Damped-least-squares IK seeded by q_seed; each iterate is clamped into [lower, upper].

    Works with the geometric Jacobian at the end-effector point (world axes), so the error is
    e = [rotation vector of R_target R^T | p_target - p]. Step: dq = J^T (J J^T + lam2 I)^-1 e
    with error-scaled damping lam2 = damping * |e|^2 + 1e-6 (Sugihara's Levenberg-Marquardt):
    strong far from the target and near singularities, vanishing close to a solution.
    Returns the best iterate; ``success`` is False when the tolerances are not met
    (unreachable target, joint limits, too few iterations).
    """
    T_target = np.asarray(T_target, float)
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    q = np.clip(np.asarray(q_seed, float).reshape(6), lower, upper)
    best = None
    for it in range(max_iters + 1):
        T, Js = _fk_and_jacobian(q, True)
        e = _pose_error(T_target, T)
        rot_err, pos_err = float(np.linalg.norm(e[:3])), float(np.linalg.norm(e[3:]))
        if best is None or pos_err + rot_err < best[1] + best[2]:
            best = (q.copy(), pos_err, rot_err, it)
        if pos_err <= tol_pos and rot_err <= tol_rot:
            return IKResult(q, True, pos_err, rot_err, it)
        if it == max_iters:
            break
        # Linear velocity of the EE point: v_s + omega x p = v_s - [p] omega.
        J = Js.copy()
        J[3:] = Js[3:] - skew(T[:3, 3]) @ Js[:3]
        lam2 = damping * float(e @ e) + 1e-6
        dq = J.T @ np.linalg.solve(J @ J.T + lam2 * np.eye(6), e)
        q = np.clip(q + dq, lower, upper)
    q_best, pos_err, rot_err, it = best
    ok = pos_err <= tol_pos and rot_err <= tol_rot
    return IKResult(q_best, ok, pos_err, rot_err, max_iters)


# --- rotations and poses -------------------------------------------------------------------

def euler_sxyz_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Static x-y-z Euler angles -> R = Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    cr, sr = np.cos(roll), np.sin(roll)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def matrix_to_euler_sxyz(R: np.ndarray):
    """Inverse of euler_sxyz_to_matrix: (roll, pitch, yaw), pitch in [-pi/2, pi/2].

    At gimbal lock (|pitch| = pi/2) only roll -/+ yaw is defined: yaw is set to 0 and the
    whole rotation about z goes into roll (as transforms3d does).
    """
    R = np.asarray(R, float)
    cp = np.hypot(R[0, 0], R[1, 0])
    pitch = float(np.arctan2(-R[2, 0], cp))
    if cp > 1e-9:
        roll = float(np.arctan2(R[2, 1], R[2, 2]))
        yaw = float(np.arctan2(R[1, 0], R[0, 0]))
    else:
        roll = float(np.arctan2(-R[1, 2], R[1, 1]))
        yaw = 0.0
    return roll, pitch, yaw


def apply_delta(T_prev, delta6) -> np.ndarray:
    """Bridge delta-EE action on the previous TARGET pose (not the measured one).

    p += (dx, dy, dz); R = euler_sxyz_to_matrix(droll, dpitch, dyaw) @ R_prev, i.e. the
    rotation is about world axes through the end-effector point.
    """
    T_prev = np.asarray(T_prev, float)
    d = np.asarray(delta6, float).reshape(6)
    T = np.eye(4)
    T[:3, :3] = euler_sxyz_to_matrix(d[3], d[4], d[5]) @ T_prev[:3, :3]
    T[:3, 3] = T_prev[:3, 3] + d[:3]
    return T


def matrix_to_quat(R: np.ndarray):
    """Rotation matrix -> unit quaternion (qx, qy, qz, qw) with qw >= 0."""
    R = np.asarray(R, float)
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = np.array([(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s,
                      (R[1, 0] - R[0, 1]) / s, 0.25 * s])
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(max(1.0 + R[i, i] - R[j, j] - R[k, k], 1e-12))
        q = np.zeros(4)
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
        q[3] = (R[k, j] - R[j, k]) / s
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return tuple(float(v) for v in q)


def pose_to_xyz_quat(T):
    """4x4 pose -> (x, y, z, qx, qy, qz, qw), the fields of geometry_msgs/Pose."""
    T = np.asarray(T, float)
    return tuple(float(v) for v in T[:3, 3]) + matrix_to_quat(T[:3, :3])


# --- the robot state a policy may take as input ------------------------------------------------

STATE_NAMES = ("x", "y", "z", "r11", "r21", "r31", "r12", "r22", "r32", "gripper")
STATE_DIM = len(STATE_NAMES)


def robot_state(q, gripper_opening: float) -> np.ndarray:
    """(10,) float32: the end-effector position (m), its rotation as the first two columns of
    the rotation matrix (continuous, unlike Euler angles: a gripper pointing down sits at
    pitch ~ pi/2, where roll and yaw wrap), and the gripper opening 0 (closed) .. 1 (open).
    ValueError on NaN/Inf or a q that is not the 6 arm joints."""
    q = np.asarray(q, dtype=float)
    if q.shape != (len(ARM_JOINTS),) or not np.all(np.isfinite(q)):
        raise ValueError(f"robot state needs 6 finite arm joint positions, got {q!r}")
    return state_from_pose(fk(q), gripper_opening)


def state_from_pose(T, gripper_opening: float) -> np.ndarray:
    """``robot_state`` of an end-effector pose (4x4) and gripper opening."""
    if not np.isfinite(gripper_opening):
        raise ValueError(f"gripper opening must be finite, got {gripper_opening}")
    T = np.asarray(T, dtype=float)
    return np.concatenate([T[:3, 3], T[:3, 0], T[:3, 1],
                           [float(np.clip(gripper_opening, 0.0, 1.0))]]).astype(np.float32)
