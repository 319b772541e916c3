"""The simulated world (issue 11): the arm is kinematics.py, episodes are deterministic, the
success rules judge hand-placed states, the expert solves every task, and the physics stays
sane under random actions. No ROS here."""
import numpy as np
import pytest

from llada_vla_ros import kinematics as K
from llada_vla_ros.sim.env import WidowXTabletopEnv
from llada_vla_ros.sim.evaluate import run_episode
from llada_vla_ros.sim.expert import expert_for
from llada_vla_ros.sim.tasks import GRID_EPISODES, TASKS, get_task, grid_placements
from llada_vla_ros.sim.world import World

SMALL = (64, 48)


@pytest.fixture(scope="module")
def worlds():
    return {name: World(name, "grid") for name in TASKS}


def test_arm_is_kinematics_fk_at_random_configurations(worlds):
    import mujoco

    w = worlds["stack"]
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.uniform(K.JOINT_LOWER, K.JOINT_UPPER)
        w.data.qpos[w._qpos] = q
        mujoco.mj_kinematics(w.model, w.data)
        T = K.fk(q)
        assert np.abs(w.ee_pose()[:3, 3] - T[:3, 3]).max() <= 1e-6
        assert np.abs(w.ee_pose()[:3, :3] - T[:3, :3]).max() <= 1e-6
    m = w.model
    for i, name in enumerate(K.ARM_JOINTS):  # limits and finger travel come from kinematics
        np.testing.assert_allclose(m.jnt_range[m.joint(name).id], [K.JOINT_LOWER[i],
                                                                  K.JOINT_UPPER[i]])
    np.testing.assert_allclose(m.jnt_range[m.joint("left_finger").id],
                               [K.FINGER_CLOSED_M, K.FINGER_OPEN_M])


def rollout(env, seed, steps=12):
    rng = np.random.default_rng(123)
    obs, _ = env.reset(seed=seed)
    frames, states = [obs["image"]], [obs["joints"]]
    for _ in range(steps):
        obs, *_ = env.step(env.action_space.sample() * 0 + rng.uniform(
            env.action_space.low, env.action_space.high))
        frames.append(obs["image"])
        states.append(np.concatenate([obs["joints"], env.world.data.qpos]))
    return frames, states


def test_same_seed_same_episode():
    env = WidowXTabletopEnv("carrot", "random", image_size=SMALL)
    f1, s1 = rollout(env, 7)
    f2, s2 = rollout(env, 7)
    assert all(np.array_equal(a, b) for a, b in zip(f1, f2))
    assert all(np.array_equal(a, b) for a, b in zip(s1, s2))
    f3, _ = rollout(env, 8, steps=0)
    assert not np.array_equal(f1[0], f3[0])  # another seed, another layout
    assert f1[0].shape == (48, 64, 3) and f1[0].dtype == np.uint8
    assert len({f.tobytes() for f in f1}) > 5  # the arm moves in the picture
    env.close()


def test_env_follows_the_gymnasium_api():
    from gymnasium.utils.env_checker import check_env

    env = WidowXTabletopEnv("stack", "grid", image_size=SMALL)
    check_env(env, skip_render_check=True)
    env.close()


def test_grid_layout_has_24_distinct_episodes():
    for task in TASKS.values():
        placements = grid_placements(task)
        assert len(placements) == len(set(placements)) == GRID_EPISODES
    assert get_task("PutEggplantInBasketScene").max_steps == 120
    assert get_task("carrot").instruction == "put carrot on plate"
    with pytest.raises(ValueError, match="unknown task"):
        get_task("banana")


def settle(world, seconds=0.6):
    world.advance(seconds)
    return world.scene_state()


@pytest.mark.parametrize("name", list(TASKS))
def test_success_rule_on_hand_placed_states(worlds, name):
    w = worlds[name]
    task = w.task
    w.reset(0)
    tgt = w.object_pose("target")[:3, 3]
    # on the target (its middle over the target's centre), released
    middle = task.source.center_x()
    on = [tgt[0] - middle, tgt[1], task.target.rest_height() + task.source.rest_z + 0.003]
    w.place_object("source", on)
    state = settle(w)
    assert "target" in state.touching and state.released
    assert task.success(state), state
    # beside the target, on the table
    w.place_object("source", [tgt[0], tgt[1] + task.target.radius + task.source.radius + 0.02,
                              task.source.rest_z + 0.002])
    state = settle(w)
    assert not task.success(state) and "table" in state.touching


@pytest.mark.parametrize("name", list(TASKS))
def test_still_grasped_is_no_success_released_is(name):
    """The expert brings the source over the target; pressed onto it with the fingers still
    closed it is no success; once they open, it is."""
    env = WidowXTabletopEnv(name, "grid", image_size=None)
    expert = expert_for(env, chunk_size=1)
    env.reset(seed=3)
    blank = np.zeros((4, 4, 3), np.uint8)
    while expert.expert.phase != "release":
        _, _, terminated, truncated, info = env.step(
            expert.predict(blank, env.instruction).actions[0])
        assert not (terminated or truncated)
    down = np.array([0, 0, -0.005, 0, 0, 0, 0.0])  # gripper stays closed
    for _ in range(6):
        _, _, terminated, _, info = env.step(down)
        state = env.world.scene_state()
        if "target" in state.touching:
            break
    assert state.grasped and "target" in state.touching
    assert not info["success"] and not terminated
    for _ in range(4):
        _, _, terminated, _, info = env.step([0, 0, 0, 0, 0, 0, 1.0])
        if terminated:
            break
    assert info["success"] and info["ever_grasped"]
    env.close()


