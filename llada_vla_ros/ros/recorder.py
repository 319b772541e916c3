"""The node records its own inputs and outputs to a real rosbag2 bag (through the rosbags
library), for machines without rosbag2 or when `record_to` is set."""
from __future__ import annotations

import importlib

from llada_vla_ros import topics
from llada_vla_ros.bag import BagError, BagWriter
from llada_vla_ros.ros import qos


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class NodeRecorder:
    """Raw (CDR) subscriptions on every recorded topic, written as received."""

    def __init__(self, node, path: str, storage: str = "sqlite3"):
        self.node = node
        self.writer = BagWriter(path, storage)
        self.subscriptions = []
        image = node.get_parameter("image_topic").value
        instruction = node.get_parameter("instruction_topic").value
        transport = node.get_parameter("image_transport").value
        recorded = topics.recorded_topics(node.get_parameter("robot_name").value, image,
                                          instruction, node.get_namespace(), transport)
        image = topics.image_transport_topic(image, transport)[0]
        for topic, msgtype in recorded.items():
            profile = {image: qos.IMAGE_SUB, instruction: qos.LATCHED}.get(topic, qos.COMMANDS)
            self.writer.add_topic(topic, msgtype, latched=(topic == instruction))
            self.subscriptions.append(node.create_subscription(
                message_class(msgtype), topic, lambda data, t=topic: self._write(t, data),
                profile, raw=True))
        node.get_logger().info(f"recording {len(recorded)} topics to {path} ({storage})")

    def _write(self, topic: str, data: bytes) -> None:
        try:
            self.writer.write(topic, self.node.get_clock().now().nanoseconds, data)
        except BagError:
            pass  # closed during shutdown; messages after close are not recorded

    def close(self) -> None:
        for sub in self.subscriptions:
            self.node.destroy_subscription(sub)
        self.writer.close()
