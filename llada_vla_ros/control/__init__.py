"""From policy actions to safe arm commands, without ROS.

- ``arm.ArmController``: one Bridge delta action -> one joint command through the safety
  filter (the node and the simulator both use it);
- ``loop.ControlLoop``: everything the policy node decides per tick (holds, estop, chunk
  execution, the shutdown ramp);
- ``parameters``: the node's parameter table and its validation.
"""
from .arm import ArmController
from .loop import Command, ControlLoop, Job

__all__ = ["ArmController", "Command", "ControlLoop", "Job"]
