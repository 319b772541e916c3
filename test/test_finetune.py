"""Fine-tuning from recorded bags: examples from episodes (dataset.py) and llada-vla-train
(finetune.py) end to end on real rosbag2 bags of joint-state demonstrations."""
import json

import numpy as np
import pytest

from llada_vla_ros import kinematics, topics
from llada_vla_ros.bag import BagWriter, Episode, Frame, load_episode
from llada_vla_ros.dataset import episode_examples, load_examples, segments
from llada_vla_ros.finetune import main
from llada_vla_ros.policy.llada import LladaVlaPolicy
from test_bag import header, joint_msg

SEC = 1_000_000_000


def make_demo_bag(path, instruction, joint_velocity, colour, frames=16, hz=5.0,
                  closing=False):
    """A teleoperated demonstration as the arm records it: joint states and camera images at
    ``hz``, the instruction once (latched). The joints move with a velocity that varies from
    frame to frame; the image shows a white block whose position tells the frame."""
    js_topic = topics.robot_topic(topics.ROBOT_NAME, topics.JOINT_STATES)
    q = kinematics.READY_POSE.copy()
    with BagWriter(path) as bag:
        bag.add_topic(topics.IMAGE, topics.IMAGE_TYPE)
        bag.add_topic(topics.INSTRUCTION, topics.INSTRUCTION_TYPE, latched=True)
        bag.add_topic(js_topic, topics.JOINT_STATES_TYPE)
        if instruction:
            bag.write_message(topics.INSTRUCTION, 0, {"data": instruction})
        for i in range(frames):
            t = SEC + int(i * SEC / hz)
            travel = kinematics.FINGER_OPEN_M - kinematics.FINGER_CLOSED_M
            finger = kinematics.FINGER_OPEN_M - (travel * i / (frames - 1) if closing else 0.0)
            bag.write_message(js_topic, t, joint_msg(t, q, finger=finger))
            image = np.zeros((48, 64, 3), np.uint8)
            image[:] = colour
            image[16:32, 4 + 3 * i:12 + 3 * i] = 255
            bag.write_message(topics.IMAGE, t, {
                "header": header(t), "height": 48, "width": 64, "encoding": "rgb8",
                "step": 192, "data": image.ravel()})
            q = q + np.asarray(joint_velocity) / hz * (1.0 + 0.5 * np.sin(0.7 * i))
    return path


# --- examples from episodes ------------------------------------------------------------------

def episode(instructions, stamps_s, segments=None):
    frames = [Frame(int(t * SEC), int(t * SEC), np.full((2, 2, 3), i, np.uint8), text,
                    np.full(7, float(i), np.float32), 0 if segments is None else segments[i])
              for i, (text, t) in enumerate(zip(instructions, stamps_s))]
    return Episode("mem", "joint_states", frames)


def test_windows_stay_inside_one_instruction_and_no_gap():
    # 0-6 "a" at 5 Hz, a 1 s gap before 7 (a new segment), 7-9 "a", 10-16 "b", 17-18 none
    texts = ["a"] * 10 + ["b"] * 7 + [""] * 2
    stamps = [0.2 * i for i in range(7)] + [2.2 + 0.2 * i for i in range(12)]
    ep = episode(texts, stamps, segments=[0] * 7 + [1] * 12)
    assert segments(ep) == [(0, 7), (7, 10), (10, 17)]
    examples = episode_examples(ep, chunk_size=5)
    starts = [int(e.actions[0, 0]) for e in examples]
    assert starts == [0, 1, 2] + [10, 11, 12]  # 7-9 is too short for a chunk of 5
    for e in examples:
        first = int(e.actions[0, 0])
        np.testing.assert_array_equal(e.actions[:, 0], np.arange(first, first + 5))
        assert e.image[0, 0, 0] == first and e.instruction == texts[first]
    assert len(episode_examples(ep, chunk_size=1)) == 17  # every frame with an instruction


def test_windows_with_nan_actions_are_dropped():
    ep = episode(["a"] * 8, [0.2 * i for i in range(8)])
    ep.frames[5].action[2] = np.nan
    starts = [int(e.actions[0, 0]) for e in episode_examples(ep, chunk_size=3)]
    assert starts == [0, 1, 2]  # every window holding frame 5 is gone; 6-7 is too short


