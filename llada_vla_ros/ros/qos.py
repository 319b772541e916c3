"""QoS profiles matching the upstream drivers (realsense2_camera, interbotix_xs_sdk) and the
operator tools (`ros2 topic pub`: reliable + volatile by default; `--qos-*` for others).

A subscriber that must hear every publisher, whatever its QoS, uses two subscriptions:
``ANY_PUBLISHER`` (best effort + volatile: compatible with every writer, live messages
only) and ``LATCHED`` (reliable + transient local: also receives what a latched writer
published before this node started). A reliable + transient-local writer matches both, so
its messages can arrive twice: the callbacks must be idempotent.
"""
from rclpy.duration import Duration
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
# Latched data a late joiner must still see (the instruction in force, a latched estop).
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Compatible with any writer (see the module docstring).
ANY_PUBLISHER = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                           reliability=ReliabilityPolicy.BEST_EFFORT,
                           durability=DurabilityPolicy.VOLATILE)
# interbotix_xs_sdk command topics and joint_states: reliable, depth 10.
COMMANDS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
JOINT_STATES = COMMANDS
# The policy reads joint states best effort: it matches a reliable driver and a best-effort
# one, and only the newest sample matters.
JOINT_STATES_SUB = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST,
                              reliability=ReliabilityPolicy.BEST_EFFORT,
                              durability=DurabilityPolicy.VOLATILE)
SENSOR_DATA = qos_profile_sensor_data


def commands_with_lifespan(period_s: float) -> QoSProfile:
    """The driver's command QoS, plus a lifespan of one control period: a command that
    could not be delivered in time (a network outage) expires instead of reaching the arm
    late in a burst. Lifespan does not affect compatibility with the driver's reliable
    subscription."""
    return QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE,
                      lifespan=Duration(nanoseconds=int(period_s * 1e9)))
