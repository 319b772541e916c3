"""launch_testing: widowx.launch.py with the simulated camera and arm, recorder on.

Checks that the policy node starts, its topics appear, action chunks flow from the simulated
camera image, and ``record:=true`` starts ``ros2 bag record`` (a bag with the node's output
after shutdown). Needs a ROS 2 Humble/Jazzy system with launch_testing and this package
built and sourced (``colcon build``, ``source install/setup.bash``).
"""
import pytest

pytest.importorskip("launch_testing", reason="launch_testing is not installed (ROS 2 launch "
                    "is not on PyPI); runs on a system ROS 2 Humble/Jazzy")

import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
from pathlib import Path  # noqa: E402

import launch  # noqa: E402
import launch.actions  # noqa: E402
import launch.launch_description_sources  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402

# Problems found here skip inside generate_test_description: a skip raised while
# launch_testing's collection hook imports this module would skip the whole directory.
try:
    import launch_ros  # noqa: F401
    from ament_index_python.packages import get_package_share_directory
    from llada_vla_ros import topics
    from llada_vla_ros.bag import read_bag
    from llada_vla_ros.msg import ActionChunk
    SHARE = Path(get_package_share_directory("llada_vla_ros"))
    NOT_READY = ""
except (ImportError, LookupError, OSError) as err:
    NOT_READY = (f"llada_vla_ros is not built and sourced, or a dependency is missing "
                 f"({err}): colcon build, then source install/setup.bash")

HERE = Path(__file__).resolve().parent
DOMAIN_ID = 1 + os.getpid() % 100
TIMEOUT_S = 60.0


@pytest.mark.launch_test
def generate_test_description():
    if NOT_READY:
        pytest.skip(NOT_READY)
    from llada_vla_ros.launch_args import is_installed
    if not is_installed("ros2bag"):
        pytest.skip("rosbag2 is not installed (sudo apt install ros-$ROS_DISTRO-rosbag2)")
    bag_dir = tempfile.mkdtemp(prefix="widowx_launch_test_")
    include = launch.actions.IncludeLaunchDescription(
        launch.launch_description_sources.PythonLaunchDescriptionSource(
            str(SHARE / "launch" / "widowx.launch.py")),
        launch_arguments={"sim": "true", "record": "true", "bag_dir": bag_dir,
                          "instruction": "draw a square"}.items())
    return launch.LaunchDescription([
        launch.actions.SetEnvironmentVariable("ROS_DOMAIN_ID", str(DOMAIN_ID)),
        launch.actions.SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                                              str(HERE / "fastdds_test.xml")),
        include,
        launch_testing.actions.ReadyToTest(),
    ]), {"bag_dir": Path(bag_dir)}


def wait_for(predicate, node=None, timeout=TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node is not None:
            rclpy.spin_once(node, timeout_sec=0.1)
        else:
            time.sleep(0.1)
        if predicate():
            return True
    return False


class TestWidowxLaunch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init(domain_id=DOMAIN_ID)
        cls.node = rclpy.create_node("widowx_launch_test")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_policy_topics_appear(self):
        wanted = {topics.ACTION_CHUNK, topics.TARGET_POSE, topics.DIAGNOSTICS, topics.IMAGE,
                  "/wx250s/joint_states", "/wx250s/commands/joint_group"}

        def present():
            return wanted <= {name for name, _ in self.node.get_topic_names_and_types()}
        self.assertTrue(wait_for(present, self.node), f"topics missing: {wanted}")

    def test_action_chunks_flow(self):
        chunks = []
        sub = self.node.create_subscription(ActionChunk, topics.ACTION_CHUNK, chunks.append, 10)
        try:
            self.assertTrue(wait_for(lambda: chunks, self.node), "no ActionChunk received")
            self.assertEqual(chunks[0].action_dim, 7)
            self.assertEqual(chunks[0].instruction, "draw a square")
        finally:
            self.node.destroy_subscription(sub)

    def test_recorder_started(self, bag_dir):
        def bag_created():
            return any(p.name.startswith("llada_vla_") for p in bag_dir.iterdir())
        self.assertTrue(wait_for(bag_created), f"ros2 bag record wrote nothing in {bag_dir}")


@launch_testing.post_shutdown_test()
class TestWidowxShutdown(unittest.TestCase):
    def test_clean_exit(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])

    def test_bag_holds_policy_output(self, bag_dir):
        [bag] = [p for p in bag_dir.iterdir() if p.name.startswith("llada_vla_")]
        self.assertTrue((bag / "metadata.yaml").is_file(), "recorder did not close the bag")
        seen = {topic for topic, *_ in read_bag(bag, topics=[topics.ACTION_CHUNK,
                                                              topics.IMAGE])}
        self.assertEqual(seen, {topics.ACTION_CHUNK, topics.IMAGE})
