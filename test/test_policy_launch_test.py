"""launch_testing: policy.launch.py alone, in a namespace, with remapped input topics.

The test publishes small camera images and joint states itself and expects the node (scripted
policy) to start in the namespace and publish action chunks. Needs a ROS 2 Humble/Jazzy system
with launch_testing and this package built and sourced.
"""
import pytest

pytest.importorskip("launch_testing", reason="launch_testing is not installed (ROS 2 launch "
                    "is not on PyPI); runs on a system ROS 2 Humble/Jazzy")

import os  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
from pathlib import Path  # noqa: E402

import launch  # noqa: E402
import launch.actions  # noqa: E402
import launch.launch_description_sources  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402

# Problems found here skip inside generate_test_description: a skip raised while
# launch_testing's collection hook imports this module would skip the whole directory.
try:
    import launch_ros  # noqa: F401
    from ament_index_python.packages import get_package_share_directory
    from llada_vla_ros import kinematics, topics
    from llada_vla_ros.msg import ActionChunk
    SHARE = Path(get_package_share_directory("llada_vla_ros"))
    NOT_READY = ""
except (ImportError, LookupError, OSError) as err:
    NOT_READY = (f"llada_vla_ros is not built and sourced, or a dependency is missing "
                 f"({err}): colcon build, then source install/setup.bash")

DOMAIN_ID = 1 + (os.getpid() + 33) % 100
IMAGE_TOPIC = "/launch_test/color/image_raw"
ROBOT = "arm_under_test"
NAMESPACE = "under_test"
TIMEOUT_S = 60.0


@pytest.mark.launch_test
def generate_test_description():
    if NOT_READY:
        pytest.skip(NOT_READY)
    include = launch.actions.IncludeLaunchDescription(
        launch.launch_description_sources.PythonLaunchDescriptionSource(
            str(SHARE / "launch" / "policy.launch.py")),
        launch_arguments={"namespace": NAMESPACE, "image_topic": IMAGE_TOPIC,
                          "robot_name": ROBOT, "instruction": "draw a square",
                          "execute": "false"}.items())
    return launch.LaunchDescription([
        launch.actions.SetEnvironmentVariable("ROS_DOMAIN_ID", str(DOMAIN_ID)),
        include,
        launch_testing.actions.ReadyToTest(),
    ])


def image_msg(node):
    msg = Image()
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = "camera_color_optical_frame"
    msg.height, msg.width, msg.encoding, msg.step = 48, 64, "rgb8", 64 * 3
    msg.data = bytes(range(256)) * (48 * 64 * 3 // 256)
    return msg


def joint_state_msg(node):
    msg = JointState()
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.name = list(kinematics.ARM_JOINTS) + ["gripper", "left_finger", "right_finger"]
    msg.position = [0.0, -0.484, 0.749, 0.0, 0.334, 0.0, 0.0, 0.037, -0.037]
    return msg


class TestPolicyLaunch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init(domain_id=DOMAIN_ID)
        cls.node = rclpy.create_node("policy_launch_test")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_node_in_namespace(self):
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if ("llada_vla_policy", "/" + NAMESPACE) in self.node.get_node_names_and_namespaces():
                return
            rclpy.spin_once(self.node, timeout_sec=0.1)
        self.fail(f"policy node /{NAMESPACE}/llada_vla_policy did not start")

    def test_chunks_from_published_images(self):
        image_pub = self.node.create_publisher(Image, IMAGE_TOPIC, 10)
        joints_pub = self.node.create_publisher(
            JointState, topics.robot_topic(ROBOT, topics.JOINT_STATES), 10)
        chunks = []
        # the node's outputs follow its namespace: /<NAMESPACE>/llada_vla/action_chunk
        sub = self.node.create_subscription(
            ActionChunk, topics.in_namespace(NAMESPACE, topics.ACTION_CHUNK), chunks.append, 10)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not chunks and time.monotonic() < deadline:
                image_pub.publish(image_msg(self.node))
                joints_pub.publish(joint_state_msg(self.node))
                rclpy.spin_once(self.node, timeout_sec=0.05)
            self.assertTrue(chunks, "no ActionChunk for the published images")
            self.assertEqual((chunks[0].horizon, chunks[0].action_dim), (5, 7))
            self.assertEqual(len(chunks[0].actions), 35)
        finally:
            self.node.destroy_subscription(sub)
            self.node.destroy_publisher(image_pub)
            self.node.destroy_publisher(joints_pub)


@launch_testing.post_shutdown_test()
class TestPolicyShutdown(unittest.TestCase):
    def test_clean_exit(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
