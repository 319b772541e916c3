"""Safety filter: example tests for every rule, and hypothesis properties over any action."""
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llada_vla_ros.kinematics import (
    JOINT_LOWER, JOINT_UPPER, SLEEP_POSE, euler_sxyz_to_matrix, fk, ik)
from llada_vla_ros.safety import SafetyDecision, SafetyFilter, SafetyLimits

PERIOD = 0.2
CONFIG = Path(__file__).resolve().parents[1] / "config" / "policy.yaml"


def gripper_down_joints(xyz):
    """Joints putting the gripper at xyz, pointing down."""
    T = np.eye(4)
    T[:3, :3] = euler_sxyz_to_matrix(0.0, np.pi / 2, 0.0)
    T[:3, 3] = xyz
    res = ik(T, [np.arctan2(xyz[1], xyz[0]), 0, 0, 0, 1.3, 0])
    assert res.success
    return res.q


Q_RESET = gripper_down_joints([0.3, 0.0, 0.15])  # Bridge reset pose
T_RESET = fk(Q_RESET)


def act(dx=0.0, dy=0.0, dz=0.0, droll=0.0, dpitch=0.0, dyaw=0.0, grip=1.0):
    return np.array([dx, dy, dz, droll, dpitch, dyaw, grip])


def fast_filter(**kw):
    """Velocity limit high enough to leave the Cartesian rules alone."""
    return SafetyFilter(SafetyLimits(max_joint_velocity=np.pi, **kw), PERIOD)


# --- SafetyLimits --------------------------------------------------------------------------

def test_limits_defaults_match_config():
    safety = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]["safety"]
    limits = SafetyLimits()
    for key, value in safety.items():
        got = getattr(limits, key)
        assert np.allclose(got, value), key
    assert set(safety) == {"max_step_m", "max_step_rad", "workspace_min", "workspace_max",
                           "joint_margin", "max_joint_velocity", "max_tracking_error"}
    assert SafetyLimits(**safety) == limits


@pytest.mark.parametrize("kwargs, words", [
    (dict(workspace_min=(0.5, -0.2, 0.0), workspace_max=(0.45, 0.25, 0.3)), "workspace_min"),
    (dict(workspace_min=(0.1, 0.2, 0.0), workspace_max=(0.45, 0.2, 0.3)), "workspace_min"),
    (dict(workspace_min=(0.1, 0.2)), "3 values"),
    (dict(workspace_max=(0.45, np.nan, 0.3)), "finite"),
    (dict(max_step_m=0.0), "max_step_m"),
    (dict(max_step_rad=-0.1), "max_step_rad"),
    (dict(max_step_m=np.inf), "finite"),
    (dict(joint_margin=-0.01), "joint_margin"),
    (dict(joint_margin=2.0), "joint_margin"),
    (dict(max_joint_velocity=0.0), "max_joint_velocity"),
    (dict(max_joint_velocity=3.2), "hardware limit"),
])
def test_limits_validation(kwargs, words):
    with pytest.raises(ValueError, match=words):
        SafetyLimits(**kwargs)


def test_filter_validation():
    with pytest.raises(ValueError, match="control_period"):
        SafetyFilter(SafetyLimits(), 0.0)
    with pytest.raises(ValueError, match="gripper_threshold"):
        SafetyFilter(SafetyLimits(), PERIOD, gripper_threshold=float("nan"))


# --- one example per rule ------------------------------------------------------------------

def assert_hold(d: SafetyDecision, T_prev, words):
    assert not d.ok and d.q_cmd is None and d.gripper_open is None
    assert np.array_equal(d.T_target, T_prev)
    assert any(words in r for r in d.reasons), d.reasons


def test_small_action_passes_unchanged():
    f = SafetyFilter(SafetyLimits(), PERIOD)
    d = f.step(act(dx=0.01, dyaw=0.05), Q_RESET, T_RESET)
    assert d.ok and d.reasons == []
    expected = T_RESET.copy()
    expected[0, 3] += 0.01
    expected[:3, :3] = euler_sxyz_to_matrix(0, 0, 0.05) @ T_RESET[:3, :3]
    assert np.allclose(d.T_target, expected)
    assert np.allclose(fk(d.q_cmd), expected, atol=1e-3)
    assert d.gripper_open is True


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("index", [0, 4, 6])
def test_non_finite_action_holds(bad, index):
    f = SafetyFilter(SafetyLimits(), PERIOD)
    a = act()
    a[index] = bad
    assert_hold(f.step(a, Q_RESET, T_RESET), T_RESET, "action contains NaN/Inf")


