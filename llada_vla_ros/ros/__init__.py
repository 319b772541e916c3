"""The thin ROS 2 layer: nodes and message conversion (imports rclpy)."""
