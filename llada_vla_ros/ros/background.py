"""An rclpy node spun in a background thread, on a context of its own: how a tool or a test
talks to the graph while its own code runs (sim-eval's operator, the tests' observer)."""
from __future__ import annotations

import threading
import traceback
from typing import Optional

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor


class BackgroundNode:
    def __init__(self, name: str, domain_id: Optional[int] = None):
        self.context = Context()
        if domain_id is None:
            rclpy.init(context=self.context)
        else:
            rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.errors = 0  # callbacks that raised (logged)
        self._closing = False
        self._thread = threading.Thread(target=self._spin, name=f"{name}-spin", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        """Spin until the context shuts down. An exception raised by a callback is logged
        and spinning goes on: a silently dead spin thread would leave every later service
        response, goal response and message of this node unanswered."""
        while self.context.ok() and not self._closing:
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001
                if self._closing or not self.context.ok():  # the normal end
                    return
                self.errors += 1
                self.node.get_logger().error(
                    f"callback raised, spinning goes on:\n{traceback.format_exc()}")

    def close(self) -> None:
        self._closing = True
        self._thread.join(timeout=2)  # spin_once returns within 0.05 s
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
