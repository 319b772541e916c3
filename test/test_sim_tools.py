"""llada-vla-sim-collect -> llada-vla-train -> llada-vla-sim-eval, end to end in this process
(issue 11): expert demonstrations written as the bags a real recording makes, read unchanged
by the trainer; the in-process closed-loop evaluation and its reports."""
import argparse
import json

import numpy as np
import pytest
import yaml

from llada_vla_ros import topics
from llada_vla_ros.sim import collect
from llada_vla_ros.sim.evaluate import summarize, wilson


def bag_info(path):
    return yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "demos"
    assert collect.main(["--task", "stack,carrot", "--episodes", "2", "--out", str(out),
                         "--image-size", "64x48", "--noise", "0.002", "--quiet"]) == 0
    return out


def test_collected_bags_are_real_recordings(demos):
    bags = sorted(p for p in demos.iterdir() if p.is_dir())
    assert [b.name for b in bags] == ["carrot_seed0000", "carrot_seed0001", "stack_seed0000",
                                      "stack_seed0001"]
    log = json.loads((demos / "collect_log.json").read_text())
    assert all(e["success"] for e in log["episodes"])
    # recorded on for 5 steps after the first success (the expert lets go and moves away)
    assert [e["recorded_steps"] - e["steps"] for e in log["episodes"]] == [5] * 4
    # exactly the topics and types of `widowx.launch.py policy:=false record:=true`
    expected = {t: ty for t, ty in topics.recorded_topics().items()
                if t not in topics.OUTPUT_TOPICS}
    info = bag_info(bags[0])
    assert info["storage_identifier"] == "sqlite3"
    meta = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    assert {t: m["topic_metadata"]["type"] for t, m in meta.items()} == expected
    for topic, m in meta.items():
        qos = yaml.safe_load(m["topic_metadata"]["offered_qos_profiles"])[0]
        latched = topic == topics.INSTRUCTION
        assert qos["reliability"] == 1 and qos["durability"] == (1 if latched else 2), topic
        assert qos["depth"] == (1 if latched else 10)
    counts = {t: m["message_count"] for t, m in meta.items()}
    assert counts[topics.INSTRUCTION] == 1
    steps = counts["/wx250s/commands/joint_group"]
    assert counts["/wx250s/commands/joint_single"] == steps > 10
    assert counts[topics.IMAGE] == steps + 1  # 5 Hz frames, one per control step
    assert 18 * steps <= counts["/wx250s/joint_states"] <= 21 * steps  # 100 Hz

    from llada_vla_ros.bag import load_episode, read_bag
    episode = load_episode(bags[2], hz=5.0, action_source="joint_states")
    assert set(episode.instructions) == {"stack the green block on the yellow block"}
    grip = episode.actions[:, 6]
    # the recorded gripper commands: open, closed while carrying, open again at the end
    runs = [g for i, g in enumerate(grip) if i == 0 or g != grip[i - 1]]
    assert runs == [1.0, 0.0, 1.0], grip
    assert (grip[-5:] == 1.0).all()  # the release is more than the last labelled frame
    # each frame's label is the command given at that frame (collect stamps a step's
    # commands with its frame's time), not the next step's
    efforts = [m.cmd for _, _, _, m in read_bag(bags[2], ["/wx250s/commands/joint_single"])]
    asked = (np.asarray(efforts) > 0).astype(np.float32)
    assert len(grip) == len(episode.frames) and 10 < len(grip) <= len(efforts)
    np.testing.assert_array_equal(grip, asked[:len(grip)])
    # read with --gripper-label ahead (data version 1's timing): each close and open one
    # frame earlier, the motion labels unchanged
    ahead = load_episode(bags[2], hz=5.0, action_source="joint_states", gripper_label="ahead")
    np.testing.assert_array_equal(ahead.actions[:-1, 6], grip[1:])
    assert (ahead.actions[:, 6] != grip).sum() == 2  # the close and the reopening
    np.testing.assert_array_equal(ahead.actions[:, :6], episode.actions[:, :6])
    with pytest.raises(ValueError, match="gripper_label must be one of step, ahead"):
        load_episode(bags[2], gripper_label="late")


