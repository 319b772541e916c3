"""sim_world: the simulated tabletop (``sim.World``) behind the real drivers' interfaces.

Camera (like realsense2_camera): the rendered Bridge view on the color topic, rgb8 (or
``encoding``; with ``jpeg_quality`` > 0 also JPEG on <topic>/compressed, as image_transport
does), the driver's QoS and frame id, ``width`` x ``height`` at ``fps`` (a thread of its own: the GL
context belongs to it, and drawing never blocks the joint states).

Arm (like interbotix xs_sdk in /<robot_name>): commands/joint_group (JointGroupCommand
'arm', position mode under the time profile, goals outside the joint limits refused and
logged), commands/joint_single ('gripper' in pwm mode: +effort opens, -effort closes),
joint_states at ``rate_hz`` with the driver's joint names, services set_operating_modes
(time profile), get_robot_info, torque_enable (torque off: the arm falls under gravity).
Physics runs in real time, stepped from the joint-state timer.

Episodes: parameters ``task``, ``seed``, ``layout``, ``initial_joints`` (empty: the task's);
``~/reset`` (std_srvs/Trigger) lays out a new episode: the ``seed`` parameter when it was
changed since the last episode, else the last seed + 1. The outcome (steps since the first
arm command at 5 Hz, success, grasp, done) is published on ``~/episode`` (std_msgs/String,
JSON, latched), on ``~/success`` (std_msgs/Bool, latched: the policy's ``success_topic`` for
ExecuteInstruction goals) and in /diagnostics; the log tells each episode's story (grasped,
let go, success, with the step) and warns when the process fell behind real time (physics
time skipped). ``expert_state_file`` (optional): where the privileged state for the
scripted expert policy (``model_path: expert:<file>``) is written.
"""
from __future__ import annotations

from llada_vla_ros.ros import signals  # noqa: F401 - first: Ctrl-C while starting

import json
import os
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from interbotix_xs_msgs.srv import OperatingModes, RobotInfo, TorqueEnable
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from llada_vla_ros import kinematics, topics
from llada_vla_ros.images import ENCODINGS, rgb_to_compressed_fields, rgb_to_image_fields
from llada_vla_ros.ros import qos
from llada_vla_ros.ros.spin import run
from llada_vla_ros.sim.expert import world_state
from llada_vla_ros.sim.tasks import LAYOUTS, get_task
from llada_vla_ros.sim.world import DEFAULT_ACCEL_TIME, World

CONTROL_PERIOD = 0.2  # s: episode steps are counted at the 5 Hz of the tasks
PARAMETERS = {
    "robot_name": topics.ROBOT_NAME,
    "task": "carrot",
    "seed": 0,
    "layout": "random",
    "moving_time": 2.0,   # s, xs_sdk's default time profile
    "rate_hz": 100.0,
    "image_topic": topics.IMAGE,
    "frame_id": "camera_color_optical_frame",
    "encoding": "rgb8",   # like the D435; others (bgr8, rgba8, mono8, ...) test conversions
    "width": 640,
    "height": 480,
    "fps": 30.0,
    "jpeg_quality": 0,    # > 0: also publish <image_topic>/compressed (JPEG), as image_transport does
    "expert_state_file": "",
}


