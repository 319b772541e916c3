"""One `main` for the package's nodes: init, spin until SIGINT / SIGTERM, shut down cleanly.

The process owns SIGINT and SIGTERM (``signals.py``; rclpy's handlers would shut the context
down before the node could finish): the first signal ends normal operation; a node that has a shutdown
motion (``begin_shutdown()`` returns True) keeps being spun while ``shutdown_step()`` is
called once per ``shutdown_period`` s of wall time, so callbacks (an estop) are still
processed during it; a second signal aborts it. Then ``close()`` (join threads, close
files), node destruction and rclpy shutdown. Spinning waits at most 0.1 s at a time, so a
signal is seen even when nothing else wakes the executor (``use_sim_time`` with no /clock:
ROS-time timers never fire).
"""
from __future__ import annotations

import sys
import time

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from llada_vla_ros.ros.signals import SIGNALS

POLL_S = 0.1


def run(node_class, args=None) -> int:
    """Spin ``node_class()`` until a signal. A node whose parameters are invalid exits with
    status 2 and one line naming the cause."""
    signals = SIGNALS  # installed when the node module was imported: none is lost
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = node_class()
    except (ValueError, ParameterException) as err:  # a malformed configuration
        print(f"{node_class.__name__}: invalid configuration: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while signals.count == 0 and rclpy.ok():
            executor.spin_once(timeout_sec=POLL_S)
        if signals.count and getattr(node, "begin_shutdown", lambda: False)():
            seen, next_step = signals.count, time.monotonic()
            while rclpy.ok():
                if signals.count > seen:
                    node.get_logger().warning("second signal: shutdown motion aborted")
                    break
                if time.monotonic() >= next_step:
                    if not node.shutdown_step():
                        break
                    next_step += node.shutdown_period
                executor.spin_once(timeout_sec=max(0.0, min(POLL_S, next_step - time.monotonic())))
    except ExternalShutdownException:
        pass
    finally:
        if hasattr(node, "close"):
            node.close()
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
