"""Test process: an operator's latched estop, as `ros2 topic pub --once --keep-alive 1000
--qos-reliability reliable --qos-durability transient_local /llada_vla/estop std_msgs/Bool
"data: true"` would publish it: once, then kept alive (late joiners get it) until SIGINT.

Usage: python latched_estop.py TOPIC true|false
"""
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from std_msgs.msg import Bool

from llada_vla_ros.ros import qos


def main():
    topic, value = sys.argv[1:3]
    rclpy.init()
    node = rclpy.create_node("latched_estop")
    node.create_publisher(Bool, topic, qos.LATCHED).publish(Bool(data=value == "true"))
    print(f"published {value} on {topic}", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
