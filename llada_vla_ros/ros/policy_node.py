"""policy_node: camera image + instruction in, safe WidowX 250s joint commands out.

The plain node: everything starts at once (the model loads in the background while
/diagnostics reports), motion follows the ``execute`` parameter and ~/start / ~/stop. The
work is done by ``policy_runtime.PolicyRuntime``; ``managed_policy_node`` hosts the same
runtime in a lifecycle node.
"""
from __future__ import annotations

from llada_vla_ros.ros import signals  # noqa: F401 - first: Ctrl-C while starting

from rclpy.node import Node

from llada_vla_ros.ros.policy_runtime import (NODE_NAME, PolicyRuntime, declare_parameters,
                                              read_settings)
from llada_vla_ros.ros.spin import run


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        self.runtime = PolicyRuntime(self, read_settings(self))
        self.runtime.start_worker(load=True)
        s = self.runtime.settings
        self.get_logger().info(
            f"policy node up: robot '{s['robot_name']}', control {s['control_hz']:.1f} Hz, "
            f"execute={s['execute']}")

    # spin.run's shutdown protocol
    @property
    def shutdown_period(self) -> float:
        return self.runtime.period

    def begin_shutdown(self) -> bool:
        return self.runtime.begin_shutdown()

    def shutdown_step(self) -> bool:
        return self.runtime.shutdown_step()

    def close(self) -> None:
        self.runtime.close(exiting=True)


def main(args=None) -> int:
    return run(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
