"""Every policy_node callback over arbitrary legal message contents (hypothesis): a message
is used or refused with a named cause. The callbacks have a last-resort guard that turns any
exception into a refusal ("<topic> refused: <ExceptionType>: ..."); these tests require that
it is never needed, i.e. every malformed content is recognised by an explicit check.

The node runs in this process (real rclpy node, real message types), its callbacks (on its
PolicyRuntime) called directly: thousands of messages in seconds, which DDS between processes could not give.
"""
import math
import signal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ros_harness import new_domain_id, require_ros

GUARD_WORDS = ("Error:", "Exception:")  # what the last-resort guard's refusal contains
JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate",
          "gripper", "left_finger", "right_finger"]


@pytest.fixture(scope="module")
def node():
    require_ros()
    import rclpy
    from rclpy.context import Context

    from llada_vla_ros.ros import policy_node
    # importing a node module installs its signal counters; give Ctrl-C back to pytest
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    context = Context()
    rclpy.init(context=context, domain_id=new_domain_id())
    n = policy_node.PolicyNode(context=context)
    yield n.runtime  # what the callbacks belong to
    n.close()
    n.destroy_node()
    rclpy.try_shutdown(context=context)


def refusals(node):
    return node.loop.stats["refusals"], node.loop.last_refusal


def assert_not_guarded(node, before):
    count, reason = refusals(node)
    if count > before[0]:
        assert not any(w in reason for w in GUARD_WORDS), f"unanticipated: {reason}"
        return True
    return False


floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
names = st.lists(st.one_of(st.sampled_from(JOINTS), st.text(max_size=8)), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=names, position=st.lists(floats, max_size=14), velocity=st.lists(floats, max_size=3))
def test_any_joint_state(node, name, position, velocity):
    from sensor_msgs.msg import JointState
    before = refusals(node)
    node.loop.q = None
    node.on_joint_states(JointState(name=name, position=position, velocity=velocity))
    refused = assert_not_guarded(node, before)
    if not refused:  # used: six finite arm joints, in order, taken by name
        assert node.loop.q.shape == (6,) and np.all(np.isfinite(node.loop.q))
        assert node.loop.q[0] == position[name.index("waist")]


encodings = st.one_of(st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422",
                                       "16UC1", "mono16", "", "RGB8"]), st.text(max_size=10))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(encoding=encodings, height=st.integers(0, 2**32 - 1), width=st.integers(0, 2**32 - 1),
       step=st.integers(0, 2**32 - 1), data=st.binary(max_size=600),
       big=st.integers(0, 1))
def test_any_image(node, encoding, height, width, step, data, big):
    from sensor_msgs.msg import Image
    if not big:  # mostly plausible sizes, so that some images are valid
        height, width, step = height % 12, width % 12, step % 40
    before = refusals(node)
    node.on_image(Image(encoding=encoding, height=height, width=width, step=step, data=data,
                        is_bigendian=big))
    if not assert_not_guarded(node, before):
        assert node.loop.image.shape == (height, width, 3)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.one_of(st.text(max_size=300), st.text(min_size=5000, max_size=6000),
                      st.just("x" * 200_000)))
def test_any_instruction(node, text):
    from std_msgs.msg import String
    before = refusals(node)
    node.last_instruction = ("", -math.inf)  # no de-duplication between examples
    node.on_instruction(String(data=text))
    if not assert_not_guarded(node, before):
        assert node.loop.instruction == text.strip()
        assert len(text.encode()) <= 4096
    else:
        assert node.loop.instruction == "" and len(text.encode()) > 4096


@given(data=st.booleans())
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_any_estop(node, data):
    from std_msgs.msg import Bool
    node.on_estop(Bool(data=data))
    assert node.loop.estop is data
    assert node.loop.execute is False or not data
    node.on_estop(Bool(data=False))