def test_examples_from_a_recorded_demonstration(tmp_path):
    bag = make_demo_bag(tmp_path / "demo", "push the block", [0.3, 0.1, -0.1, 0.2, 0.1, -0.3],
                        (200, 40, 40), frames=12)
    examples, summary = load_examples([bag], chunk_size=5, progress=False, hz=5.0)
    ep = load_episode(bag, hz=5.0)
    assert len(ep) == 11  # the last frame has no next pose, so no action
    assert summary[str(bag)] == {
        "frames": 11, "frames_with_instruction": 11, "examples": 7,
        "action_source": "joint_states", "notes": [],
        "skipped": {"last frame (no next frame to measure the motion)": 1}}
    np.testing.assert_allclose(examples[3].actions, ep.actions[3:8])
    np.testing.assert_array_equal(examples[3].image, ep.frames[3].image)
    # a delta-EE action of a joint-space motion moves every dimension; the fingers close
    assert np.all(np.abs(ep.actions[:, :6]).max(axis=0) > 1e-3)


# --- llada-vla-train ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    return [make_demo_bag(root / "push", "push the block right",
                          [0.3, 0.1, -0.1, 0.2, 0.15, -0.3], (200, 40, 40), frames=10,
                          closing=True),
            make_demo_bag(root / "lift", "lift the gripper",
                          [-0.2, -0.15, 0.2, -0.1, -0.2, 0.25], (40, 40, 200), frames=10)]


def token_accuracy(checkpoint, examples):
    policy = LladaVlaPolicy.from_pretrained(checkpoint)
    return float(np.mean([policy.predict(e.image, e.instruction).tokens
                          == policy.tokenizer.encode(e.actions) for e in examples]))