@pytest.mark.parametrize("name", list(TASKS))
def test_expert_solves_a_few_seeds(name):
    env = WidowXTabletopEnv(name, "random", image_size=None)
    expert = expert_for(env)
    for seed in (11, 12, 13):
        e = run_episode(env, expert, seed)
        assert e["success"] and e["grasped"], (name, seed, e["steps"])
        assert e["steps"] <= env.max_steps
    env.close()


def test_physics_sane_under_200_random_action_episodes():
    """No NaN and no object ejected (off the table, or flying) under random actions."""
    rng = np.random.default_rng(0)
    names = list(TASKS)
    envs = {n: WidowXTabletopEnv(n, "random", image_size=None) for n in names}
    for episode in range(200):
        env = envs[names[episode % len(names)]]
        env.reset(seed=1000 + episode)
        for _ in range(8):
            _, _, _, _, info = env.step(rng.uniform(env.action_space.low, env.action_space.high))
            assert info["finite"], (episode, env.task.name)
            for role in ("source", "target"):
                p = env.world.object_pose(role)[:3, 3]
                assert -0.25 < p[0] < 0.8 and abs(p[1]) < 0.6 and -0.01 < p[2] < 0.5, (
                    episode, role, p)
            v = env.world.data.qvel
            assert np.abs(v).max() < 50.0, (episode, np.abs(v).max())


def test_driver_semantics(worlds):
    w = worlds["carrot"]
    w.reset(0)
    q0 = w.arm_joints()
    # outside the joint limits: refused, the arm stays
    assert "joint limits" in w.command_arm(q0 + [0, 0, 0, 0, 3.0, 0])
    w.advance(0.3)
    assert np.abs(w.arm_joints() - q0).max() < 0.01
    # a move under the time profile arrives after the moving time, not before
    w.set_time_profile(1.0, 0.3)
    goal = q0 + [0.3, 0.1, -0.1, 0.0, 0.1, 0.2]
    assert w.command_arm(goal) == ""
    w.advance(0.5)
    assert np.abs(w.arm_joints() - goal).max() > 0.05
    w.advance(0.8)
    assert np.abs(w.arm_joints() - goal).max() < 0.01
    # gripper pwm: -effort closes, +effort opens
    w.command_gripper(-250)
    w.advance(1.0)
    assert w.finger() < K.FINGER_CLOSED_M + 0.002
    w.command_gripper(250)
    w.advance(1.0)
    assert w.finger() > K.FINGER_OPEN_M - 0.002
    # torque off: the arm falls under gravity; torque on: it holds where it is
    w.set_torque(False)
    w.advance(1.0)
    fallen = w.arm_joints()
    assert np.abs(fallen - goal).max() > 0.2
    w.set_torque(True)
    w.advance(0.5)
    assert np.abs(w.arm_joints() - fallen).max() < 0.02


class _Recording:
    """The environment, recording every action it is given (everything else passes through)."""

    def __init__(self, env):
        self._env, self.actions = env, []

    def step(self, action):
        self.actions.append(np.asarray(action, dtype=np.float64))
        return self._env.step(action)

    def __getattr__(self, name):
        return getattr(self._env, name)


class _Counting:
    """The expert, keeping every chunk it predicts."""

    def __init__(self, policy):
        self.policy, self.chunks = policy, []

    def predict(self, image, instruction):
        chunk = self.policy.predict(image, instruction)
        self.chunks.append(np.asarray(chunk.actions, dtype=np.float64))
        return chunk


def test_episodes_execute_chunks_through_the_nodes_chunk_executor():
    """Receding horizon: a chunk every 5 steps, its actions as predicted; temporal ensembling
    (the node's execution_mode): a chunk every step, each step the mean of the overlapping
    predictions for it."""
    env = _Recording(WidowXTabletopEnv("carrot", "random", image_size=None))
    policy = _Counting(expert_for(env._env))
    e = run_episode(env, policy, 11)
    assert e["success"] and len(policy.chunks) == -(-e["steps"] // 5)
    np.testing.assert_allclose(env.actions[:5], policy.chunks[0][:5])
    np.testing.assert_allclose(env.actions[5], policy.chunks[1][0])

    env.actions, policy.chunks = [], []
    e = run_episode(env, policy, 11, execution_mode="temporal_ensemble", ensemble_decay=0.0)
    assert len(policy.chunks) == len(env.actions) == e["steps"]
    c = policy.chunks
    np.testing.assert_allclose(env.actions[0], c[0][0])
    np.testing.assert_allclose(env.actions[1], (c[0][1] + c[1][0]) / 2)
    np.testing.assert_allclose(env.actions[6], np.mean([c[k][6 - k] for k in range(2, 7)], 0))
    env.close()
