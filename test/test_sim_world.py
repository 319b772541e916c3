"""sim_world over real DDS: the RealSense camera and xs_sdk driver interfaces, episodes, and
the real policy_node with the scripted expert completing a task (issue 11)."""
import json
import re
import time

import numpy as np
import pytest

from ros_harness import NodeProcess, RosProbe, new_domain_id, require_ros, wait_for

JS, IMAGE, GROUP = ("/wx250s/joint_states", "/camera/camera/color/image_raw",
                    "/wx250s/commands/joint_group")


@pytest.fixture
def domain():
    require_ros()
    return new_domain_id()


def call(probe, srv_type, name, request, timeout=15):
    client = probe.node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout), name
    future = client.call_async(request)
    wait_for(future.done, timeout, what=name)
    return future.result()


def arm(msg):
    return np.array([msg.position[msg.name.index(j)] for j in
                     ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle",
                      "wrist_rotate")])


def test_sim_world_speaks_the_drivers_interfaces(domain, tmp_path):
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
    from interbotix_xs_msgs.srv import OperatingModes, RobotInfo, TorqueEnable
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from llada_vla_ros import kinematics
    from llada_vla_ros.ros import qos

    probe = RosProbe(domain)
    probe.record(JointState, JS, qos.JOINT_STATES)
    probe.record(Image, IMAGE, qos.IMAGE_SUB)
    probe.record(String, "/sim_world/episode", qos.LATCHED)
    group = probe.node.create_publisher(JointGroupCommand, GROUP, qos.COMMANDS)
    single = probe.node.create_publisher(JointSingleCommand, "/wx250s/commands/joint_single",
                                         qos.COMMANDS)
    world = NodeProcess("sim_world", domain, tmp_path,
                        {"task": "stack", "seed": 3, "width": 96, "height": 72, "fps": 15.0})
    try:
        wait_for(lambda: len(probe.messages(IMAGE)) >= 5, 30, what="camera frames")
        t0 = time.monotonic()
        time.sleep(2.0)
        js_rate = len(probe.times(JS, t0)) / 2.0
        img_rate = len(probe.times(IMAGE, t0)) / 2.0
        frame = probe.messages(IMAGE)[-1]
        assert (frame.width, frame.height, frame.encoding) == (96, 72, "rgb8")
        assert frame.header.frame_id == "camera_color_optical_frame"
        js = probe.messages(JS)[-1]
        assert list(js.name) == list(kinematics.ARM_JOINTS) + ["gripper", "left_finger",
                                                                "right_finger"]
        start = arm(js)
        info = call(probe, RobotInfo, "/wx250s/get_robot_info",
                    RobotInfo.Request(cmd_type="group", name="arm"))
        np.testing.assert_allclose(info.joint_lower_limits, kinematics.JOINT_LOWER, atol=1e-6)

        # a command outside the joint limits is refused and logged; the arm stays
        group.publish(JointGroupCommand(name="arm", cmd=list(start + [0, 0, 0, 0, 3.0, 0])))
        wait_for(lambda: "outside the joint limits" in world.output(), 10, what="refusal log")
        # a short time profile, then a move the arm follows
        call(probe, OperatingModes, "/wx250s/set_operating_modes", OperatingModes.Request(
            cmd_type="group", name="arm", mode="position", profile_type="time",
            profile_velocity=300, profile_acceleration=100))
        assert "arm time profile: 300 ms" in world.output()
        goal = start + [0.2, -0.1, 0.1, 0.0, -0.2, 0.3]
        group.publish(JointGroupCommand(name="arm", cmd=[float(v) for v in goal]))
        single.publish(JointSingleCommand(name="gripper", cmd=-250.0))
        wait_for(lambda: np.abs(arm(probe.messages(JS)[-1]) - goal).max() < 0.01, 10,
                 what="the arm at the goal")
        wait_for(lambda: probe.messages(JS)[-1].position[7] < 0.02, 10, what="fingers closed")
        # torque off: the arm really falls
        call(probe, TorqueEnable, "/wx250s/torque_enable",
             TorqueEnable.Request(cmd_type="group", name="arm", enable=False))
        wait_for(lambda: np.abs(arm(probe.messages(JS)[-1]) - goal).max() > 0.2, 10,
                 what="the limp arm falling")
        call(probe, TorqueEnable, "/wx250s/torque_enable",
             TorqueEnable.Request(cmd_type="group", name="arm", enable=True))
        # ~/reset: a new episode with the next seed, the arm back at the start pose
        reply = call(probe, Trigger, "/sim_world/reset", Trigger.Request())
        assert reply.success and "seed 4" in reply.message, reply.message
        wait_for(lambda: np.abs(arm(probe.messages(JS)[-1]) - start).max() < 0.01, 10,
                 what="the arm back at the start")
        episode = json.loads(probe.messages("/sim_world/episode")[-1].data)
        assert (episode["task"], episode["seed"], episode["success"]) == ("stack", 4, False)
        assert episode["instruction"] == "stack the green block on the yellow block"
        assert world.alive(), world.output()[-2000:]
    finally:
        assert world.stop() == 0, world.output()[-3000:]
        probe.close()
    # 100 Hz like xs_sdk and the 15 Hz asked for (docs/benchmarks.md has the rates measured
    # under load; a busy shared machine drops some here)
    assert js_rate >= 50, js_rate
    assert img_rate >= 7, img_rate
    assert "Traceback" not in world.log.read_text()


