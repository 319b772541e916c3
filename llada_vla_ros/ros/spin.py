"""One `main` for the package's nodes: init, spin until Ctrl-C / SIGTERM, clean up."""
from __future__ import annotations

import signal
import sys

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.signals import SignalHandlerOptions


def run(node_class, args=None) -> int:
    """Spin ``node_class()``; call its ``shutdown()`` (if any) while the context is alive.
    A node whose parameters are invalid exits with status 2 and one line naming the cause.

    The node owns SIGINT/SIGTERM (rclpy's handlers would shut the context down first), so a
    shutdown hook can still publish: finish the command in flight, ramp to the sleep pose.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        node = node_class()
    except (ValueError, ParameterException) as err:  # a malformed configuration
        print(f"{node_class.__name__}: invalid configuration: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
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
