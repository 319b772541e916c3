"""managed_policy_node: the policy node as a managed (lifecycle) node, for stacks that bring
their parts up and down together (a lifecycle manager, as Nav2 and ros2_control use).

    unconfigured --configure--> inactive --activate--> active
                 <--cleanup---          <-deactivate-

- configure: validate the parameters, create the interfaces and load the model (in the
  transition: it succeeds only with a usable policy); a bad parameter or a missing
  checkpoint fails the transition and the node stays unconfigured, the reason logged.
- activate: accept ExecuteInstruction goals and instructions, enable motion (execute true).
- deactivate: end the running goal (ABORTED), disable motion: no command is sent after the
  transition returns. Inference and /diagnostics go on.
- cleanup: destroy the interfaces and unload the model. shutdown: from any state.

The work is done by the same ``policy_runtime.PolicyRuntime`` as the plain policy_node.
"""
from __future__ import annotations

from llada_vla_ros.ros import signals  # noqa: F401 - first: Ctrl-C while starting

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from llada_vla_ros.ros.policy_runtime import (NODE_NAME, PolicyRuntime, declare_parameters,
                                              read_settings)
from llada_vla_ros.ros.spin import run


class ManagedPolicyNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        self.runtime = None
        self.get_logger().info("managed policy node up (unconfigured): configure, then activate")

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            runtime = PolicyRuntime(self, read_settings(self), motion_allowed=False)
        except ValueError as err:
            self.get_logger().error(f"configure failed: invalid configuration: {err}")
            return TransitionCallbackReturn.FAILURE
        runtime.goals.accepting = False
        error = runtime.load_policy()
        if error:
            runtime.close()
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        runtime.set_execute(False)  # until activated, whatever the parameter file says
        runtime.start_worker(load=False)
        self.runtime = runtime
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        reason = self.runtime.allow_motion(True)
        if reason:
            self.get_logger().warning(f"active, motion not enabled: {reason}")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.runtime.allow_motion(False)
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.runtime.close()
        self.runtime = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        return TransitionCallbackReturn.SUCCESS

    # spin.run's shutdown protocol (SIGINT/SIGTERM in any state)
    @property
    def shutdown_period(self) -> float:
        return self.runtime.period

    def begin_shutdown(self) -> bool:
        return self.runtime is not None and self.runtime.begin_shutdown()

    def shutdown_step(self) -> bool:
        return self.runtime.shutdown_step()

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close(exiting=True)
            self.runtime = None


def main(args=None) -> int:
    return run(ManagedPolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
