"""Issue 2 smoke graph over real DDS, three processes: an observation publisher (640x480
rgb8 frames + instruction), the package's policy node, and this test process receiving the
ActionChunk."""
import subprocess
import sys

import numpy as np
import pytest

from ros_harness import (HERE, NodeProcess, RosProbe, new_domain_id, require_ros, ros_env,
                         wait_for)


@pytest.fixture
def domain():
    require_ros()
    return new_domain_id()


def test_image_and_instruction_in_action_chunk_out(domain, tmp_path):
    from llada_vla_ros.msg import ActionChunk

    obs = RosProbe(domain)
    obs.record(ActionChunk, "/llada_vla/action_chunk")
    node = NodeProcess("policy_node", domain, tmp_path, {"execute": False})
    publisher = subprocess.Popen(
        [sys.executable, str(HERE / "publish_observation.py"), "/camera/camera/color/image_raw",
         "/llada_vla/instruction", "put the banana on the plate", "30"],
        env=ros_env(domain), cwd=tmp_path)
    try:
        chunks = wait_for(lambda: obs.messages("/llada_vla/action_chunk"), timeout=30,
                          what="an ActionChunk from the policy node")
    finally:
        publisher.terminate()
        publisher.wait(5)
        assert node.stop() == 0, node.output()
        obs.close()
    chunk = chunks[0]
    assert chunk.instruction == "put the banana on the plate"
    assert (chunk.horizon, chunk.action_dim) == (5, 7)
    actions = np.asarray(chunk.actions, np.float32).reshape(5, 7)
    assert np.all(np.isfinite(actions))
    assert len(chunk.confidence) == 5
    assert chunk.header.stamp.sec > 0  # stamped with the image's stamp
    assert chunk.model_id == "scripted"


def test_background_node_keeps_spinning_after_a_callback_raises():
    """A tool's (or a test's) background node whose callback raises logs it and keeps
    serving: a message after the failure still arrives (the spin thread once died silently,
    leaving every later response unanswered)."""
    require_ros()
    from std_msgs.msg import String

    probe = RosProbe(new_domain_id())
    got = []

    def callback(msg):
        if msg.data == "bad":
            raise ValueError("a callback bug")
        got.append(msg.data)
    try:
        probe.node.create_subscription(String, "/background_check", callback, 10)
        pub = probe.node.create_publisher(String, "/background_check", 10)
        wait_for(lambda: pub.get_subscription_count() == 1, 10, what="matching")
        pub.publish(String(data="bad"))
        wait_for(lambda: probe._background.errors == 1, 10, what="the failing callback")
        pub.publish(String(data="good"))
        wait_for(lambda: got == ["good"], 10, what="a message after the failure")
    finally:
        probe.close()
