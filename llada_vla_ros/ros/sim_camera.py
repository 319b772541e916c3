"""sim_camera: a stand-in for realsense2_camera's color stream (no camera needed).

Publishes sensor_msgs/Image frames of a synthetic table-top scene (a coloured block that
moves slowly) on the RealSense color topic, with the driver's QoS. Parameters: topic,
width, height, fps, encoding (rgb8 like the D435, or any encoding the policy accepts, to
test conversions), frame_id.
"""
from __future__ import annotations

from llada_vla_ros.ros import signals  # noqa: F401 - first: Ctrl-C while starting

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image

from llada_vla_ros import topics
from llada_vla_ros.images import rgb_to_image_fields
from llada_vla_ros.ros import qos
from llada_vla_ros.ros.spin import run


def scene(width: int, height: int, t: float) -> np.ndarray:
    """A grey table, a red block moving on a circle, a blue plate: HxWx3 uint8."""
    img = np.full((height, width, 3), (150, 140, 130), np.uint8)
    img[: height // 3] = (200, 205, 210)  # wall
    cx, cy = int(width * (0.5 + 0.2 * np.cos(t))), int(height * (0.65 + 0.1 * np.sin(t)))
    r = max(2, width // 20)
    img[max(cy - r, 0): cy + r, max(cx - r, 0): cx + r] = (200, 30, 30)
    px, py = int(width * 0.75), int(height * 0.75)
    img[max(py - r, 0): py + r, max(px - 2 * r, 0): px + 2 * r] = (40, 60, 190)
    return img


class SimCamera(Node):
    def __init__(self):
        super().__init__("sim_camera")
        self.declare_parameter("topic", topics.IMAGE)
        self.declare_parameter("width", 640)
        self.declare_parameter("height", 480)
        self.declare_parameter("fps", 30.0)
        self.declare_parameter("encoding", "rgb8")
        self.declare_parameter("frame_id", "camera_color_optical_frame")
        g = lambda n: self.get_parameter(n).value  # noqa: E731
        self.width, self.height, self.encoding = g("width"), g("height"), g("encoding")
        self.frame_id, fps = g("frame_id"), float(g("fps"))
        # Pre-render one second of frames: publishing must not cost a render per frame.
        self.frames = [rgb_to_image_fields(scene(self.width, self.height, 2 * np.pi * i / 30),
                                           self.encoding) for i in range(30)]
        self.count = 0
        self.pub = self.create_publisher(Image, g("topic"), qos.IMAGE_PUB)
        self.create_timer(1.0 / fps, self.tick)
        self.get_logger().info(
            f"publishing {self.width}x{self.height} {self.encoding} at {fps:g} Hz on {g('topic')}")

    def tick(self) -> None:
        f = self.frames[self.count % len(self.frames)]
        msg = Image(height=f["height"], width=f["width"], encoding=f["encoding"],
                    is_bigendian=0, step=f["step"], data=f["data"])
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.frame_id
        self.pub.publish(msg)
        self.count += 1


def main(args=None) -> int:
    return run(SimCamera, args)


if __name__ == "__main__":
    raise SystemExit(main())
