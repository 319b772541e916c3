"""QoS profiles matching the upstream drivers (realsense2_camera, interbotix_xs_sdk)."""
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

# Camera subscribers: best effort, newest frame only (matches a reliable publisher too).
IMAGE_SUB = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
# realsense2_camera publishes images reliable by default.
IMAGE_PUB = QoSProfile(depth=2, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
# Latched data a late joiner must still see (the instruction in force).
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# interbotix_xs_sdk command topics and joint_states: reliable, depth 10.
COMMANDS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
JOINT_STATES = COMMANDS
SENSOR_DATA = qos_profile_sensor_data