class SimWorld(Node):
    def __init__(self):
        super().__init__("sim_world")
        for name, default in PARAMETERS.items():
            self.declare_parameter(name, default)
        # optional: unset = the task's initial joints (SimplerEnv's)
        self.declare_parameter("initial_joints", Parameter.Type.DOUBLE_ARRAY)
        p = lambda n: self.get_parameter(n).value  # noqa: E731
        if p("layout") not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {p('layout')!r}")
        task = get_task(p("task"))  # ValueError naming the tasks
        if p("encoding") not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, "
                             f"got {p('encoding')!r}")
        for name in ("width", "height"):
            if not 16 <= p(name) <= 1280:
                raise ValueError(f"{name} must be in 16..1280, got {p(name)}")
        for name in ("fps", "rate_hz", "moving_time"):
            if not p(name) > 0 or (name != "moving_time" and p(name) > 1000):
                raise ValueError(f"{name} must be > 0, got {p(name)}")
        self.lock = threading.Lock()
        self.world = World(task, p("layout"))
        try:
            self.initial = p("initial_joints")
        except ParameterUninitializedException:  # Jazzy+; Humble gives None
            self.initial = None
        if self.initial is not None and len(self.initial) != 6:
            raise ValueError(f"initial_joints needs 6 values, got {len(self.initial)}")
        self.seed, self.episode = int(p("seed")), 0
        self._seed_changed = False
        self._new_episode(self.seed)
        self.world.set_time_profile(float(p("moving_time")), DEFAULT_ACCEL_TIME)
        self.state_file = p("expert_state_file")
        robot = p("robot_name")
        name = lambda n: topics.robot_topic(robot, n)  # noqa: E731
        self.pub_js = self.create_publisher(JointState, name(topics.JOINT_STATES), qos.JOINT_STATES)
        self.pub_image = self.create_publisher(Image, p("image_topic"), qos.IMAGE_PUB)
        self.jpeg_quality = int(p("jpeg_quality"))
        if not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 0..100, got {self.jpeg_quality}")
        self.pub_compressed = self.create_publisher(
            CompressedImage, topics.image_transport_topic(p("image_topic"), "compressed")[0],
            qos.IMAGE_PUB) if self.jpeg_quality else None
        self.pub_episode = self.create_publisher(String, "~/episode", qos.LATCHED)
        # the success signal an ExecuteInstruction goal can end on (success_topic)
        self.pub_success = self.create_publisher(Bool, "~/success", qos.LATCHED)
        self.pub_diag = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.create_subscription(JointGroupCommand, name(topics.JOINT_GROUP_COMMAND),
                                 self.on_group, qos.COMMANDS)
        self.create_subscription(JointSingleCommand, name(topics.JOINT_SINGLE_COMMAND),
                                 self.on_single, qos.COMMANDS)
        self.create_service(OperatingModes, name("set_operating_modes"), self.on_modes)
        self.create_service(RobotInfo, name("get_robot_info"), self.on_info)
        self.create_service(TorqueEnable, name("torque_enable"), self.on_torque)
        self.create_service(Trigger, "~/reset", self.on_reset)
        self.add_on_set_parameters_callback(self.on_parameters)
        self.dt = 1.0 / float(p("rate_hz"))
        self.t_sim0, self.ticks = time.monotonic(), 0
        self.create_timer(self.dt, self.tick)
        self.create_timer(CONTROL_PERIOD, self.publish_episode)
        self.create_timer(1.0, self.publish_diagnostics)
        self.running = True
        self.frame_size = (int(p("width")), int(p("height")))
        self.camera = threading.Thread(target=self._camera_loop, args=(float(p("fps")),),
                                       name="sim-camera", daemon=True)
        self.camera.start()
        self.get_logger().info(
            f"simulated world: task {task.name} ('{task.instruction}'), layout {p('layout')}, "
            f"seed {self.seed}; WidowX 250s driver in /{robot}; camera "
            f"{self.frame_size[0]}x{self.frame_size[1]} at {p('fps'):g} Hz on {p('image_topic')}")

    # --- episodes ----------------------------------------------------------------------------
    def _new_episode(self, seed: int) -> None:
        """Called with the lock held (or before the threads start)."""
        self.world.reset(seed, self.initial or None)
        self.seed, self.episode = seed, self.episode + 1
        self.first_command = None
        self.success_step, self.ever_grasped, self.grasped = None, False, False
        self.steps, self.success = 0, False

    def on_parameters(self, params):
        for param in params:
            if param.name == "seed":
                self._seed_changed = True
            elif param.name in ("task", "layout", "width", "height", "fps", "rate_hz"):
                return SetParametersResult(successful=False,
                                           reason=f"{param.name} is fixed at start-up")
        return SetParametersResult(successful=True)

    def on_reset(self, request, response):
        seed = int(self.get_parameter("seed").value) if self._seed_changed else self.seed + 1
        self._seed_changed = False
        with self.lock:
            self._new_episode(seed)
            self._write_state()
        response.success = True
        response.message = (f"episode {self.episode}: task {self.world.task.name}, "
                            f"seed {seed}, layout {self.world.layout}")
        self.get_logger().info(response.message)
        self.publish_episode()
        return response

    def _episode_values(self) -> dict:
        return {"episode": self.episode, "task": self.world.task.name,
                "instruction": self.world.task.instruction, "seed": self.seed,
                "layout": self.world.layout, "steps": self.steps,
                "max_steps": self.world.task.max_steps, "success": self.success,
                "success_step": self.success_step, "grasped": self.ever_grasped,
                "done": self.success or self.steps >= self.world.task.max_steps}

    def publish_episode(self) -> None:
        with self.lock:
            values = self._episode_values()
        self.pub_episode.publish(String(data=json.dumps(values)))
        self.pub_success.publish(Bool(data=bool(values["success"])))

    def publish_diagnostics(self) -> None:
        with self.lock:
            values = self._episode_values()
        status = DiagnosticStatus(name="llada_vla_ros: sim_world", hardware_id="sim_world",
                                  level=DiagnosticStatus.OK,
                                  message="success" if values["success"] else
                                  ("episode over" if values["done"] else "running"))
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(array)

    # --- the driver --------------------------------------------------------------------------
    def on_group(self, msg: JointGroupCommand) -> None:
        if msg.name not in ("arm", "all"):
            self.get_logger().error(f"group command refused: unknown group '{msg.name}'")
            return
        with self.lock:
            refusal = self.world.command_arm(np.asarray(msg.cmd, dtype=float))
            if not refusal and self.first_command is None:
                self.first_command = time.monotonic()
            if not refusal:
                self._write_state()
        if refusal:
            self.get_logger().error(f"group command refused: {refusal}")

    def on_single(self, msg: JointSingleCommand) -> None:
        if msg.name != "gripper":
            self.get_logger().error(f"single command for unknown joint '{msg.name}' refused")
            return
        with self.lock:
            self.world.command_gripper(float(msg.cmd))

    def on_modes(self, request, response):
        if request.profile_type == "time" and request.profile_velocity > 0:
            with self.lock:
                self.world.set_time_profile(request.profile_velocity / 1000.0,
                                            max(0, request.profile_acceleration) / 1000.0)
            self.get_logger().info(f"arm time profile: {request.profile_velocity} ms")
        return response

    def on_info(self, request, response):
        response.mode, response.profile_type = "position", "time"
        response.joint_names = list(kinematics.ARM_JOINTS)
        response.joint_ids = list(range(1, 7))
        response.joint_lower_limits = [float(v) for v in kinematics.JOINT_LOWER]
        response.joint_upper_limits = [float(v) for v in kinematics.JOINT_UPPER]
        response.joint_velocity_limits = [float(kinematics.JOINT_VELOCITY_LIMIT)] * 6
        response.joint_sleep_positions = [float(v) for v in kinematics.SLEEP_POSE]
        response.joint_state_indices = list(range(6))
        response.num_joints, response.name = 6, [request.name]
        return response

    def on_torque(self, request, response):
        if request.cmd_type == "single":
            joints = [request.name]
        elif request.name == "all":
            joints = list(kinematics.ARM_JOINTS) + ["gripper"]
        else:
            joints = list(kinematics.ARM_JOINTS)
        try:
            with self.lock:
                self.world.set_torque(bool(request.enable), joints)
        except ValueError:
            self.get_logger().error(f"torque_enable: unknown joint '{request.name}'")
            return response
        self.get_logger().info(f"torque {'on' if request.enable else 'off'}: {', '.join(joints)}")
        return response

    # --- real time ---------------------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            due = int((now - self.t_sim0) / 0.01) - self.ticks
            if due > 20:  # far behind (a stalled process): do not try to catch up
                self.get_logger().warning(
                    f"simulation {0.01 * (due - 1):.2f} s behind real time (this process was "
                    "not scheduled): that time is skipped, the arm moves less than commanded",
                    throttle_duration_sec=5.0)
                self.ticks += due - 1
                due = 1
            if due > 0:
                self.world.advance(0.01 * due)
                self.ticks += due
            if self.first_command is not None:
                self.steps = int((now - self.first_command) / CONTROL_PERIOD) + 1
            state = self.world.scene_state()
            if state.grasped != self.grasped:  # the episode's story, in the log
                self.grasped = state.grasped
                self.get_logger().info(f"episode {self.episode}, step {self.steps}: "
                                       + ("grasped" if state.grasped else "let go"))
            self.ever_grasped |= state.grasped
            if not self.success and self.world.task.success(state):
                self.success, self.success_step = True, self.steps
                self.get_logger().info(f"episode {self.episode}, step {self.steps}: success")
            names, pos, vel, eff = self.world.joint_state()
        msg = JointState(name=names, position=pos, velocity=vel, effort=eff)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_js.publish(msg)

    def _camera_loop(self, fps: float) -> None:
        period, w, h = 1.0 / fps, *self.frame_size
        encoding = self.get_parameter("encoding").value
        next_t = time.monotonic()
        while self.running:
            rgb = self.world.render(w, h, lock=self.lock)
            if encoding == "rgb8":
                msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w,
                            data=rgb.tobytes())
            else:
                msg = Image(**rgb_to_image_fields(rgb, encoding))
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = self.get_parameter("frame_id").value
            self.pub_image.publish(msg)
            if self.pub_compressed is not None:
                self.pub_compressed.publish(CompressedImage(
                    header=msg.header, **rgb_to_compressed_fields(rgb, "jpeg", self.jpeg_quality)))
            with self.lock:
                self._write_state()
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()  # behind: publish as fast as rendering allows
        self.world.close()  # the GL context belongs to this thread

    def _write_state(self) -> None:
        """The expert's privileged state, replaced atomically (call with the lock held)."""
        if not self.state_file:
            return
        tmp = f"{self.state_file}.tmp"
        with open(tmp, "w") as f:
            f.write(world_state(self.world, self.episode).to_json())
        os.replace(tmp, self.state_file)

    def close(self) -> None:
        """spin.run's last call: stop the camera thread (it owns the GL context)."""
        self.running = False
        self.camera.join(timeout=2.0)


def main(args=None) -> int:
    return run(SimWorld, args)


if __name__ == "__main__":
    raise SystemExit(main())
