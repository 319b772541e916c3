"""A MuJoCo tabletop with a simulated WidowX 250s and the paper's four SimplerEnv tasks.

- ``model``: the MJCF, built from ``kinematics`` (arm), the task's objects, table, camera;
- ``tasks``: the four tasks (instruction, episode length, layouts, success rule);
- ``world``: physics + xs_sdk-like joint control + rendering, shared by the Gymnasium
  environment and the ROS ``sim_world`` node;
- ``env``: the Gymnasium environment (Bridge delta-EE actions through ``ArmController``);
- ``expert``: a scripted expert from privileged object poses;
- ``collect`` / ``evaluate``: demonstrations as bags; closed-loop success rates.

Rendering is headless: ``MUJOCO_GL`` defaults to ``egl`` (set before mujoco is imported).
No rclpy here.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
