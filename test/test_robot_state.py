"""The robot-state input (an option of this package, ``--config state_dim=10``): the state
vector and its continuity, the model's state token, training it through the real loop, and
the state reaching it from recordings, the simulator and the node's joint states."""
import numpy as np
import pytest
import torch

from llada_vla_ros import kinematics as K
from llada_vla_ros.model import LladaVlaConfig, LladaVlaForActions, build_tiny_tokenizer
from llada_vla_ros.policy import PolicyInputError, wants_state

READY = K.READY_POSE


def test_state_layout_and_continuity_where_euler_angles_wrap():
    s = K.robot_state(READY, 0.25)
    T = K.fk(READY)
    assert s.shape == (K.STATE_DIM,) and s.dtype == np.float32
    np.testing.assert_allclose(s[:3], T[:3, 3], atol=1e-6)
    np.testing.assert_allclose(s[3:9], np.concatenate([T[:3, 0], T[:3, 1]]), atol=1e-6)
    assert s[9] == pytest.approx(0.25)
    assert K.robot_state(READY, 3.0)[9] == 1.0  # clipped to 0..1
    # the simulator's start pose points the gripper down: roll and yaw sit near +-pi, where
    # Euler angles jump by 2 pi under a tiny wrist turn; the state moves by as little
    q = np.array([-0.0184, 0.0399, 0.2224, -0.0046, 1.3652, 0.0015])
    jumps = []
    for joint in (4, 5):  # wrist_angle, wrist_rotate
        for dq in (-0.1, 0.1):
            q2 = q.copy()
            q2[joint] += dq
            e1 = np.array(K.matrix_to_euler_sxyz(K.fk(q)[:3, :3]))
            e2 = np.array(K.matrix_to_euler_sxyz(K.fk(q2)[:3, :3]))
            jumps.append(np.abs(e2 - e1).max())
            assert np.abs(K.robot_state(q2, 1.0) - K.robot_state(q, 1.0)).max() < 0.15
    assert max(jumps) > 3.0  # the wrap the state avoids
    for bad in ([np.nan, 0, 0, 0, 0, 0], [0, 0, 0]):
        with pytest.raises(ValueError):
            K.robot_state(bad, 1.0)
    with pytest.raises(ValueError):
        K.robot_state(READY, float("nan"))


def test_gripper_opening_from_a_joint_state_message():
    names = [*K.ARM_JOINTS, "gripper", "left_finger", "right_finger"]
    pos = [0.0] * 6 + [0.5, K.FINGER_OPEN_M, -K.FINGER_OPEN_M]
    assert K.joint_state_opening(names, pos) == pytest.approx(1.0)
    pos[7] = K.FINGER_CLOSED_M
    assert K.joint_state_opening(names, pos) == pytest.approx(0.0)
    assert K.joint_state_opening(list(K.ARM_JOINTS), [0.0] * 6) is None  # no finger
    pos[7] = float("nan")
    assert K.joint_state_opening(names, pos) is None
    assert K.joint_state_opening(names, pos[:6]) is None  # fewer positions than names


def state_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = LladaVlaForActions(LladaVlaConfig.tiny(state_dim=K.STATE_DIM, **overrides)).eval()
    model.tokenizer = build_tiny_tokenizer(model.config.num_bins)
    return model


def test_the_state_token_reaches_the_actions_and_survives_a_checkpoint(tmp_path):
    model = state_model()
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="robot state"):
        model.prepare(image, "go")
    with pytest.raises(ValueError, match="10 finite values"):
        model.prepare(image, "go", state=np.zeros(7))
    with pytest.raises(ValueError, match="NaN"):
        model.prepare(image, "go", state=np.full(K.STATE_DIM, np.nan))
    near, far = K.robot_state(READY, 1.0), K.robot_state(READY, 0.0)
    masked = torch.full((1, model.config.num_action_tokens), -1)
    logits = [model.action_logits(model.prepare(image, "go", state=s), masked)[0]
              for s in (near, far)]
    assert not torch.allclose(logits[0], logits[1])  # the state changes the prediction
    plain = LladaVlaForActions(LladaVlaConfig.tiny()).eval()
    plain.tokenizer = model.tokenizer
    n_plain = plain.prepare(image, "go").prefix_len
    assert model.prepare(image, "go", state=near).prefix_len == n_plain + 1  # one token
    # standardization from data, saved with the config
    states = np.stack([K.robot_state(READY + d, g) for d, g in ((0.0, 1.0), (0.1, 0.0),
                                                                (-0.1, 0.5))])
    model.set_state_statistics(states)
    assert min(model.config.state_std) >= model.STATE_STD_FLOOR
    np.testing.assert_allclose(model.config.state_mean, states.mean(0), atol=1e-6)
    model.save_pretrained(tmp_path)
    again = LladaVlaForActions.from_pretrained(tmp_path).eval()
    assert again.config.state_dim == K.STATE_DIM
    assert again.config.state_mean == model.config.state_mean
    torch.testing.assert_close(
        again.action_logits(again.prepare(image, "go", state=far), masked)[0],
        model.action_logits(model.prepare(image, "go", state=far), masked)[0])
    with pytest.raises(ValueError, match="state_std"):
        LladaVlaConfig.tiny(state_dim=2, state_std=[1.0, 0.0])