def test_bad_inputs_hold():
    f = SafetyFilter(SafetyLimits(), PERIOD)
    assert_hold(f.step(np.zeros(6), Q_RESET, T_RESET), T_RESET, "expected 7")
    q = Q_RESET.copy()
    q[2] = np.nan
    assert_hold(f.step(act(), q, T_RESET), T_RESET, "measured joints invalid")
    T_bad = T_RESET.copy()
    T_bad[0, 3] = np.inf
    d = f.step(act(), Q_RESET, T_bad)
    assert not d.ok and any("previous target" in r for r in d.reasons)


def test_translation_clipped_by_norm():
    f = fast_filter()
    d = f.step(act(dx=0.3, dy=-0.4), Q_RESET, T_RESET)  # norm 0.5 -> 0.05, direction kept
    assert d.ok
    assert any("translation clipped to 0.05 m" in r for r in d.reasons)
    assert np.allclose(d.T_target[:3, 3] - T_RESET[:3, 3], [0.03, -0.04, 0.0], atol=1e-12)


def test_rotation_clipped_per_axis():
    f = fast_filter()
    d = f.step(act(droll=-1.0, dyaw=0.1), Q_RESET, T_RESET)
    assert d.ok
    assert any("rotation clipped to 0.25 rad" in r for r in d.reasons)
    expected = euler_sxyz_to_matrix(-0.25, 0.0, 0.1) @ T_RESET[:3, :3]
    assert np.allclose(d.T_target[:3, :3], expected, atol=1e-12)
    assert np.allclose(d.T_target[:3, 3], T_RESET[:3, 3])


def test_target_clamped_to_workspace():
    f = fast_filter()
    T_prev = T_RESET.copy()
    T_prev[:3, 3] = [0.44, 0.0, -0.005]
    q = ik(T_prev, Q_RESET).q
    d = f.step(act(dx=0.03, dz=-0.03), q, T_prev)
    assert d.ok
    assert "target clamped to workspace" in d.reasons
    assert np.allclose(d.T_target[:3, 3], [0.45, 0.0, -0.01])
    assert np.allclose(fk(d.q_cmd)[:3, 3], [0.45, 0.0, -0.01], atol=1e-3)


def test_ik_failure_holds():
    big_box = dict(workspace_min=(-3, -3, -3), workspace_max=(3, 3, 3))
    f = fast_filter(**big_box)
    T_prev = T_RESET.copy()
    T_prev[:3, 3] = [1.0, 0.0, 0.3]  # 1 m out: beyond the arm's reach
    assert_hold(f.step(act(dx=0.01), Q_RESET, T_prev), T_prev, "IK failed: target unreachable")
    assert f.last_command is None


def test_joint_margin_holds():
    # Straight behind the robot the waist must be at +-pi, inside the 0.05 rad margin.
    f = fast_filter(workspace_min=(-0.5, -0.5, -0.1), workspace_max=(0.5, 0.5, 0.5))
    q = np.array([3.0, 0.0, 0.2, 0.0, 1.3, 0.0])
    T_prev = np.eye(4)
    T_prev[:3, :3] = euler_sxyz_to_matrix(0, np.pi / 2, np.pi)  # gripper down, facing back
    T_prev[:3, 3] = [-0.3, 0.0, 0.15]
    assert ik(T_prev, q).success  # reachable, but only with the waist at its limit
    assert_hold(f.step(act(), q, T_prev), T_prev, "joint limit: IK solution puts waist")


