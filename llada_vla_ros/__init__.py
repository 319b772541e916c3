"""LLaDA-VLA on a ROS 2 robot arm.

The core library (everything outside ``llada_vla_ros.ros``) has no rclpy imports:
model, action tokenizer, decoding, policy, kinematics, safety, bags, evaluation, training.
``llada_vla_ros.ros`` is the thin ROS 2 layer (nodes and message conversion). The generated
messages (``llada_vla_ros.msg``) exist only in a colcon install space.
"""

__version__ = "0.1.0"