def test_state_features_keep_only_the_named_values_of_the_state(tmp_path):
    """``--config state_dim=10 state_features=z,gripper``: the token sees the height and the
    gripper opening, not where the hand is in x/y (which lets a model replay the
    demonstrations' average path without looking, docs/results.md section 5)."""
    from llada_vla_ros.decoding import parse_options
    from llada_vla_ros.finetune import init_model

    torch.manual_seed(0)
    model = init_model("tiny", config=parse_options(["state_dim=10",
                                                     "state_features=z,gripper"]))
    assert model.config.state_features == ["z", "gripper"]
    assert model.config.state_inputs == [2, 9]
    assert model.state_projector[0].in_features == 2
    model.eval()
    model.set_state_statistics(np.stack([K.robot_state(READY + d, g) for d, g in (
        (0.0, 1.0), (0.1, 0.0), (-0.1, 0.5))]))
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    masked = torch.full((1, model.config.num_action_tokens), -1)

    def logits(m, state):
        return m.action_logits(m.prepare(image, "go", state=state), masked)[0]

    base = K.robot_state(READY, 1.0)
    moved_xy, lower, closed = base.copy(), base.copy(), base.copy()
    moved_xy[[0, 1, 3, 4]] += (0.05, -0.04, 0.1, 0.1)  # x, y and rotation: not seen
    lower[2] -= 0.05
    closed[9] = 0.0
    torch.testing.assert_close(logits(model, moved_xy), logits(model, base))
    assert not torch.allclose(logits(model, lower), logits(model, base))
    assert not torch.allclose(logits(model, closed), logits(model, base))
    with pytest.raises(ValueError, match="10 finite values"):  # the state still comes whole
        model.prepare(image, "go", state=base[[2, 9]])
    model.save_pretrained(tmp_path)
    again = LladaVlaForActions.from_pretrained(tmp_path).eval()
    assert again.config.state_features == ["z", "gripper"]
    torch.testing.assert_close(logits(again, lower), logits(model, lower))
    for bad, match in ((dict(state_dim=10, state_features=["z", "height"]), "distinct names"),
                       (dict(state_dim=10, state_features="z,z"), "distinct names"),
                       (dict(state_dim=10, state_features=[]), "distinct names"),
                       (dict(state_features=["z"]), "state_dim=10")):
        with pytest.raises(ValueError, match=match):
            LladaVlaConfig.tiny(**bad)


