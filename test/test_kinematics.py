"""WidowX 250s kinematics: FK, Jacobian, IK, Euler helpers, Bridge delta convention."""
import numpy as np
import pytest

from llada_vla_ros.kinematics import (
    ARM_JOINTS, FINGER_CLOSED_M, FINGER_OPEN_M, HOME_M, JOINT_LOWER, JOINT_UPPER, SCREW_AXES,
    SLEEP_POSE, apply_delta, euler_sxyz_to_matrix, finger_opening, fk, ik, matrix_to_euler_sxyz,
    pose_to_xyz_quat, rotation_log, space_jacobian)


def rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def random_rotation(rng):
    return euler_sxyz_to_matrix(*rng.uniform(-np.pi, np.pi, 3))


def test_constants_shapes():
    assert ARM_JOINTS == ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle",
                          "wrist_rotate")
    assert JOINT_LOWER.shape == JOINT_UPPER.shape == SLEEP_POSE.shape == (6,)
    assert np.all(JOINT_LOWER < SLEEP_POSE) and np.all(SLEEP_POSE < JOINT_UPPER)
    assert SCREW_AXES.shape == (6, 6)
    assert np.allclose(np.linalg.norm(SCREW_AXES[:, :3], axis=1), 1.0)


def test_fk_at_zero_is_home():
    assert np.allclose(fk(np.zeros(6)), HOME_M, atol=1e-12)


def test_fk_sleep_pose_hand_checked():
    # With waist and both rolls at 0 the arm is planar (x-z). Pitch joints turn about +y, so
    # a link (x, z) becomes (x c + z s, -x s + z c) after a cumulative angle a.
    q = SLEEP_POSE
    links = [(0.04975, 0.25), (0.25, 0.0), (0.458325 - 0.29975, 0.0)]  # shoulder->elbow->wrist->ee
    angles = np.cumsum([q[1], q[2], q[4]])
    x, z = 0.0, 0.11065
    for (lx, lz), a in zip(links, angles):
        x += lx * np.cos(a) + lz * np.sin(a)
        z += -lx * np.sin(a) + lz * np.cos(a)
    T = fk(q)
    assert np.allclose(T[:3, 3], [x, 0.0, z], atol=1e-9)
    assert np.allclose(T[:3, 3], [0.122652, 0.0, 0.081264], atol=1e-6)  # numbers by hand
    assert np.allclose(T[:3, :3], ry(q[1] + q[2] + q[4]), atol=1e-12)


def test_fk_waist_turns_arm_about_z():
    T = fk([np.pi / 2, 0, 0, 0, 0, 0])
    assert np.allclose(T[:3, 3], [0.0, 0.458325, 0.36065], atol=1e-12)
    assert np.allclose(T[:3, :3], rz(np.pi / 2), atol=1e-12)


def test_space_jacobian_matches_finite_differences():
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = rng.uniform(JOINT_LOWER, JOINT_UPPER)
        J = space_jacobian(q)
        T_inv = np.linalg.inv(fk(q))
        h = 1e-6
        for i in range(6):
            dq = np.zeros(6)
            dq[i] = h
            dT = (fk(q + dq) - fk(q - dq)) / (2 * h) @ T_inv  # [V_s] in se(3)
            twist = [dT[2, 1], dT[0, 2], dT[1, 0], dT[0, 3], dT[1, 3], dT[2, 3]]
            assert np.allclose(J[:, i], twist, atol=1e-6)


def test_ik_round_trip_random_reachable_poses():
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.uniform(JOINT_LOWER + 0.05, JOINT_UPPER - 0.05)
        seed = np.clip(q + rng.uniform(-0.2, 0.2, 6), JOINT_LOWER, JOINT_UPPER)
        target = fk(q)
        res = ik(target, seed)
        assert res.success, (q, seed, res)
        assert res.iterations <= 100
        T = fk(res.q)
        assert np.linalg.norm(T[:3, 3] - target[:3, 3]) <= 1e-3
        assert np.linalg.norm(rotation_log(target[:3, :3] @ T[:3, :3].T)) <= 1e-3
        assert res.pos_err <= 1e-3 and res.rot_err <= 1e-3
        assert np.all(res.q >= JOINT_LOWER) and np.all(res.q <= JOINT_UPPER)


def test_ik_target_2m_away_fails():
    target = np.eye(4)
    target[:3, 3] = [2.0, 0.0, 0.3]
    res = ik(target, SLEEP_POSE)
    assert not res.success
    assert res.pos_err > 1.0
    assert res.iterations == 100
    assert np.all(res.q >= JOINT_LOWER) and np.all(res.q <= JOINT_UPPER)


def test_ik_enforces_joint_limits():
    q = np.array([0.6, 0.1, 0.2, 0.0, 1.0, 0.0])
    upper = JOINT_UPPER.copy()
    upper[0] = 0.3  # the waist may not reach 0.6
    res = ik(fk(q), np.zeros(6), upper=upper)
    assert not res.success
    assert res.q[0] <= 0.3


