"""rosbag2 bags without rosbag2, through the ``rosbags`` library. No rclpy here.

The public names are re-exported by ``llada_vla_ros.bag``; one concept per module:

- ``messages``: message types (custom .msg registration, messages from dicts)
- ``writer``: ``BagWriter``, real rosbag2 bags (metadata.yaml + .db3 or .mcap)
- ``reader``: ``BagReader`` opens a recording as ``ros2 bag`` leaves it (a bag directory,
  split into several storage files, without metadata.yaml, a single storage file);
  ``read_bag``; ``find_bags`` (bags and directories of bags named on a command line)
- ``labels``: the recorded action of each frame (ActionChunk, or joint states through
  forward kinematics) and the gaps that leave a frame without one
- ``episode``: frames of a bag (image, instruction in force, recorded action), streamed
- ``options``: the command-line options of the bag tools
"""


class BagError(RuntimeError):
    """A bag cannot be written or used; the message names the bag and the cause."""