def test_joint_velocity_scaled_and_target_follows_command():
    f = SafetyFilter(SafetyLimits(max_joint_velocity=1.0), PERIOD)
    d = f.step(act(dyaw=0.25), Q_RESET, T_RESET)  # the waist has to turn 0.25 rad > 0.2
    assert d.ok
    assert any(r.startswith("joint velocity limit: step scaled") for r in d.reasons)
    step = np.abs(d.q_cmd - Q_RESET)
    assert np.isclose(step.max(), 0.2)
    assert np.allclose(d.T_target, fk(d.q_cmd))


def test_velocity_limit_is_relative_to_last_command():
    f = SafetyFilter(SafetyLimits(), PERIOD)
    first = f.step(act(dyaw=0.25), Q_RESET, T_RESET)
    # The robot has not moved yet (stale measurement): the step counts from the last command.
    second = f.step(act(dyaw=0.25), Q_RESET, first.T_target)
    assert second.ok
    assert np.abs(second.q_cmd - first.q_cmd).max() <= 0.2 + 1e-9
    assert np.abs(second.q_cmd - Q_RESET).max() > 0.2 + 1e-6
    # ~/start with the arm lagging (within the tracking limit) keeps the last command as the
    # reference: a reversal is still limited to one step from it (the reset bypass, fixed).
    assert f.resume() == "resuming from the last command"
    back = f.step(act(dyaw=-0.25), Q_RESET, fk(second.q_cmd))
    assert back.ok and np.abs(back.q_cmd - second.q_cmd).max() <= 0.2 + 1e-9


def test_scaled_step_leaving_workspace_holds():
    # Gripper on the box floor (z = -0.01); a big rotation is scaled in joint space, and the
    # joint-space path dips more than 2 mm below the floor.
    T_prev = np.eye(4)
    T_prev[:3, :3] = euler_sxyz_to_matrix(-0.09, 1.62, -0.47)
    T_prev[:3, 3] = [0.34, 0.04, -0.01]
    q = ik(T_prev, [0, 0.3, 0.3, 0, 1.3, 0]).q
    f = SafetyFilter(SafetyLimits(), PERIOD)
    d = f.step(act(droll=0.25, dpitch=0.25, dyaw=-0.25), q, T_prev)
    assert_hold(d, T_prev, "joint velocity limit: scaled step leaves the workspace")


def test_start_inside_joint_margin_moves_away():
    q = SLEEP_POSE.copy()
    q[2] = 1.58  # elbow 0.026 rad from its limit, inside the 0.05 rad margin
    f = SafetyFilter(SafetyLimits(max_joint_velocity=0.5), PERIOD)
    assert_hold(f.step(act(), q, fk(q)), fk(q), "joint limit: IK solution puts elbow")
    d = f.step(act(dx=0.05), q, fk(q))
    assert d.ok
    assert any("elbow" in r and "moving away" in r for r in d.reasons), d.reasons
    assert d.q_cmd[2] < q[2]


def test_arm_not_following_commands_holds_until_reset():
    f = SafetyFilter(SafetyLimits(max_tracking_error=0.3), PERIOD)
    T, q_cmds = T_RESET, []
    for _ in range(10):  # the measured joints never move (torque off)
        d = f.step(act(dyaw=0.25), Q_RESET, T)
        if not d.ok:
            break
        T = d.T_target
        q_cmds.append(d.q_cmd)
    assert_hold(d, T, "tracking error")
    assert 1 <= len(q_cmds) <= 3  # at 0.2 rad per step the lag passes 0.3 rad quickly
    assert np.abs(q_cmds[-1] - Q_RESET).max() <= 0.3 + 0.2 + 1e-9
    assert not f.step(act(), Q_RESET, T).ok  # still holding: nothing changed
    # latched: the arm catching up does not release the hold, only resume() (~/start) does
    assert_hold(f.step(act(), q_cmds[-1], T), T, "tracking error")
    assert "measured" in f.resume()  # the fault is cleared: from the measurement
    d = f.step(act(dyaw=0.1), Q_RESET, T_RESET)
    assert d.ok and np.abs(d.q_cmd - Q_RESET).max() <= 0.2 + 1e-9


