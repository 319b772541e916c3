"""One `main` for the package's nodes: init, spin until Ctrl-C / SIGTERM, clean up."""
from __future__ import annotations

import signal

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.signals import SignalHandlerOptions


def run(node_class, args=None) -> int:
    """Spin ``node_class()``; call its ``shutdown()`` (if any) while the context is alive.

    The node owns SIGINT/SIGTERM (rclpy's handlers would shut the context down first), so a
    shutdown hook can still publish: finish the command in flight, ramp to the sleep pose.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    node = node_class()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if hasattr(node, "shutdown"):
            node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
