"""PolicyRuntime: everything the policy node does, hosted by a plain node (policy_node) or a
managed one (managed_policy_node).

A thin ROS shell around ``control.ControlLoop``, which decides everything (when to move,
why to hold, the safety filter, the shutdown ramp). This module converts messages, applies
parameters, runs the policy in one worker thread on the newest frame, publishes, and serves
the ExecuteInstruction action (``execute_action.py``). Every callback is guarded: a
malformed message is refused with a named diagnostic and never escapes the executor.

Threads: the executor runs the callbacks (all short) and the control timer; the worker runs
the policy. The control loop never waits for the model.
"""
from __future__ import annotations

import functools
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from interbotix_xs_msgs.srv import OperatingModes
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.client import Client
from rclpy.duration import Duration
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.service import Service
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from llada_vla_ros import kinematics, topics
from llada_vla_ros.action_tokenizer import control_rate_mismatch
from llada_vla_ros.control import ControlLoop, parameters
from llada_vla_ros.execution import ChunkExecutor
from llada_vla_ros.images import ImageConversionError, compressed_msg_to_rgb, image_msg_to_rgb
from llada_vla_ros.msg import ActionChunk
from llada_vla_ros.policy import (MAX_INSTRUCTION_BYTES, PolicyInputError, load_policy,
                                  wants_state)
from llada_vla_ros.ros import messages, qos
from llada_vla_ros.ros.execute_action import InstructionGoals

try:  # Iron and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

NODE_NAME = "llada_vla_policy"
DUPLICATE_WINDOW_S = 1.0  # the same instruction again within this = the second subscription
WORKER_JOIN_S = 1.0       # shutdown waits this long for an inference in progress
ACK_WAIT_S = 0.5          # and this long, in all, for the driver to acknowledge commands


def robot_state_of(policy, job) -> dict:
    """``{"state": ...}`` for a policy that takes the robot state (from the job's joints and
    gripper opening), else {}. PolicyInputError naming what is missing."""
    if not wants_state(policy):
        return {}
    if job.joints is None:
        raise PolicyInputError("the policy takes the robot state: no joint state yet")
    if job.gripper is None:
        raise PolicyInputError("the policy takes the robot state: joint_states has no "
                               "left_finger position (the gripper opening)")
    try:
        return {"state": kinematics.robot_state(job.joints, job.gripper)}
    except ValueError as err:
        raise PolicyInputError(str(err)) from err


def declare_parameters(node) -> None:
    """Every parameter of the table; read-only unless it may change at runtime. Dynamic
    typing: ``coerce`` accepts an integer where a double is declared and refuses the rest."""
    for name, spec in parameters.PARAMETERS.items():
        node.declare_parameter(name, spec.default, ParameterDescriptor(
            description=spec.description, read_only=not spec.dynamic, dynamic_typing=True))


def read_settings(node) -> parameters.Settings:
    """The validated parameter set (ValueError naming the first bad parameter)."""
    return parameters.validate({name: node.get_parameter(name).value
                                for name in parameters.PARAMETERS})


def guarded(what: str):
    """A callback that refuses (counts, reports, logs) instead of raising out of spin."""
    def wrap(callback):
        @functools.wraps(callback)
        def safe(self, *args):
            try:
                return callback(self, *args)
            except Exception as err:  # noqa: BLE001 - anything a message can trigger
                self._refuse(f"{what} refused: {type(err).__name__}: {err}")
        return safe
    return wrap


