"""Test process: publishes 640x480 rgb8 frames at 30 Hz and one latched instruction.

Usage: python publish_observation.py IMAGE_TOPIC INSTRUCTION_TOPIC INSTRUCTION SECONDS
"""
import sys
import time

import numpy as np
import rclpy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from llada_vla_ros.ros import qos


def main():
    image_topic, instruction_topic, instruction, seconds = sys.argv[1:5]
    rclpy.init()
    node = rclpy.create_node("observation_publisher")
    pub_img = node.create_publisher(Image, image_topic, qos.IMAGE_PUB)
    pub_ins = node.create_publisher(String, instruction_topic, qos.LATCHED)
    pub_ins.publish(String(data=instruction))
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :, 0] = np.arange(640, dtype=np.uint8)[None, :]  # a red ramp
    data = frame.tobytes()
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end and rclpy.ok():
        msg = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=data)
        msg.header.stamp = node.get_clock().now().to_msg()
        pub_img.publish(msg)
        rclpy.spin_once(node, timeout_sec=1 / 30)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