def test_collect_refuses_a_non_empty_out(demos, capsys):
    assert collect.main(["--task", "stack", "--episodes", "1", "--out", str(demos)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert collect.main(["--task", "banana", "--out", str(demos / "x")]) == 2
    assert collect.main(["--task", "stack", "--after-success", "-1", "--out",
                         str(demos / "x")]) == 2
    assert "--after-success must be >= 0" in capsys.readouterr().err


def test_train_on_the_demos_then_evaluate_in_the_simulator(demos, tmp_path):
    from llada_vla_ros import finetune
    from llada_vla_ros.ros import sim_eval

    bags = sorted(str(p) for p in demos.iterdir() if p.is_dir())
    ckpt = tmp_path / "ckpt"
    assert finetune.main(bags + ["--init", "tiny", "--out", str(ckpt), "--steps", "3",
                                 "--batch-size", "4", "--quiet"]) == 0
    log = json.loads((ckpt / "train_log.json").read_text())
    assert log["examples"] > 40 and len(log["bags"]) == 4

    out = tmp_path / "eval"
    assert sim_eval.main(["--policy", str(ckpt), "--task", "stack", "--episodes", "1",
                          "--image-size", "64x48", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    [episode] = report["episodes"]
    assert episode["task"] == "stack" and episode["steps"] >= 1
    assert report["summary"]["stack"]["latency_ms"]["median"] > 0
    assert report["mode"] == "in-process"
    for name in ("report.md", "report.html", "contact_sheet.png", "videos/stack_seed0.mp4"):
        assert (out / name).stat().st_size > 0, name
    assert len(episode["latency_ms"]) == -(-episode["steps"] // 5)  # a chunk per 5 steps

    # the node's temporal ensembling: a chunk every step
    assert sim_eval.main(["--policy", str(ckpt), "--task", "stack", "--episodes", "1",
                          "--image-size", "64x48", "--out", str(out), "--quiet", "--videos", "0",
                          "--execution-mode", "temporal_ensemble", "--ensemble-decay", "0.5"]) == 0
    report = json.loads((out / "report.json").read_text())
    [episode] = report["episodes"]
    assert report["execution_mode"] == "temporal_ensemble" and report["ensemble_decay"] == 0.5
    assert len(episode["latency_ms"]) == episode["steps"]


def test_takeover_records_the_expert_recovering_from_the_policys_states(demos, tmp_path,
                                                                        capsys):
    """Recovery demonstrations (DAgger-style): a learned policy drives for the handover
    steps, then the expert finishes; the bag holds only the expert's part and trains."""
    from llada_vla_ros import finetune

    bags = sorted(str(p) for p in demos.iterdir() if p.is_dir())
    ckpt = tmp_path / "ckpt"
    assert finetune.main(bags + ["--init", "tiny", "--out", str(ckpt), "--steps", "1",
                                 "--batch-size", "2", "--quiet"]) == 0
    out = tmp_path / "recoveries"
    assert collect.main(["--task", "carrot", "--episodes", "2", "--seed", "7", "--out",
                         str(out), "--image-size", "64x48", "--takeover", str(ckpt),
                         "--handover-steps", "4:6", "--quiet"]) == 0
    log = json.loads((out / "collect_log.json").read_text())
    assert [4 <= e["handover_steps"] <= 6 for e in log["episodes"]] == [True, True]
    kept = [e for e in log["episodes"] if e["bag"]]
    assert kept and all(e["recorded"] and e["success"] for e in kept)
    for e in kept:  # the policy's steps are not in the bag: only the expert's commands
        counts = {t["topic_metadata"]["name"]: t["message_count"]
                  for t in bag_info(out / f"carrot_seed{e['seed']:04d}")
                  ["topics_with_message_count"]}
        assert counts["/wx250s/commands/joint_group"] == (e["recorded_steps"]
                                                          - e["handover_steps"])
        assert counts[topics.IMAGE] == counts["/wx250s/commands/joint_group"] + 1
    assert finetune.main([e["bag"] for e in kept] + [
        "--init", "tiny", "--out", str(tmp_path / "again"), "--steps", "1", "--quiet"]) == 0

    short = tmp_path / "short"  # a recording shorter than --min-steps trains nothing
    assert collect.main(["--task", "carrot", "--episodes", "1", "--seed", "7", "--out",
                         str(short), "--image-size", "64x48", "--takeover", str(ckpt),
                         "--handover-steps", "4:4", "--min-steps", "100", "--quiet"]) == 0
    assert [p for p in short.iterdir() if p.is_dir()] == []
    assert collect.main(["--task", "carrot", "--out", str(tmp_path / "x"),
                         "--takeover", "expert"]) == 2
    assert "learned policy" in capsys.readouterr().err
    assert collect.main(["--task", "carrot", "--out", str(tmp_path / "y"),
                         "--takeover", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        collect.main(["--task", "carrot", "--out", str(tmp_path / "z"), "--takeover",
                      str(ckpt), "--handover-steps", "9:3"])


def test_stalled_sums_the_motion_over_the_window():
    still = [np.zeros(3)] * 6
    assert not collect.stalled(still[:5], 5, 0.005)  # too short to judge
    assert collect.stalled(still, 5, 0.005)
    back_and_forth = [np.array([0.002 * (k % 2), 0, 0]) for k in range(6)]  # 10 mm of path
    assert not collect.stalled(back_and_forth, 5, 0.005)
    assert collect.stalled([np.array([0.0009 * k, 0, 0]) for k in range(6)], 5, 0.005)


@pytest.mark.parametrize("task", ["carrot", "stack"])
def test_the_expert_is_never_judged_stalled(task):
    """--intervene-mm 5 must judge the policy only: the expert (noisy, as collected) moves
    more than 5 mm over every 5 steps of its episodes, its pauses to close included."""
    from llada_vla_ros.sim.env import WidowXTabletopEnv
    from llada_vla_ros.sim.evaluate import BLANK
    from llada_vla_ros.sim.expert import expert_for

    env = WidowXTabletopEnv(task, "random", image_size=None)
    expert = expert_for(env, noise=0.002, seed=0)
    for seed in range(5000, 5008):
        obs, info = env.reset(seed=seed)
        positions, done = [env.world.ee_pose()[:3, 3].copy()], False
        while not done:
            for action in expert.predict(BLANK, env.instruction).actions:
                obs, _, terminated, truncated, info = env.step(action)
                positions.append(env.world.ee_pose()[:3, 3].copy())
                assert not collect.stalled(positions, collect.STALL_WINDOW, 0.005), (
                    seed, info["steps"])
                done = terminated or truncated
                if done:
                    break
        assert info["success"], seed
    env.close()


def test_expert_intervenes_when_the_policy_stalls(tmp_path):
    """--intervene-mm: a policy that holds still is taken over after MIN steps
    ("stalled"); the expert as the policy keeps the drawn handover ("steps")."""
    from llada_vla_ros.policy import ActionChunk
    from llada_vla_ros.sim.env import WidowXTabletopEnv
    from llada_vla_ros.sim.expert import expert_for

    class Still:
        def predict(self, image, instruction):
            return ActionChunk(actions=np.tile([0, 0, 0, 0, 0, 0, 1.0], (5, 1)),
                               confidence=np.ones(5), inference_ms=0.0, model_id="still")

    env = WidowXTabletopEnv("carrot", "random", image_size=(64, 48))
    expert = expert_for(env)
    o = collect.collect_episode(env, expert, 3, tmp_path / "still", 0, 5.0, takeover=Still(),
                                handover=30, intervene_m=0.005, min_handover=8)
    assert (o["handover_steps"], o["handover_reason"]) == (8, "stalled")
    assert o["recorded"] and o["success"]
    o = collect.collect_episode(env, expert, 3, tmp_path / "still2", 0, 5.0, takeover=Still(),
                                handover=12)  # no intervention asked: the drawn handover
    assert (o["handover_steps"], o["handover_reason"]) == (12, "steps")
    o = collect.collect_episode(env, expert, 3, tmp_path / "moving", 0, 5.0,
                                takeover=expert_for(env), handover=20, intervene_m=0.005)
    assert (o["handover_steps"], o["handover_reason"]) == (20, "steps")
    env.close()
    assert collect.main(["--task", "carrot", "--out", str(tmp_path / "x"),
                         "--intervene-mm", "-1"]) == 2


def test_expert_resumes_an_episode_in_progress():
    """Taking over with the object held, the expert carries on (fingers stay closed);
    without it, it starts with the approach (fingers open)."""
    from dataclasses import replace

    from llada_vla_ros.sim.env import WidowXTabletopEnv
    from llada_vla_ros.sim.expert import ScriptedExpert, world_state

    env = WidowXTabletopEnv("carrot", "grid", image_size=None)
    env.reset(seed=0)
    state = world_state(env.world, env.episode)
    expert = ScriptedExpert()
    expert.resume(replace(state, grasped=True))
    assert expert.phase == "lift" and expert.plan(replace(state, grasped=True))[0, 6] == 0.0
    expert.resume(state)
    assert expert.phase == "approach" and expert.plan(state)[0, 6] == 1.0
    env.close()


def test_expert_actions_that_never_ran_do_not_advance_it():
    """A chunk dropped or cut short (the node's ~/start clears its queue, a new instruction, a
    hold) must not advance the expert: it resumes from its phase after the actions that ran,
    counted by the world's accepted arm commands (through ROS, re-plans that never ran
    skipped its close dwell and it lifted with open fingers). When all ran, nothing changes."""
    from dataclasses import replace

    from llada_vla_ros.sim.env import WidowXTabletopEnv
    from llada_vla_ros.sim.expert import ScriptedExpert, world_state

    env = WidowXTabletopEnv("carrot", "grid", image_size=None)
    env.reset(seed=0)
    state = world_state(env.world, env.episode)
    assert state.commands == 0
    env.step([0, 0, 0, 0, 0, 0, 1.0])
    assert world_state(env.world, env.episode).commands == 1  # counted by the world
    env.close()
    expert = ScriptedExpert()
    expert.plan(state, 1)  # takes the episode
    expert.phase, expert.trace = "close", None  # fingers closing: 3 steps arm still, lift
    first = expert.plan(state, 5)
    assert [m[0] for m in expert.trace[1][:4]] == ["close"] * 3 + ["lift"]
    again = expert.plan(state, 5)  # none of them ran
    assert np.array_equal(again, first)
    expert.plan(replace(state, commands=2), 5)  # two ran: one close step left
    assert expert.trace[1][0][:2] == ("close", 2)
    after = expert.trace[1][-1][0]
    assert after in ("lift", "carry")
    expert.plan(replace(state, commands=7, grasped=True), 5)  # all five ran: carry on
    assert expert.trace[1][0][0] == after


def test_rotation_noise_perturbs_only_the_axes_asked_for():
    """--rotation-noise 0,0,Y: the expert's roll and pitch stay as planned (the gripper keeps
    pointing down), yaw is perturbed; the default is twice --noise on each axis, drawn from
    the same stream as before the option existed (cached demonstrations stay valid)."""
    from llada_vla_ros.sim.env import WidowXTabletopEnv
    from llada_vla_ros.sim.expert import ScriptedExpert, world_state

    env = WidowXTabletopEnv("carrot", "grid", image_size=None)
    env.reset(seed=3)
    state = world_state(env.world, env.episode)
    env.close()
    # the first action of a chunk: the same planned step, then the noise
    clean = ScriptedExpert().plan(state, 1)[0]
    yaw_only = ScriptedExpert(0.002, seed=7, rotation_noise=(0, 0, 0.01)).plan(state, 1)[0]
    assert np.array_equal(yaw_only[3:5], clean[3:5]) and yaw_only[6] == clean[6]
    assert abs(yaw_only[5] - clean[5]) > 1e-4
    assert np.abs(yaw_only[:3] - clean[:3]).min() > 1e-6  # position noise kept
    default = ScriptedExpert(0.002, seed=7).plan(state, 5)
    explicit = ScriptedExpert(0.002, seed=7, rotation_noise=(0.004,) * 3).plan(state, 5)
    assert np.array_equal(default, explicit)
    assert np.abs(default[0, 3:5] - clean[3:5]).min() > 1e-6
    with pytest.raises(ValueError, match="three stds"):
        ScriptedExpert(rotation_noise=(0.0, -0.1, 0.0))
    assert collect.parse_stds("0,0,0.004") == (0.0, 0.0, 0.004)
    for bad in ("0,0", "nan,0,0", "a,b,c", "0,-1,0"):
        with pytest.raises(argparse.ArgumentTypeError):
            collect.parse_stds(bad)


def test_expert_in_process_report(tmp_path, capsys):
    from llada_vla_ros.ros import sim_eval

    out = tmp_path / "eval"
    assert sim_eval.main(["--policy", "expert", "--task", "all", "--episodes", "2",
                          "--layout", "grid", "--seed", "4", "--image-size", "64x48",
                          "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["all"]["success_rate"] == 1.0
    assert report["summary"]["all"]["grasp_rate"] == 1.0
    assert set(report["summary"]) == {"spoon", "carrot", "stack", "eggplant", "all"}
    assert len(report["videos"]) == 4
    md = (out / "report.md").read_text()
    assert "| eggplant | 2/2 | 100.0 |" in md
    assert sim_eval.main(["--policy", "/no/such/ckpt", "--out", str(out)]) == 2
    assert sim_eval.main(["--policy", "expert", "--execution-mode", "temporal_ensemble",
                          "--ensemble-decay", "nan", "--out", str(out)]) == 2
    assert "ensemble_decay must be finite" in capsys.readouterr().err


def test_wilson_interval_and_summary():
    lo, hi = wilson(19, 20)
    assert lo == pytest.approx(0.7639, abs=1e-3) and hi == pytest.approx(0.9911, abs=1e-3)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    eps = [{"task": "a", "success": s, "grasped": True, "steps_to_success": 10 if s else None,
            "latency_ms": [1.0, 3.0]} for s in (True, False, True, True)]
    s = summarize(eps)["a"]
    assert (s["successes"], s["episodes"], s["success_rate"]) == (3, 4, 0.75)
    assert s["mean_steps_to_success"] == 10.0 and s["latency_ms"]["median"] == 2.0
    assert np.allclose(s["wilson_95"], wilson(3, 4))