def test_expert_through_the_real_policy_node_completes_an_episode(domain, tmp_path):
    """llada-vla-sim-eval --through-ros: sim_world + policy_node (model_path expert:<file>)
    processes over DDS; the operator's stop / reset / instruction / start between episodes."""
    from llada_vla_ros.ros import sim_eval

    out = tmp_path / "eval"
    rc = sim_eval.main(["--policy", "expert", "--task", "stack", "--episodes", "2",
                        "--seed", "5", "--through-ros", "--image-size", "96x72",
                        "--camera-fps", "10", "--domain-id", str(domain), "--out", str(out),
                        "--quiet"])

    def logs():  # what the two nodes said, for a failure here
        return "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}"
                         for f in sorted((out / "logs").glob("*.log")))
    assert rc == 0, logs()
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "through ROS"
    episodes = report["episodes"]
    assert [e["seed"] for e in episodes] == [5, 6]
    assert all(e["success"] and e["grasped"] for e in episodes), (episodes, logs())
    assert all(0 < e["steps_to_success"] <= 60 for e in episodes)
    assert report["summary"]["stack"]["latency_ms"]["median"] > 0  # from the node's chunks
    log = (out / "logs" / "sim_world_stack.log").read_text()
    assert "arm time profile: 250 ms" in log  # the node set the Bridge profile
    # each ~/start re-anchored on the reset arm: none resumed from the last episode's command
    # (a first chunk planned from the wrong pose, or a tracking fault)
    node_log = (out / "logs" / "policy_node_stack.log").read_text()
    assert node_log.count("resuming from the measured joints") == 2, logs()
    assert "resuming from the last command" not in node_log, logs()
    assert "tracking" not in node_log, logs()
    # each episode's story in the world's log (what a failure here would be read from)
    stories = {}
    for episode, event in re.findall(r"episode (\d+), step \d+: (grasped|let go|success)", log):
        stories.setdefault(episode, []).append(event)
    assert len(stories) == 2, (stories, logs())
    assert all(s[0] == "grasped" and s[-1] == "success" for s in stories.values()), stories
    assert (out / "videos" / "stack_seed5.mp4").stat().st_size > 1000


@pytest.mark.parametrize("params,words", [
    ({"task": "banana"}, "unknown task 'banana'"),
    ({"layout": "spiral"}, "layout must be one of"),
    ({"encoding": "yuv422"}, "encoding must be one of"),
])
def test_bad_configuration_exits_with_the_cause(domain, tmp_path, params, words):
    world = NodeProcess("sim_world", domain, tmp_path, params)
    world.proc.wait(30)
    out = world.log.read_text()
    assert world.stop() == 2, out
    assert "invalid configuration" in out and words in out, out
    assert "Traceback" not in out
