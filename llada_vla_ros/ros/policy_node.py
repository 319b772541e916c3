"""policy_node: camera image + instruction in, safe WidowX 250s joint commands out.

Threads: the executor runs the callbacks (all short) and the control timer; one worker
thread runs the policy on the newest observation. The control loop never waits for the
model: it pops the next action of the current chunk each tick, or holds still.

Every command leaves through the safety filter. Anything unusable (bad image, stale data,
NaN actions, unreachable pose, no instruction, estop) makes the node hold still and report
the cause in /diagnostics; nothing is sent while it holds (the Interbotix driver keeps the
motors at their last position).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from interbotix_xs_msgs.srv import OperatingModes
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from llada_vla_ros import kinematics, topics
from llada_vla_ros.execution import ChunkExecutor
from llada_vla_ros.images import ImageConversionError, image_msg_to_rgb
from llada_vla_ros.msg import ActionChunk as ActionChunkMsg
from llada_vla_ros.policy import MAX_INSTRUCTION_BYTES, PolicyInputError, load_policy
from llada_vla_ros.ros import qos
from llada_vla_ros.ros.spin import run
from llada_vla_ros.control import ArmController
from llada_vla_ros.safety import SafetyLimits

# name -> default; config/policy.yaml documents the same names and values (a test checks).
PARAMETERS = {
    "model_path": "",
    "device": "cpu",
    "dtype": "",
    "unnorm_key": "",
    "scripted_delay": 0.0,
    "decoding.strategy": "hierarchical",
    "decoding.steps": 10,
    "decoding.iterations_per_action": 2,
    "decoding.temperature": 0.0,
    "decoding.threshold": 0.9,
    "decoding.prompt_refresh_interval": 0,
    "robot_name": topics.ROBOT_NAME,
    "image_topic": topics.IMAGE,
    "instruction_topic": topics.INSTRUCTION,
    "estop_topic": topics.ESTOP,
    "instruction": "",
    "frame_id": "wx250s/base_link",
    "execute": False,
    "control_hz": 5.0,
    "execution_mode": "receding_horizon",
    "actions_per_chunk": 5,
    "ensemble_decay": 0.0,
    "max_image_age": 0.5,
    "max_joint_state_age": 0.5,
    "set_time_profile": True,
    "sleep_on_shutdown": False,
    "gripper_effort": 250.0,
    "gripper_threshold": 0.5,
    "safety.max_step_m": 0.05,
    "safety.max_step_rad": 0.25,
    "safety.workspace_min": [0.10, -0.20, -0.01],
    "safety.workspace_max": [0.45, 0.25, 0.30],
    "safety.joint_margin": 0.05,
    "safety.max_joint_velocity": 1.0,
    "safety.max_tracking_error": 0.5,
    "record_to": "",
    "record_storage": "sqlite3",
}


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("llada_vla_policy", **kwargs)
        for name, default in PARAMETERS.items():
            self.declare_parameter(name, default)
        p = self._param
        if not p("control_hz") > 0:
            raise ValueError(f"control_hz must be > 0, got {p('control_hz')}")
        self.period = 1.0 / float(p("control_hz"))
        # SafetyLimits / ChunkExecutor raise ValueError naming the bad parameter.
        self.limits = SafetyLimits(
            max_step_m=p("safety.max_step_m"), max_step_rad=p("safety.max_step_rad"),
            workspace_min=tuple(p("safety.workspace_min")),
            workspace_max=tuple(p("safety.workspace_max")),
            joint_margin=p("safety.joint_margin"),
            max_joint_velocity=p("safety.max_joint_velocity"),
            max_tracking_error=p("safety.max_tracking_error"))
        self.arm = ArmController(self.limits, self.period, gripper_threshold=p("gripper_threshold"))
        self.executor_ = ChunkExecutor(mode=p("execution_mode"),
                                       actions_per_chunk=p("actions_per_chunk"),
                                       ensemble_decay=p("ensemble_decay"))
        self.robot = p("robot_name")

        # State shared with the worker thread (guarded by self.lock).
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.image: Optional[np.ndarray] = None
        self.image_stamp = None
        self.image_time = None  # monotonic arrival time of the newest usable frame
        self.image_fresh = False  # newest frame not yet used by the worker
        self.image_error = ""  # why the newest frame was refused
        self.instruction = ""
        self.instruction_error = ""
        self.generation = 0  # bumped by every new instruction; stale chunks are dropped
        self.q = None  # measured arm joints
        self.joint_time = None
        self.execute = bool(p("execute"))
        self.estop = False
        self.step = 0
        self.running = True
        self.policy = None
        self.policy_error = ""
        self.stats = {"chunks": 0, "dropped_frames": 0, "commands": 0, "refusals": 0,
                      "inference_ms": deque(maxlen=50)}
        self.hold_reason = "starting"
        self.last_refusal = ""  # why the last observation or action was refused
        self.last_adjustment = ""  # what the safety filter last clipped in a sent command

        # Interfaces.
        self.pub_group = self.create_publisher(
            JointGroupCommand, topics.robot_topic(self.robot, topics.JOINT_GROUP_COMMAND), qos.COMMANDS)
        self.pub_single = self.create_publisher(
            JointSingleCommand, topics.robot_topic(self.robot, topics.JOINT_SINGLE_COMMAND), qos.COMMANDS)
        self.pub_chunk = self.create_publisher(ActionChunkMsg, topics.ACTION_CHUNK, 10)
        self.pub_pose = self.create_publisher(PoseStamped, topics.TARGET_POSE, 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.create_subscription(Image, p("image_topic"), self.on_image, qos.IMAGE_SUB)
        self.create_subscription(String, p("instruction_topic"), self.on_instruction, qos.LATCHED)
        self.create_subscription(Bool, p("estop_topic"), self.on_estop, 10)
        self.create_subscription(JointState, topics.robot_topic(self.robot, topics.JOINT_STATES),
                                 self.on_joint_states, qos.JOINT_STATES)
        self.create_service(Trigger, "~/start", self.on_start)
        self.create_service(Trigger, "~/stop", self.on_stop)
        self.modes_client = self.create_client(
            OperatingModes, topics.robot_topic(self.robot, "set_operating_modes"))
        self.profile_set = False
        self.recorder = None
        if p("record_to"):
            from llada_vla_ros.bag import BagError
            from llada_vla_ros.ros.recorder import NodeRecorder
            try:
                self.recorder = NodeRecorder(self, p("record_to"), p("record_storage"))
            except BagError as err:
                raise ValueError(f"record_to: {err}") from err

        if p("instruction"):
            self._set_instruction(p("instruction"))
        self.worker = threading.Thread(target=self._worker, name="policy-inference", daemon=True)
        self.worker.start()
        self.create_timer(self.period, self.control_tick)
        self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info(
            f"policy node up: robot '{self.robot}', control {1 / self.period:.1f} Hz, "
            f"execute={self.execute}")

    def _param(self, name):
        return self.get_parameter(name).value

    # ---------------------------------------------------------------- callbacks
    def on_image(self, msg: Image) -> None:
        try:
            rgb = image_msg_to_rgb(msg)
        except ImageConversionError as err:
            with self.lock:
                self.image_error = f"image refused: {err}"
            self._refuse(self.image_error)
            return
        with self.lock:
            if self.image_fresh:
                self.stats["dropped_frames"] += 1
            self.image, self.image_stamp = rgb, msg.header.stamp
            self.image_time, self.image_fresh, self.image_error = time.monotonic(), True, ""
            self.wake.notify()

    def on_instruction(self, msg: String) -> None:
        self._set_instruction(msg.data)

    def _set_instruction(self, text: str) -> None:
        size = len(text.encode("utf-8"))
        with self.lock:
            self.generation += 1
            self.executor_.clear()
            self.arm.replan()
            if size > MAX_INSTRUCTION_BYTES:
                self.instruction = ""
                self.instruction_error = (f"instruction refused: {size} bytes, more than "
                                          f"the {MAX_INSTRUCTION_BYTES}-byte limit")
            else:
                self.instruction, self.instruction_error = text.strip(), ""
            self.wake.notify()
        if self.instruction_error:
            self._refuse(self.instruction_error)
        else:
            self.get_logger().info(f"instruction: '{text.strip()[:200]}'")

    def on_estop(self, msg: Bool) -> None:
        with self.lock:
            if msg.data and not self.estop:
                self.executor_.clear()
                self.execute = False
            self.estop = bool(msg.data)
        if msg.data:
            self.get_logger().warning("ESTOP: motion stopped (release estop, then call ~/start)")

    def on_joint_states(self, msg: JointState) -> None:
        try:
            idx = [msg.name.index(j) for j in kinematics.ARM_JOINTS]
        except ValueError:
            self._refuse(f"joint_states lacks arm joints {kinematics.ARM_JOINTS}")
            return
        q = np.array([msg.position[i] for i in idx], dtype=float)
        if not np.all(np.isfinite(q)):
            self._refuse("joint_states contain NaN/Inf")
            return
        with self.lock:
            self.q, self.joint_time = q, time.monotonic()

    def on_start(self, request, response):
        with self.lock:
            if self.estop:
                response.success, response.message = False, "estop is active: release it first"
                return response
            self.execute = True
            self.executor_.clear()
            self.arm.resume(self.q)
        response.success, response.message = True, "motion enabled"
        return response

    def on_stop(self, request, response):
        with self.lock:
            self.execute = False
            self.executor_.clear()
        response.success, response.message = True, "motion disabled"
        return response

    # ---------------------------------------------------------------- inference thread
    def _worker(self) -> None:
        self._load_policy()
        while True:
            with self.lock:
                while self.running and not self._wants_inference():
                    self.wake.wait(timeout=0.1)
                if not self.running:
                    return
                image, stamp = self.image, self.image_stamp
                instruction, generation = self.instruction, self.generation
                self.image_fresh = False
            try:
                chunk = self.policy.predict(image, instruction)
            except PolicyInputError as err:
                self._refuse(f"observation refused: {err}")
                continue
            except Exception as err:  # a failing model must not kill the node
                self._refuse(f"inference failed: {type(err).__name__}: {err}")
                time.sleep(self.period)
                continue
            with self.lock:
                if generation != self.generation:
                    continue  # the instruction changed meanwhile
                # A chunk is executed from the tick after it arrives (its first action
                # is the next command), whatever time inference took.
                self.executor_.add_chunk(chunk.actions, self.step + 1)
                self.stats["chunks"] += 1
                self.stats["inference_ms"].append(chunk.inference_ms)
            self.pub_chunk.publish(self._chunk_msg(chunk, stamp, instruction))

    def _wants_inference(self) -> bool:
        if self.policy is None or not self.image_fresh or not self.instruction or self.estop:
            return False
        if self.executor_.mode != "receding_horizon":
            return self.executor_.needs_chunk()
        # Latency hiding: ask for the next chunk while the current one still covers the
        # inference time, so commands keep flowing at control_hz.
        lat = self.stats["inference_ms"]
        steps_of_latency = int(np.ceil(np.median(lat) / 1000 / self.period)) if lat else 0
        refill = min(self.executor_.actions_per_chunk - 1, steps_of_latency)
        return self.executor_.queued() <= refill

    def _load_policy(self) -> None:
        p = self._param
        spec = p("model_path") or "scripted"
        decode = {k.split(".", 1)[1]: p(k) for k in PARAMETERS if k.startswith("decoding.")}
        try:
            policy = load_policy(spec, device=p("device"), dtype=p("dtype") or None,
                                 unnorm_key=p("unnorm_key") or None, decode=decode,
                                 delay_s=p("scripted_delay"))
        except Exception as err:
            self.policy_error = f"policy not loaded: {type(err).__name__}: {err}"
            self.get_logger().error(self.policy_error)
            return
        with self.lock:
            self.policy = policy
        self.get_logger().info(f"policy ready: {policy.model_id}")

    def _chunk_msg(self, chunk, stamp, instruction) -> ActionChunkMsg:
        msg = ActionChunkMsg()
        msg.header.stamp = stamp
        msg.header.frame_id = self._param("frame_id")
        msg.instruction = instruction
        msg.horizon, msg.action_dim = chunk.actions.shape
        msg.actions = chunk.actions.astype(np.float32).ravel().tolist()
        msg.confidence = np.asarray(chunk.confidence, np.float32).ravel().tolist()
        msg.inference_ms = float(chunk.inference_ms)
        msg.model_id = chunk.model_id
        return msg

    # ---------------------------------------------------------------- control loop
    def _hold_reason(self, now: float) -> str:
        """Why the arm must hold still now ('' = free to move). Call with the lock held."""
        if self.estop:
            return "estop active"
        if self.policy_error:
            return self.policy_error
        if not self.execute:
            return "execution disabled (execute=false; call ~/start)"
        if self.instruction_error:
            return self.instruction_error
        if not self.instruction:
            return "idle: no instruction"
        if self.image_error:
            return self.image_error
        if self.image_time is None or now - self.image_time > self._param("max_image_age"):
            return "stale image: no camera frame for more than max_image_age"
        if self.joint_time is None or now - self.joint_time > self._param("max_joint_state_age"):
            return "stale joint states: none for more than max_joint_state_age"
        return ""

    def control_tick(self) -> None:
        with self.lock:
            self.step += 1
            reason = self._hold_reason(time.monotonic())
            # The queue advances with time even while holding, so a dry run (execute=false)
            # keeps re-planning and publishing chunks.
            action = self.executor_.pop(self.step)
            if not reason and action is None:
                reason = "waiting for the next action chunk"
            if reason:
                self._hold(reason)
                return
            decision = self.arm.step(action, self.q)
            if not decision.ok:
                self.executor_.clear()
                self._hold("; ".join(decision.reasons) or "safety filter refused the action")
                self.stats["refusals"] += 1
                self.last_refusal = self.hold_reason
                return
            self.hold_reason = ""
            self._set_time_profile()
            if decision.reasons:
                self.last_adjustment = "; ".join(decision.reasons)
            self._send(decision)

    def _hold(self, reason: str) -> None:
        if reason != self.hold_reason:
            self.get_logger().info(f"holding: {reason}")
        self.hold_reason = reason

    def _send(self, decision) -> None:
        """Publish one command (called with the lock held, so shutdown never splits it)."""
        self.pub_group.publish(JointGroupCommand(
            name="arm", cmd=[float(v) for v in decision.q_cmd]))
        if decision.gripper_open is not None:
            effort = float(self._param("gripper_effort"))
            self.pub_single.publish(JointSingleCommand(
                name="gripper", cmd=effort if decision.gripper_open else -effort))
        self.stats["commands"] += 1
        pose = PoseStamped()
        pose.header.stamp = self.get_clock().now().to_msg()
        pose.header.frame_id = self._param("frame_id")
        x, y, z, qx, qy, qz, qw = kinematics.pose_to_xyz_quat(decision.T_target)
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = x, y, z
        o = pose.pose.orientation
        o.x, o.y, o.z, o.w = qx, qy, qz, qw
        self.pub_pose.publish(pose)

    def _refuse(self, reason: str) -> None:
        with self.lock:
            self.stats["refusals"] += 1
            self.last_refusal = reason
        self.get_logger().warning(reason, throttle_duration_sec=2.0)

    def _set_time_profile(self) -> None:
        """Before the first command: a short time profile for a stream of small steps
        (Bridge: moving time 1.25 x period, acceleration 0.5 x period)."""
        if self.profile_set or not self._param("set_time_profile"):
            return
        if not self.modes_client.service_is_ready():
            self.get_logger().warning(
                "set_operating_modes not available: arm time profile unchanged", once=True)
            return
        ms = int(self.period * 1000)
        self.modes_client.call_async(OperatingModes.Request(
            cmd_type="group", name="arm", mode="position", profile_type="time",
            profile_velocity=int(1.25 * ms), profile_acceleration=int(0.5 * ms)))
        self.profile_set = True

    # ---------------------------------------------------------------- diagnostics
    def publish_diagnostics(self) -> None:
        now = time.monotonic()
        with self.lock:
            lat = list(self.stats["inference_ms"])
            reason = self.hold_reason
            values = {
                "state": "moving" if not reason else "holding",
                "hold_reason": reason,
                "last_refusal": self.last_refusal,
                "last_adjustment": self.last_adjustment,
                "execute": str(self.execute).lower(),
                "estop": str(self.estop).lower(),
                "instruction": self.instruction[:200],
                "model": self.policy.model_id if self.policy else "",
                "chunks": str(self.stats["chunks"]),
                "commands_sent": str(self.stats["commands"]),
                "dropped_frames": str(self.stats["dropped_frames"]),
                "refusals": str(self.stats["refusals"]),
                "inference_ms_last": f"{lat[-1]:.1f}" if lat else "",
                "inference_ms_median": f"{float(np.median(lat)):.1f}" if lat else "",
                "image_age_s": f"{now - self.image_time:.3f}" if self.image_time else "",
                "joint_state_age_s": f"{now - self.joint_time:.3f}" if self.joint_time else "",
                "queued_actions": str(self.executor_.queued()),
            }
            error = bool(self.policy_error) or self.estop
        status = DiagnosticStatus(name="llada_vla_ros: policy", hardware_id=self.robot)
        if error:
            status.level = DiagnosticStatus.ERROR
        elif reason and reason != "waiting for the next action chunk":
            status.level = DiagnosticStatus.WARN
        else:
            status.level = DiagnosticStatus.OK
        status.message = reason or "executing"
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(array)

    # ---------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Stop sending (a command in flight completes first), optionally go to sleep."""
        with self.lock:
            self.running, self.execute = False, False
            self.executor_.clear()
            self.wake.notify_all()
            # Ramp from the last command (continuous with what was sent), else the measurement.
            last = self.arm.last_command
            q = last if last is not None else (None if self.q is None else self.q.copy())
        if self._param("sleep_on_shutdown") and q is not None and not self.estop:
            self._move_to_sleep(q)
        if self.recorder is not None:
            self.recorder.close()

    def _move_to_sleep(self, q: np.ndarray) -> None:
        """Joint-space ramp to the sleep pose at the joint-velocity limit."""
        max_step = self.limits.max_joint_velocity * self.period
        target = kinematics.SLEEP_POSE
        n = int(np.ceil(np.max(np.abs(target - q)) / max_step))
        for i in range(1, n + 1):
            self.pub_group.publish(JointGroupCommand(
                name="arm", cmd=[float(v) for v in q + (target - q) * i / n]))
            time.sleep(self.period)


def main(args=None) -> int:
    return run(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
