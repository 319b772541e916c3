"""launch_testing: replay.launch.py plays a bag written by BagWriter into the policy node.

Also checks that ``ros2 bag play`` reads bags written with the rosbags library and that the
node's outputs are recorded into a new bag. Needs a ROS 2 Humble/Jazzy system with
launch_testing and this package built and sourced.
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
import numpy as np  # noqa: E402
import rclpy  # noqa: E402

# Problems found here skip inside generate_test_description: a skip raised while
# launch_testing's collection hook imports this module would skip the whole directory.
try:
    import launch_ros  # noqa: F401
    from ament_index_python.packages import get_package_share_directory
    from llada_vla_ros import topics
    from llada_vla_ros.bag import BagWriter, read_bag
    from llada_vla_ros.msg import ActionChunk
    SHARE = Path(get_package_share_directory("llada_vla_ros"))
    NOT_READY = ""
except (ImportError, LookupError, OSError) as err:
    NOT_READY = (f"llada_vla_ros is not built and sourced, or a dependency is missing "
                 f"({err}): colcon build, then source install/setup.bash")

DOMAIN_ID = 1 + (os.getpid() + 66) % 100
TIMEOUT_S = 60.0
SEC = 1_000_000_000
JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate",
          "gripper", "left_finger", "right_finger"]


def write_input_bag(path, seconds=8, hz=10):
    """Images, an instruction and joint states, stamped like a live recording."""
    t0 = time.time_ns()
    with BagWriter(path) as bag:
        bag.add_topic(topics.IMAGE, topics.IMAGE_TYPE)
        bag.add_topic(topics.INSTRUCTION, topics.INSTRUCTION_TYPE, latched=True)
        bag.add_topic("/wx250s/joint_states", topics.JOINT_STATES_TYPE)
        bag.write_message(topics.INSTRUCTION, t0, {"data": "draw a square"})
        for i in range(seconds * hz):
            t = t0 + i * SEC // hz
            stamp = {"sec": t // SEC, "nanosec": t % SEC}
            bag.write_message(topics.IMAGE, t, {
                "header": {"stamp": stamp, "frame_id": "camera_color_optical_frame"},
                "height": 48, "width": 64, "encoding": "rgb8", "step": 192,
                "data": np.full(48 * 192, i % 256, np.uint8)})
            bag.write_message("/wx250s/joint_states", t, {
                "header": {"stamp": stamp}, "name": JOINTS,
                "position": [0.0, -0.484, 0.749, 0.0, 0.334, 0.0, 0.0, 0.037, -0.037]})


@pytest.mark.launch_test
def generate_test_description():
    if NOT_READY:
        pytest.skip(NOT_READY)
    from llada_vla_ros.launch_args import is_installed
    if not is_installed("ros2bag"):
        pytest.skip("rosbag2 is not installed (sudo apt install ros-$ROS_DISTRO-rosbag2)")
    work = Path(tempfile.mkdtemp(prefix="replay_launch_test_"))
    write_input_bag(work / "input")
    include = launch.actions.IncludeLaunchDescription(
        launch.launch_description_sources.PythonLaunchDescriptionSource(
            str(SHARE / "launch" / "replay.launch.py")),
        launch_arguments={"bag": str(work / "input"), "output_bag": str(work / "output"),
                          "play_delay": "2.0", "shutdown_when_done": "false"}.items())
    return launch.LaunchDescription([
        launch.actions.SetEnvironmentVariable("ROS_DOMAIN_ID", str(DOMAIN_ID)),
        include,
        launch_testing.actions.ReadyToTest(),
    ]), {"output_bag": work / "output"}


class TestReplayLaunch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init(domain_id=DOMAIN_ID)
        cls.node = rclpy.create_node("replay_launch_test")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_replayed_images_give_chunks(self):
        chunks = []
        sub = self.node.create_subscription(ActionChunk, topics.ACTION_CHUNK, chunks.append, 10)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not chunks and time.monotonic() < deadline:
                rclpy.spin_once(self.node, timeout_sec=0.1)
            self.assertTrue(chunks, "no ActionChunk while the bag was played")
            self.assertEqual(chunks[0].instruction, "draw a square")
        finally:
            self.node.destroy_subscription(sub)

    def test_recorder_started(self, output_bag):
        deadline = time.monotonic() + TIMEOUT_S
        while not output_bag.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertTrue(output_bag.exists(), "ros2 bag record did not create the output bag")


@launch_testing.post_shutdown_test()
class TestReplayShutdown(unittest.TestCase):
    def test_clean_exit(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])

    def test_output_bag_holds_chunks(self, output_bag):
        self.assertTrue((output_bag / "metadata.yaml").is_file(), "output bag not closed")
        recorded = [msg for _, _, _, msg in read_bag(output_bag, topics=[topics.ACTION_CHUNK])]
        self.assertTrue(recorded, "no ActionChunk in the output bag")
        self.assertEqual(recorded[0].action_dim, 7)