def test_train_from_bags_then_the_policy_reproduces_them(demo_bags, tmp_path, capsys):
    out = tmp_path / "ckpt"
    # the white block's position tells the frame: no shift augmentation here
    assert main([*map(str, demo_bags), "--init", "tiny", "--out", str(out), "--steps", "300",
                 "--lr", "3e-3", "--random-shift", "0", "--quiet"]) == 0
    assert "checkpoint written to" in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "tokenizer.json",
                 "dataset_statistics.json", "train_log.json", "loss.png"):
        assert (out / name).is_file(), name
    log = json.loads((out / "train_log.json").read_text())
    assert log["examples"] == 10 and len(log["losses"]) == 300  # 2 x (10 - 1 - 4)
    assert log["final_loss"] < 0.2 * log["first_loss"]
    stats = json.loads((out / "dataset_statistics.json").read_text())
    assert list(stats) == ["widowx_bags"]
    examples, _ = load_examples(demo_bags, progress=False, hz=5.0)
    assert token_accuracy(out, examples) > 0.9  # chance: 1/32

    # --init CHECKPOINT starts from its weights (same data, same statistics: low loss at once)
    again = tmp_path / "again"
    assert main([*map(str, demo_bags), "--init", str(out), "--out", str(again), "--steps", "1",
                 "--lr", "1e-9", "--unnorm-key", "demos_v2", "--quiet"]) == 0
    log2 = json.loads((again / "train_log.json").read_text())
    assert log2["first_loss"] < 0.1 * log["first_loss"]
    assert list(json.loads((again / "dataset_statistics.json").read_text())) == ["demos_v2"]


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--init", "/nonexistent/ckpt"], "not a named config (tiny, small) and not a checkpoint"),
    (["--random-shift", "-1"], "--random-shift must be >= 0"),
    (["--val-split", "1.5"], "--val-split must be in [0, 1)"),
    (["--config", "hidden"], "expected KEY=VALUE"),
    (["--unnorm-key", " "], "--unnorm-key must not be empty"),
])
def test_bad_arguments_are_named(demo_bags, tmp_path, capsys, extra, message):
    args = [str(demo_bags[0]), "--init", "tiny", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_refuses_to_overwrite_a_checkpoint(demo_bags, tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "model.safetensors").write_bytes(b"precious")
    args = [str(demo_bags[0]), "--init", "tiny", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "o" / "model.safetensors").read_bytes() == b"precious"
    (tmp_path / "o" / "dataset_statistics.json").write_text('{"old_run": {}}')
    assert main(args + ["--overwrite", "--steps", "2"]) == 0
    stats = json.loads((tmp_path / "o" / "dataset_statistics.json").read_text())
    assert list(stats) == ["widowx_bags"]  # one key: the node's unnorm_key "" picks it
    assert (tmp_path / "o" / "model.safetensors").read_bytes() != b"precious"


def test_bag_without_instruction_is_named(tmp_path, capsys):
    bag = make_demo_bag(tmp_path / "silent", "", [0.2] * 6, (90, 90, 90), frames=8)
    args = [str(bag), "--init", "tiny", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(bag) in err and "0 with an instruction" in err and "--instruction" in err
    assert main(args + ["--instruction", "wave", "--steps", "2"]) == 0


def test_a_directory_of_bags_with_a_summary_per_bag(demo_bags, tmp_path, capsys):
    root = demo_bags[0].parent
    out = tmp_path / "o"
    assert main([str(root), "--init", "tiny", "--out", str(out), "--steps", "2",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    for bag in sorted(demo_bags):
        assert (f"{bag}: 5 examples from 9 frames (joint_states); frames without an action: "
                "last frame (no next frame to measure the motion): 1") in printed
    log = json.loads((out / "train_log.json").read_text())
    assert list(log["bags"]) == [str(b) for b in sorted(demo_bags)]
    assert main([str(tmp_path / "nothing_here"), "--init", "tiny", "--out",
                 str(tmp_path / "o2"), "--quiet"]) == 2
    assert "nothing_here: bag not found" in capsys.readouterr().err


def test_validation_held_out_bags_and_the_control_rate_reach_eval(tmp_path, capsys):
    """--val bags are evaluated during training (log and plot); the checkpoint records the
    control rate and action moments; llada-vla-eval then runs at that rate by default (a
    15 Hz recording evaluated at every frame would compare labels a third as large)."""
    from llada_vla_ros import evaluation
    from llada_vla_ros.action_tokenizer import checkpoint_control_hz, control_rate_mismatch

    fast = [make_demo_bag(tmp_path / f"fast{i}", "push the block right",
                          [0.3, 0.1, -0.1, 0.2, 0.15, -0.3], (200, 40, 40 * i), frames=30,
                          hz=15.0) for i in range(3)]
    out = tmp_path / "ckpt"
    assert main([*map(str, fast[:2]), "--val", str(fast[2]), "--init", "tiny", "--out",
                 str(out), "--steps", "20", "--eval-every", "10", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "[held-out bags] step 10: val loss" in printed and "step 20" in printed
    log = json.loads((out / "train_log.json").read_text())
    assert [e["step"] for e in log["evals"]] == [10, 20] and log["val_examples"] == 5
    assert log["control_hz"] == 5.0 and checkpoint_control_hz(out) == 5.0
    # what the node warns at start-up when run at another rate than the training labels'
    assert control_rate_mismatch(out, 5) == "" and control_rate_mismatch(None, 15) == ""
    assert "trained on actions at 5 Hz" in control_rate_mismatch(out, 15)
    assert "3x as fast" in control_rate_mismatch(out, 15)
    for bad in ("fast", None, -5, float("nan")):  # an edited statistics file: not recorded
        broken = tmp_path / f"broken_{bad}"
        broken.mkdir()
        (broken / "dataset_statistics.json").write_text(json.dumps({"k": {"control_hz": bad}}))
        assert checkpoint_control_hz(broken) is None and control_rate_mismatch(broken, 15) == ""
    entry = json.loads((out / "dataset_statistics.json").read_text())["widowx_bags"]
    assert {"mean", "std", "min", "max", "q01", "q99"} <= set(entry["action"])
    assert (entry["num_transitions"], entry["num_trajectories"]) == (10, 2)
    report = tmp_path / "eval"
    assert evaluation.main([str(fast[2]), "--policy", str(out), "--out", str(report),
                            "--quiet"]) == 0
    assert "the checkpoint's control rate, 5 Hz" in capsys.readouterr().out
    result = json.loads((report / "report.json").read_text())
    assert result["metrics"]["frames"] == 9  # 10 frames at 5 Hz, the last without an action
    assert evaluation.main([str(fast[2]), "--policy", str(out), "--out", str(report),
                            "--hz", "15", "--quiet"]) == 0
    assert json.loads((report / "report.json").read_text())["metrics"]["frames"] == 29


def test_ten_bags_hold_one_out_by_default(demo_bags, tmp_path, capsys):
    from llada_vla_ros.dataset import split_bags

    bags = [f"b{i}" for i in range(10)]
    train, held = split_bags(bags, 0.1)
    assert len(held) == 1 and sorted(train + held) == sorted(bags)
    assert split_bags(bags, 0.1) == (train, held)  # a fixed choice, whatever the run's seed
    with pytest.raises(ValueError, match="at least 2 bags"):
        split_bags(["one"], 0.5)
    out = tmp_path / "o"
    assert main([*map(str, demo_bags), "--init", "tiny", "--out", str(out), "--steps", "2",
                 "--val-split", "0.5", "--quiet"]) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert len(log["bags"]) == 1 and len(log["val_bags"]) == 1