def test_gripper_threshold():
    f = SafetyFilter(SafetyLimits(), PERIOD)
    assert f.step(act(grip=0.5), Q_RESET, T_RESET).gripper_open is True
    assert f.step(act(grip=0.49), Q_RESET, T_RESET).gripper_open is False
    g = SafetyFilter(SafetyLimits(), PERIOD, gripper_threshold=0.8)
    assert g.step(act(grip=0.7), Q_RESET, T_RESET).gripper_open is False
    assert g.step(act(grip=0.8), Q_RESET, T_RESET).gripper_open is True


def test_start_outside_workspace_moves_back_in():
    # Sleep pose target sits below the box's x range once the box is moved forward.
    f = SafetyFilter(SafetyLimits(workspace_min=(0.2, -0.2, -0.01)), PERIOD)
    q, T = SLEEP_POSE.copy(), fk(SLEEP_POSE)
    dist = 0.2 - T[0, 3]
    for i in range(30):
        d = f.step(act(), q, T)
        assert d.ok, d.reasons
        if i == 0:
            assert "target outside workspace, moving back in" in d.reasons
        new_dist = max(0.0, 0.2 - d.T_target[0, 3])
        assert new_dist < dist or new_dist == 0.0
        dist, q, T = new_dist, d.q_cmd, d.T_target
        if dist == 0.0:
            break
    assert dist == 0.0


# --- properties ----------------------------------------------------------------------------

SAFE_STARTS = [Q_RESET, SLEEP_POSE, np.array([0.4, -0.3, 0.4, 0.2, 1.2, -0.5]),
               gripper_down_joints([0.43, 0.23, 0.0]),    # near a corner of the box
               gripper_down_joints([0.12, -0.18, 0.28])]  # wrist_angle near its margin
LIMITS = SafetyLimits()
Q_MIN = JOINT_LOWER + LIMITS.joint_margin
Q_MAX = JOINT_UPPER - LIMITS.joint_margin
BOX_MIN, BOX_MAX = np.array(LIMITS.workspace_min), np.array(LIMITS.workspace_max)

values = st.one_of(
    st.floats(-0.3, 0.3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1e6, -1e6, 1e-300, float("nan"), float("inf"), -float("inf")]),
)
actions = st.one_of(
    st.lists(values, min_size=7, max_size=7),
    st.lists(st.floats(-0.3, 0.3), min_size=7, max_size=7),  # plausible policy output
)
sequences = st.one_of(
    st.lists(actions, min_size=1, max_size=12),
    st.tuples(actions, st.integers(1, 12)).map(lambda t: [t[0]] * t[1]),  # a policy pushing on
)


def test_safe_starts_are_safe():
    for q in SAFE_STARTS:
        assert np.all(Q_MIN <= q) and np.all(q <= Q_MAX)
        p = fk(q)[:3, 3]
        assert np.all(BOX_MIN <= p) and np.all(p <= BOX_MAX)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.sampled_from(range(len(SAFE_STARTS))),
       sequence=sequences,
       lag=st.booleans())
def test_any_action_sequence_stays_safe(start, sequence, lag):
    f = SafetyFilter(LIMITS, PERIOD)
    q_meas = SAFE_STARTS[start].copy()
    T = fk(q_meas)
    q_prev = q_meas.copy()
    for a in sequence:
        d = f.step(np.array(a), q_meas, T)
        assert np.all(np.isfinite(d.T_target))
        if not np.all(np.isfinite(a)):
            assert not d.ok
        if not d.ok:
            assert d.q_cmd is None and d.reasons and np.array_equal(d.T_target, T)
            continue
        q = d.q_cmd
        assert np.all(Q_MIN <= q) and np.all(q <= Q_MAX), d.reasons
        assert np.abs(q - q_prev).max() <= LIMITS.max_joint_velocity * PERIOD + 1e-9
        p = d.T_target[:3, 3]
        assert np.all(BOX_MIN <= p) and np.all(p <= BOX_MAX), (p, d.reasons)
        assert np.linalg.norm(fk(q)[:3, 3] - p) <= 3e-3  # command reaches the target
        assert d.gripper_open == (a[6] >= 0.5)
        q_prev, T = q.copy(), d.T_target
        if not lag:  # with lag the robot never moves: steps still count from the command
            q_meas = q.copy()
