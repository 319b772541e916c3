"""sim_widowx: a stand-in for the Interbotix xs_sdk driver of a WidowX 250s (no hardware).

Speaks the driver's interface in /<robot_name>: subscribes commands/joint_group
(interbotix_xs_msgs/JointGroupCommand, group 'arm') and commands/joint_single
(JointSingleCommand, 'gripper' in pwm mode: +effort opens, -effort closes); publishes
joint_states (sensor_msgs/JointState, 100 Hz, the driver's joint names); serves
set_operating_modes (time profile), get_robot_info and torque_enable. Arm joints move to a
commanded position linearly over the profile's moving time, like position mode with a time
profile; commands outside the joint limits are refused (logged), as the real driver would
have the motors refuse them.
"""
from __future__ import annotations

from llada_vla_ros.ros import signals  # noqa: F401 - first: Ctrl-C while starting

import threading

import numpy as np
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from interbotix_xs_msgs.srv import OperatingModes, RobotInfo, TorqueEnable
from rclpy.node import Node
from sensor_msgs.msg import JointState

from llada_vla_ros import kinematics, topics
from llada_vla_ros.ros import qos
from llada_vla_ros.ros.spin import run

JOINT_NAMES = list(kinematics.ARM_JOINTS) + ["gripper", "left_finger", "right_finger"]


class SimWidowX(Node):
    def __init__(self):
        super().__init__("sim_widowx")
        self.declare_parameter("robot_name", topics.ROBOT_NAME)
        self.declare_parameter("initial_joints", kinematics.READY_POSE.tolist())
        self.declare_parameter("rate_hz", 100.0)
        self.declare_parameter("moving_time", 2.0)  # s, the driver's default time profile
        robot = self.get_parameter("robot_name").value
        self.lock = threading.Lock()
        self.q = np.array(self.get_parameter("initial_joints").value, dtype=float)
        self.start, self.goal = self.q.copy(), self.q.copy()
        self.elapsed, self.moving_time = 0.0, float(self.get_parameter("moving_time").value)
        self.finger, self.finger_speed = kinematics.FINGER_OPEN_M, 0.0
        self.torque = True
        self.dt = 1.0 / float(self.get_parameter("rate_hz").value)
        name = lambda n: topics.robot_topic(robot, n)  # noqa: E731
        self.pub = self.create_publisher(JointState, name(topics.JOINT_STATES), qos.JOINT_STATES)
        self.create_subscription(JointGroupCommand, name(topics.JOINT_GROUP_COMMAND),
                                 self.on_group, qos.COMMANDS)
        self.create_subscription(JointSingleCommand, name(topics.JOINT_SINGLE_COMMAND),
                                 self.on_single, qos.COMMANDS)
        self.create_service(OperatingModes, name("set_operating_modes"), self.on_modes)
        self.create_service(RobotInfo, name("get_robot_info"), self.on_info)
        self.create_service(TorqueEnable, name("torque_enable"), self.on_torque)
        self.create_timer(self.dt, self.tick)
        self.get_logger().info(f"simulated WidowX 250s driver in /{robot}")

    def on_group(self, msg: JointGroupCommand) -> None:
        cmd = np.asarray(msg.cmd, dtype=float)
        if msg.name != "arm" or cmd.shape != (6,):
            self.get_logger().error(f"group command refused: group '{msg.name}', {cmd.size} values")
            return
        if not np.all(np.isfinite(cmd)) or np.any(cmd < kinematics.JOINT_LOWER) \
                or np.any(cmd > kinematics.JOINT_UPPER):
            self.get_logger().error(f"group command outside joint limits refused: {cmd}")
            return
        with self.lock:
            if self.torque:
                self.start, self.goal, self.elapsed = self.q.copy(), cmd, 0.0

    def on_single(self, msg: JointSingleCommand) -> None:
        if msg.name != "gripper":
            self.get_logger().error(f"single command for unknown joint '{msg.name}' refused")
            return
        with self.lock:  # pwm: the fingers move at a speed proportional to the effort
            self.finger_speed = 0.1 * float(np.clip(msg.cmd, -885, 885)) / 885

    def on_modes(self, request, response):
        if request.profile_type == "time" and request.profile_velocity > 0:
            with self.lock:
                self.moving_time = request.profile_velocity / 1000.0
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
        with self.lock:
            self.torque = bool(request.enable)
        return response

    def tick(self) -> None:
        with self.lock:
            self.elapsed += self.dt
            s = min(1.0, self.elapsed / self.moving_time) if self.moving_time > 0 else 1.0
            self.q = self.start + (self.goal - self.start) * s
            self.finger = float(np.clip(self.finger + self.finger_speed * self.dt,
                                        kinematics.FINGER_CLOSED_M, kinematics.FINGER_OPEN_M))
            q, finger = self.q.copy(), self.finger
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = JOINT_NAMES
        # 'gripper' is the servo angle; map finger travel to 0..~1 rad like the real driver.
        gripper = kinematics.finger_opening(finger)
        msg.position = [float(v) for v in q] + [gripper, finger, -finger]
        self.pub.publish(msg)


def main(args=None) -> int:
    return run(SimWidowX, args)


if __name__ == "__main__":
    raise SystemExit(main())
