"""Issue 6: a live run (simulated world + policy node, separate processes) recorded
by the node itself to a real rosbag2 bag, then evaluated offline from that bag."""
import json

import numpy as np
import pytest
import yaml

from ros_harness import FAST_START, NodeProcess, RosProbe, new_domain_id, require_ros, wait_for


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_record_live_run_then_evaluate_it(storage, tmp_path):
    require_ros()
    from interbotix_xs_msgs.msg import JointGroupCommand
    from std_msgs.msg import String

    from llada_vla_ros import evaluation
    from llada_vla_ros.bag import load_episode, read_bag
    from llada_vla_ros.dataset import load_examples
    from llada_vla_ros.ros import qos

    domain = new_domain_id()
    bag = tmp_path / "bag"
    probe = RosProbe(domain)
    probe.record(JointGroupCommand, "/wx250s/commands/joint_group", qos.COMMANDS)
    procs = [NodeProcess("sim_world", domain, tmp_path,
                         {"width": 320, "height": 240, "moving_time": 0.25}),
             NodeProcess("policy_node", domain, tmp_path,
                         {"execute": True, **FAST_START, "record_to": str(bag),
                          "record_storage": storage})]
    try:
        pub = probe.node.create_publisher(String, "/llada_vla/instruction", qos.LATCHED)
        wait_for(lambda: pub.get_subscription_count() >= 2, 30, what="node + recorder")
        pub.publish(String(data="push the red block"))
        wait_for(lambda: len(probe.messages("/wx250s/commands/joint_group")) >= 15, 30,
                 what="15 commands")
    finally:
        assert procs[1].stop() == 0, procs[1].output()[-3000:]  # closes the bag
        procs[0].stop()
        probe.close()

    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == storage
    counts = {t["topic_metadata"]["name"]: t["message_count"]
              for t in meta["topics_with_message_count"]}
    for topic in ("/camera/camera/color/image_raw", "/llada_vla/instruction",
                  "/wx250s/joint_states", "/wx250s/commands/joint_group",
                  "/wx250s/commands/joint_single", "/llada_vla/action_chunk",
                  "/llada_vla/target_pose", "/diagnostics"):
        assert counts.get(topic, 0) > 0, (topic, counts)
    sent = [m for t, _, _, m in read_bag(bag, ["/wx250s/commands/joint_group"])]
    assert len(sent) >= counts["/wx250s/commands/joint_group"] - 1 > 10
    assert all(np.asarray(m.cmd).shape == (6,) and m.name == "arm" for m in sent)

    episode = load_episode(bag, hz=5.0)
    assert len(episode) > 5
    assert episode.instructions[-1] == "push the red block"
    assert set(episode.instructions) <= {"", "push the red block"}
    # the same bag as training data: the motion the arm made, under the recorded instruction
    examples, summary = load_examples([bag], hz=5.0, action_source="joint_states",
                                      progress=False)
    assert summary[str(bag)]["action_source"] == "joint_states" and len(examples) >= 3
    assert {e.instruction for e in examples} == {"push the red block"}
    moved = np.abs(np.stack([e.actions[:, :3] for e in examples])).max()
    assert np.isfinite(moved) and moved > 1e-3  # the sim arm followed the scripted square
    out = tmp_path / "report"
    assert evaluation.main([str(bag), "--policy", "scripted", "--out", str(out), "--quiet",
                            "--hz", "5"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["frames_in_episode"] == len(episode)
    # frames before the instruction arrived are skipped, and said so
    assert set(report["skipped"]) <= {"no instruction in force"}
    assert report["metrics"]["frames"] + sum(report["skipped"].values()) == len(episode)
    assert report["metrics"]["frames"] >= len(episode) - 3
    # frames recorded before the first chunk have no action: counted apart, with the reason
    assert report["frames_without_action"] == episode.skipped
    assert all(r.startswith(("before the first ActionChunk", "gap in /llada_vla/action_chunk"))
               for r in episode.skipped), episode.skipped
    mae = report["metrics"]["mae"]
    assert len(mae) == 7 and all(np.isfinite(v) for v in mae.values())
    for name in ("report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    assert list(out.glob("*.png"))
