"""An rclpy node spun in a background thread, on a context of its own: how a tool or a test
talks to the graph while its own code runs (sim-eval's operator, the tests' observer)."""
from __future__ import annotations

import threading
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
        self._thread = threading.Thread(target=self._spin, name=f"{name}-spin", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context was shut down under us
                return

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2)