class PolicyRuntime:
    def __init__(self, node, settings: parameters.Settings, motion_allowed: bool = True):
        """Create every interface on ``node``. ``motion_allowed`` False (a managed node not
        yet active) keeps motion off whatever ``execute`` says, until ``allow_motion``."""
        self.node, self.settings, s = node, settings, settings
        self.log = node.get_logger()
        self.period = s.period
        self.motion_allowed = motion_allowed
        self.loop = ControlLoop(
            s.limits, s.period, ChunkExecutor(s["execution_mode"], s["actions_per_chunk"],
                                              s["ensemble_decay"]),
            execute=s["execute"] and motion_allowed, max_image_age=s["max_image_age"],
            max_joint_state_age=s["max_joint_state_age"],
            gripper_threshold=s["gripper_threshold"],
            hold_until=time.monotonic() + s["startup_hold"])
        self.robot = s["robot_name"]
        self.policy = None
        self.last_instruction = ("", -np.inf)  # (text, monotonic time) for de-duplication
        self.last_sent = None  # (time, joint command) of the last command published
        self.profile_set = False
        self.entities = []  # what close() destroys (a managed node cleans up and reconfigures)

        robot = functools.partial(topics.robot_topic, self.robot)
        command_qos = qos.commands_with_lifespan(self.period)
        pub = self._publisher
        self.pub_group = pub(JointGroupCommand, robot(topics.JOINT_GROUP_COMMAND), command_qos)
        self.pub_single = pub(JointSingleCommand, robot(topics.JOINT_SINGLE_COMMAND), command_qos)
        # Per-policy outputs follow the node's namespace (/llada_vla/... without one): two
        # namespaced policies never share them. /diagnostics is global by ROS convention;
        # the status name carries the node's full name instead.
        self.pub_chunk = pub(ActionChunk, topics.relative(topics.ACTION_CHUNK), 10)
        self.pub_pose = pub(PoseStamped, topics.relative(topics.TARGET_POSE), 10)
        self.pub_diag = pub(DiagnosticArray, topics.DIAGNOSTICS, 10)
        sub = self._subscription
        image_topic, _ = topics.image_transport_topic(s["image_topic"], s["image_transport"])
        if s["image_transport"] == "compressed":
            sub(CompressedImage, image_topic, self.on_compressed_image, qos.IMAGE_SUB)
        else:
            sub(Image, image_topic, self.on_image, qos.IMAGE_SUB)
        # The estop: estop_topic (global by default: one estop stops every arm) and, under
        # a namespace, also <namespace>/llada_vla/estop for this arm alone.
        estops = [s["estop_topic"]]
        if node.get_namespace() != "/":
            estops.append(topics.relative(topics.ESTOP))
        for topic in estops:
            self.any_publisher(Bool, topic, self.on_estop)
        self.any_publisher(String, s["instruction_topic"], self.on_instruction)
        sub(JointState, robot(topics.JOINT_STATES), self.on_joint_states, qos.JOINT_STATES_SUB)
        self.entities += [node.create_service(Trigger, "~/start", self.on_start),
                          node.create_service(Trigger, "~/stop", self.on_stop)]
        self.modes_client = node.create_client(OperatingModes, robot("set_operating_modes"))
        self.entities.append(self.modes_client)
        self.recorder = None
        if s["record_to"]:
            from llada_vla_ros.bag import BagError
            from llada_vla_ros.ros.recorder import NodeRecorder
            try:
                self.recorder = NodeRecorder(node, s["record_to"], s["record_storage"])
            except BagError as err:
                raise ValueError(f"record_to: {err}") from err
        self.goals = InstructionGoals(node, self, s["success_topic"])
        if s["instruction"]:
            self._instruct(s["instruction"])
        node.add_on_set_parameters_callback(self.on_set_parameters)
        self.control_timer = node.create_timer(self.period, self.control_tick)
        self.entities += [self.control_timer, node.create_timer(1.0, self.publish_diagnostics)]
        self.worker = None

    def _publisher(self, msg_type, topic, qos_profile):
        self.entities.append(self.node.create_publisher(msg_type, topic, qos_profile))
        return self.entities[-1]

    def _subscription(self, msg_type, topic, callback, qos_profile, **kwargs):
        self.entities.append(self.node.create_subscription(msg_type, topic, callback,
                                                           qos_profile, **kwargs))
        return self.entities[-1]

    def any_publisher(self, msg_type, topic, callback) -> None:
        """Two subscriptions, so any publisher's QoS is heard (see qos.py); a volatile
        writer is incompatible with the latched one by design: no warning for that."""
        quiet = SubscriptionEventCallbacks(incompatible_qos=lambda event: None)
        self._subscription(msg_type, topic, callback, qos.LATCHED, event_callbacks=quiet)
        self._subscription(msg_type, topic, callback, qos.ANY_PUBLISHER)

    # ---------------------------------------------------------------- policy
    def load_policy(self) -> str:
        """Load the policy (in this thread); '' or why it failed (also in /diagnostics)."""
        s = self.settings
        decode = {k.split(".", 1)[1]: s[k] for k in parameters.PARAMETERS
                  if k.startswith("decoding.")}
        try:
            self.policy = load_policy(s["model_path"] or "scripted", device=s["device"],
                                      dtype=s["dtype"] or None, unnorm_key=s["unnorm_key"] or None,
                                      decode=decode, delay_s=s["scripted_delay"])
        except Exception as err:
            error = f"policy not loaded: {type(err).__name__}: {err}"
            self.log.error(error)
            self.loop.set_policy(False, error)
            return error
        self.loop.set_policy(True)
        self.log.info(f"policy ready: {self.policy.model_id}")
        mismatch = control_rate_mismatch(s["model_path"], s["control_hz"], s["unnorm_key"] or None)
        if mismatch:
            self.log.warning(mismatch)
        return ""

    def start_worker(self, load: bool) -> None:
        """The inference thread; with ``load`` it loads the policy first (the plain node:
        the executor runs, and /diagnostics reports, while a large model loads)."""
        self.worker = threading.Thread(target=self._worker, args=(load,), name="policy-inference")
        self.worker.start()

    def _worker(self, load: bool) -> None:
        if load:
            self.load_policy()
        while self.loop.running:
            job = self.loop.next_job(timeout=0.1)
            if job is None:
                continue
            try:
                chunk = self.policy.predict(job.image, job.instruction, **robot_state_of(
                    self.policy, job))
            except PolicyInputError as err:
                self._refuse(f"observation refused: {err}")
                continue
            except Exception as err:  # a failing model must not kill the node
                self._refuse(f"inference failed: {type(err).__name__}: {err}")
                time.sleep(self.period)
                continue
            if self.loop.add_chunk(chunk.actions, job, chunk.inference_ms, chunk.confidence):
                self.pub_chunk.publish(messages.action_chunk(
                    chunk, job.stamp, job.instruction, self.settings["frame_id"]))

    # ---------------------------------------------------------------- parameters, motion
    def on_set_parameters(self, params):
        """``ros2 param set``: the whole set is re-validated with the change, then applied.
        Read-only parameters never get here (rclpy refuses them with 'read-only')."""
        changes = {p.name: p.value for p in params}
        try:
            settings = parameters.validate({**self.settings.values, **changes})
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        if changes.get("execute") is True:
            if not self.motion_allowed:
                return SetParametersResult(
                    successful=False, reason="the managed node is not active: activate it first")
            ok, message = self.loop.start()
            if not ok:
                return SetParametersResult(successful=False, reason=message)
            self.log.info(message)
        elif changes.get("execute") is False:
            self.loop.stop()
        if "instruction" in changes:
            self._instruct(settings["instruction"])
        self.loop.update(settings.limits, settings["gripper_threshold"],
                         settings["max_image_age"], settings["max_joint_state_age"])
        self.settings = settings
        self.log.info(f"parameters set: {changes}")
        return SetParametersResult(successful=True)

    def set_execute(self, value: bool) -> SetParametersResult:
        """~/start, ~/stop, goals and the estop go through the parameter, so `ros2 param get
        execute` always tells whether motion is enabled."""
        return self.node.set_parameters([Parameter("execute", value=value)])[0]

    def allow_motion(self, allowed: bool) -> str:
        """Managed node: activate (motion allowed and enabled) / deactivate (no command
        after this returns). Returns '' or why motion could not be enabled."""
        self.motion_allowed = self.goals.accepting = allowed
        if not allowed:
            self.goals.end_all("the managed node was deactivated")
            self.set_execute(False)
            return ""
        result = self.set_execute(True)
        return "" if result.successful else result.reason

    def instruct_goal(self, text: str) -> str:
        """A goal's instruction, with motion enabled: '' or why it cannot start."""
        if self.loop.estop:
            return "estop is active: release it first"
        if self.loop.policy_error:
            return self.loop.policy_error
        error = self.loop.set_instruction(text, MAX_INSTRUCTION_BYTES)
        if error:
            return error
        self.log.info(f"goal instruction: '{text.strip()[:200]}'")
        result = self.set_execute(True)
        return "" if result.successful else result.reason

    # ---------------------------------------------------------------- callbacks
    @guarded("image")
    def on_image(self, msg: Image) -> None:
        self._use_image(image_msg_to_rgb, msg)

    @guarded("compressed image")
    def on_compressed_image(self, msg: CompressedImage) -> None:
        self._use_image(compressed_msg_to_rgb, msg)

    def _use_image(self, convert, msg) -> None:
        try:
            rgb = convert(msg)
        except ImageConversionError as err:
            self._refuse(f"image refused: {err}", image=True)
            return
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        latency = (self.node.get_clock().now().nanoseconds - stamp_ns) / 1e9 if stamp_ns else None
        self.loop.set_image(rgb, msg.header.stamp, time.monotonic(), latency)

    @guarded("instruction")
    def on_instruction(self, msg: String) -> None:
        text, now = msg.data, time.monotonic()
        last_text, last_time = self.last_instruction
        if text == last_text and now - last_time < DUPLICATE_WINDOW_S:
            return  # the same message through the other subscription
        self.last_instruction = (text, now)
        if self.goals.active is not None:
            self._refuse("instruction topic ignored while an ExecuteInstruction goal runs")
            return
        self._instruct(text)

    def _instruct(self, text: str) -> None:
        error = self.loop.set_instruction(text, MAX_INSTRUCTION_BYTES)
        if error:
            self._refuse(error)
        else:
            self.log.info(f"instruction: '{text.strip()[:200]}'")

    @guarded("estop")
    def on_estop(self, msg: Bool) -> None:
        if self.loop.set_estop(bool(msg.data)):
            self.log.warning("ESTOP: motion stopped (release estop, then call ~/start)")
            self.set_execute(False)

    @guarded("joint_states")
    def on_joint_states(self, msg: JointState) -> None:
        try:
            q = kinematics.arm_joint_positions(msg.name, msg.position)
        except ValueError as err:
            self._refuse(str(err))
            return
        self.loop.set_joints(q, time.monotonic(),
                             kinematics.joint_state_opening(msg.name, msg.position))

    def on_start(self, request, response):
        result = self.set_execute(True)
        response.success = result.successful
        response.message = "motion enabled" if result.successful else result.reason
        return response

    def on_stop(self, request, response):
        self.set_execute(False)
        response.success, response.message = True, "motion disabled"
        return response

    def _refuse(self, reason: str, image: bool = False) -> None:
        self.loop.refuse(reason, image=image)
        self.log.warning(reason, throttle_duration_sec=2.0)

    # ---------------------------------------------------------------- control loop
    def control_tick(self) -> None:
        before = self.loop.hold_reason
        command = self.loop.tick(time.monotonic())
        if command is None:
            if self.loop.hold_reason != before:
                self.log.info(f"holding: {self.loop.hold_reason}")
        else:
            self._set_time_profile()
            self._send(command)
        self.goals.tick()

    def _send(self, command) -> None:
        self.pub_group.publish(JointGroupCommand(name="arm", cmd=[float(v) for v in command.q]))
        if command.gripper_open is not None:
            effort = float(self.settings["gripper_effort"])
            self.pub_single.publish(JointSingleCommand(
                name="gripper", cmd=effort if command.gripper_open else -effort))
        self.last_sent = (time.monotonic(), command.q)
        self.pub_pose.publish(messages.target_pose(
            command.target, self.node.get_clock().now().to_msg(), self.settings["frame_id"]))

    def _set_time_profile(self) -> None:
        """Before the first command: a short time profile for a stream of small steps
        (Bridge: moving time 1.25 x period, acceleration 0.5 x period)."""
        if self.profile_set or not self.settings["set_time_profile"]:
            return
        if not self.modes_client.service_is_ready():
            self.log.warning("set_operating_modes not available: arm time profile unchanged",
                             once=True)
            return
        ms = int(self.period * 1000)
        self.modes_client.call_async(OperatingModes.Request(
            cmd_type="group", name="arm", mode="position", profile_type="time",
            profile_velocity=int(1.25 * ms), profile_acceleration=int(0.5 * ms)))
        self.profile_set = True

    # ---------------------------------------------------------------- diagnostics
    def publish_diagnostics(self) -> None:
        values = self.loop.status(time.monotonic())
        values["model"] = self.policy.model_id if self.policy else ""
        values["goal"] = self.goals.describe()
        self.pub_diag.publish(messages.policy_diagnostics(
            values, bool(self.loop.policy_error) or values["estop"] == "true",
            f"llada_vla_ros: {self.node.get_fully_qualified_name()}", self.robot,
            self.node.get_clock().now().to_msg()))

    # ---------------------------------------------------------------- shutdown
    def begin_shutdown(self) -> bool:
        """First SIGINT/SIGTERM: stop planning; True when a sleep ramp follows (spin.run
        then calls ``shutdown_step`` once per period, on wall time)."""
        self.control_timer.cancel()
        self.goals.end_all("the node is shutting down")
        what = self.loop.begin_shutdown(bool(self.settings["sleep_on_shutdown"]))
        self.log.info(f"shutting down: {what}")
        return self.loop.ramping()

    def shutdown_step(self) -> bool:
        """One ramp command (estop and joint states are still processed between steps)."""
        command = self.loop.tick(time.monotonic())
        if command is not None:
            self._send(command)
            return self.loop.ramping()
        self.log.warning(self.loop.hold_reason)
        return False

    def close(self, exiting: bool = False) -> None:
        """Join the inference thread, close the recorder, log the last command sent, wait (at
        most ``ACK_WAIT_S``) for the driver to acknowledge it, and destroy every interface (a
        managed node's cleanup). ``exiting``: the process ends, so an inference still
        running after ``WORKER_JOIN_S`` is not waited for."""
        self.goals.end_all("the node stopped")
        self.loop.begin_shutdown(sleep=False)
        if self.worker is not None:
            self.worker.join(WORKER_JOIN_S if exiting else None)
        if self.last_sent is None:
            self.log.info("stopped: no command was sent")
        else:
            t, q = self.last_sent
            self.log.info(f"stopped: last command {np.round(q, 4).tolist()} sent "
                          f"{time.monotonic() - t:.2f} s ago; nothing is sent after it")
        if self.recorder is not None:
            self.recorder.close()
        if self.last_sent is not None and self.entities:  # (not closed already)
            # a publisher destroyed right after publishing can lose its last message (the
            # sleep ramp's final command reached the driver or not, depending on load)
            deadline = time.monotonic() + ACK_WAIT_S
            for pub in (self.pub_group, self.pub_single):
                pub.wait_for_all_acked(Duration(seconds=max(0.0, deadline - time.monotonic())))
        self.node.remove_on_set_parameters_callback(self.on_set_parameters)
        self.goals.destroy()
        for entity in self.entities:
            for kind, destroy in ((Publisher, self.node.destroy_publisher),
                                  (Subscription, self.node.destroy_subscription),
                                  (Service, self.node.destroy_service),
                                  (Client, self.node.destroy_client),
                                  (Timer, self.node.destroy_timer)):
                if isinstance(entity, kind):
                    destroy(entity)
        self.entities = []
        if self.worker is not None and self.worker.is_alive():
            # An inference still runs in native code: leaving now (instead of letting the
            # interpreter tear it down, which aborts) keeps the exit clean and fast.
            self.log.warning(f"inference still running after {WORKER_JOIN_S} s: exiting now")
            import os
            import sys
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