def test_ik_success_is_never_wrong():
    rng = np.random.default_rng(1)
    successes = 0
    for _ in range(100):
        target = np.eye(4)
        target[:3, :3] = random_rotation(rng)
        target[:3, 3] = rng.uniform([-0.7, -0.7, -0.3], [0.7, 0.7, 0.9])
        res = ik(target, rng.uniform(JOINT_LOWER, JOINT_UPPER), max_iters=30)
        T = fk(res.q)
        err_p = np.linalg.norm(T[:3, 3] - target[:3, 3])
        err_r = np.linalg.norm(rotation_log(target[:3, :3] @ T[:3, :3].T))
        assert np.isclose(err_p, res.pos_err) and np.isclose(err_r, res.rot_err, atol=1e-9)
        assert res.success == (err_p <= 1e-3 and err_r <= 1e-3)
        successes += res.success
    assert successes < 100  # most random poses are out of reach: failures must be reported


def test_euler_matches_elementary_rotations_and_round_trips():
    rng = np.random.default_rng(2)
    for _ in range(200):
        r, y = rng.uniform(-np.pi, np.pi, 2)
        p = rng.uniform(-np.pi / 2 + 1e-3, np.pi / 2 - 1e-3)
        R = euler_sxyz_to_matrix(r, p, y)
        assert np.allclose(R, rz(y) @ ry(p) @ rx(r), atol=1e-12)
        assert np.allclose(matrix_to_euler_sxyz(R), (r, p, y), atol=1e-9)


@pytest.mark.parametrize("pitch", [np.pi / 2, -np.pi / 2])
def test_euler_gimbal_lock(pitch):
    R = euler_sxyz_to_matrix(0.4, pitch, -0.3)
    r, p, y = matrix_to_euler_sxyz(R)
    assert np.isclose(p, pitch) and y == 0.0
    assert np.allclose(euler_sxyz_to_matrix(r, p, y), R, atol=1e-9)


def test_apply_delta_translation_adds():
    T_prev = fk([0.3, 0.1, 0.2, 0.1, 1.0, -0.2])
    T = apply_delta(T_prev, [0.01, -0.02, 0.03, 0, 0, 0])
    assert np.allclose(T[:3, 3], T_prev[:3, 3] + [0.01, -0.02, 0.03], atol=1e-15)
    assert np.allclose(T[:3, :3], T_prev[:3, :3], atol=1e-15)


def test_apply_delta_yaw_rotates_about_world_z_and_keeps_position():
    T_prev = np.eye(4)
    T_prev[:3, :3] = ry(np.pi / 2) @ rx(0.3)  # gripper down, rolled: not aligned with world
    T_prev[:3, 3] = [0.3, 0.0, 0.15]
    T = apply_delta(T_prev, [0, 0, 0, 0, 0, 0.2])
    assert np.allclose(T[:3, 3], T_prev[:3, 3])
    assert np.allclose(T[:3, :3], rz(0.2) @ T_prev[:3, :3], atol=1e-12)
    assert not np.allclose(T[:3, :3], T_prev[:3, :3] @ rz(0.2), atol=1e-3)  # not body axes


def test_apply_delta_uses_sxyz_order():
    R_prev = random_rotation(np.random.default_rng(4))
    T_prev = np.eye(4)
    T_prev[:3, :3] = R_prev
    T = apply_delta(T_prev, [0, 0, 0, 0.1, -0.2, 0.15])
    assert np.allclose(T[:3, :3], rz(0.15) @ ry(-0.2) @ rx(0.1) @ R_prev, atol=1e-12)


def quat_to_matrix(x, y, z, w):
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def test_pose_to_xyz_quat():
    T = np.eye(4)
    T[:3, 3] = [0.1, 0.2, 0.3]
    assert np.allclose(pose_to_xyz_quat(T), [0.1, 0.2, 0.3, 0, 0, 0, 1])
    T[:3, :3] = rz(np.pi / 2)
    assert np.allclose(pose_to_xyz_quat(T)[3:], [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    rng = np.random.default_rng(5)
    rotations = [random_rotation(rng) for _ in range(100)]
    rotations += [rx(np.pi), ry(np.pi), rz(np.pi), rz(np.pi - 1e-9) @ rx(0.2)]  # trace < 0
    for R in rotations:
        T[:3, :3] = R
        x, y, z, qx, qy, qz, qw = pose_to_xyz_quat(T)
        assert qw >= 0 and np.isclose(np.linalg.norm([qx, qy, qz, qw]), 1.0)
        assert np.allclose(quat_to_matrix(qx, qy, qz, qw), R, atol=1e-9)


def test_rotation_log_near_pi():
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    for angle in (np.pi, np.pi - 1e-6, np.pi - 1e-3, 1e-8, 0.7):
        K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        R = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
        w = rotation_log(R)
        assert np.isclose(np.linalg.norm(w), angle, atol=1e-7)
        if angle < np.pi - 1e-7:
            assert np.allclose(w, axis * angle, atol=1e-7)
        else:
            assert np.allclose(abs(w @ axis), angle, atol=1e-7)


def test_finger_opening_spans_the_finger_travel():
    closed, opened = FINGER_CLOSED_M, FINGER_OPEN_M
    assert finger_opening(closed) == 0.0 and finger_opening(opened) == 1.0
    assert finger_opening((closed + opened) / 2) == pytest.approx(0.5)
    assert finger_opening(opened + 0.01) == 1.0  # clipped, never above open
    assert finger_opening(0.0) == 0.0