def test_a_state_model_learns_what_only_the_state_tells():
    """Same image, same instruction: the gripper label is 'open' above a height and 'closed'
    below. Without the state no model can tell the examples apart."""
    from llada_vla_ros.finetuning.loop import FitConfig, fit
    from llada_vla_ros.finetuning.objective import Example
    from llada_vla_ros.training import TINY_STATS, action_tokenizer_for

    model = state_model(seed=1)
    tok = action_tokenizer_for(model.config, TINY_STATS, "t")
    image = np.full((48, 64, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    examples = []
    for i in range(16):
        q = READY + rng.normal(0, 0.15, 6)
        state = K.robot_state(q, 1.0)
        actions = np.zeros((5, 7), np.float32)
        actions[:, 6] = 1.0 if state[2] > K.robot_state(READY, 1.0)[2] else 0.0
        examples.append(Example(image, "go", actions, state))
    assert len({e.actions[0, 6] for e in examples}) == 2
    model.set_state_statistics(np.stack([e.state for e in examples]))
    fit(model, tok, examples, FitConfig(steps=300, lr=3e-3, global_batch=16, reweight=False,
                                        warmup_steps=10), progress=False)
    model.eval()
    masked = torch.full((1, model.config.num_action_tokens), -1)
    grip = [tok.decode(model.action_logits(model.prepare(e.image, "go", state=e.state),
                                           masked)[0].argmax(-1).numpy().reshape(5, 7))[0, 6]
            for e in examples]
    assert np.allclose(np.round(grip), [e.actions[0, 6] for e in examples])


def test_policies_say_whether_they_take_the_state(tmp_path):
    from llada_vla_ros.policy.llada import LladaVlaPolicy
    from llada_vla_ros.policy import ScriptedPolicy
    from llada_vla_ros.training import TINY_STATS, action_tokenizer_for

    model = state_model()
    policy = LladaVlaPolicy(model, action_tokenizer_for(model.config, TINY_STATS, "t"))
    assert wants_state(policy) and not wants_state(ScriptedPolicy.default())
    image = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(PolicyInputError, match="takes the robot state"):
        policy.predict(image, "go")
    with pytest.raises(PolicyInputError, match="finite"):
        policy.predict(image, "go", state=np.full(K.STATE_DIM, np.inf))
    assert policy.predict(image, "go", state=K.robot_state(READY, 1.0)).actions.shape == (5, 7)


def test_the_node_builds_the_state_from_its_joint_states():
    from llada_vla_ros.control.loop import Job
    from llada_vla_ros.policy import ScriptedPolicy
    from llada_vla_ros.ros.policy_runtime import robot_state_of

    class Wants:
        state_dim = K.STATE_DIM

    image = np.zeros((4, 4, 3), np.uint8)
    assert robot_state_of(ScriptedPolicy.default(), Job(image, None, "go", 0)) == {}
    with pytest.raises(PolicyInputError, match="no joint state yet"):
        robot_state_of(Wants(), Job(image, None, "go", 0))
    with pytest.raises(PolicyInputError, match="left_finger"):
        robot_state_of(Wants(), Job(image, None, "go", 0, READY.copy(), None))
    got = robot_state_of(Wants(), Job(image, None, "go", 0, READY.copy(), 0.5))["state"]
    np.testing.assert_array_equal(got, K.robot_state(READY, 0.5))


def test_the_simulator_gives_a_state_policy_the_state_of_its_joints():
    from llada_vla_ros.policy import ActionChunk
    from llada_vla_ros.sim.env import WidowXTabletopEnv
    from llada_vla_ros.sim.evaluate import run_episode

    class Recorder:
        state_dim = K.STATE_DIM

        def __init__(self, env):
            self.env, self.seen = env, []

        def predict(self, image, instruction, state=None):
            world = self.env.world
            self.seen.append((state, K.robot_state(world.arm_joints(), world.gripper_opening())))
            return ActionChunk(np.tile([0.01, 0, 0, 0, 0, 0, 1], (5, 1)).astype(np.float32),
                               np.ones(5, np.float32), 0.0, "recorder")

    env = WidowXTabletopEnv(task="carrot", layout="grid", image_size=(64, 48))
    policy = Recorder(env)
    run_episode(env, policy, 0)
    assert len(policy.seen) == 12  # 60 steps, chunks of 5
    for given, actual in policy.seen:
        np.testing.assert_allclose(given, actual, atol=1e-6)
    assert policy.seen[-1][0][0] > policy.seen[0][0][0] + 0.05  # it moved along x
    env.close()


def test_a_recording_gives_each_frame_the_state_of_its_joint_states(tmp_path):
    """Expert bags (joint-state labels): every frame carries the state, the first one the
    start pose with the fingers open, and the state follows the recorded motion."""
    from llada_vla_ros.data.episode import load_episode
    from llada_vla_ros.sim import collect
    from llada_vla_ros.sim.world import INITIAL_JOINTS

    assert collect.main(["--task", "carrot", "--layout", "grid", "--episodes", "1",
                         "--out", str(tmp_path), "--image-size", "64x48", "--quiet"]) == 0
    [bag] = [p for p in tmp_path.iterdir() if p.is_dir()]
    episode = load_episode(bag)
    assert episode.action_source == "joint_states" and len(episode) > 10
    states = np.stack([f.state for f in episode])
    np.testing.assert_allclose(states[0], K.robot_state(INITIAL_JOINTS, 1.0), atol=2e-3)
    # the position part moves as the recorded actions say (labels and states, one FK)
    moved = states[1:, :3] - states[:-1, :3]
    np.testing.assert_allclose(moved, episode.actions[:-1, :3], atol=1e-5)
    assert states[:, 9].min() < 0.9  # the fingers closed on the carrot at some point
