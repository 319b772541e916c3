"""Peers of the policy node for the DDS tests, written as an outside tool would: an observer
(the driver's view of the commands, /diagnostics), an operator (instruction, services,
parameters, like `ros2 topic pub`, `ros2 service call`, `ros2 param set`) and a camera whose
frames can be broken on purpose. They live in the test process (a RosProbe); the node under
test runs in its own process."""

import time

import numpy as np

from ros_harness import FAST_START, NodeProcess, RosProbe, wait_for

GROUP, SINGLE = "/wx250s/commands/joint_group", "/wx250s/commands/joint_single"
IMAGE, INSTRUCTION = "/camera/camera/color/image_raw", "/llada_vla/instruction"
LIMITS = dict(margin=0.05, ws_min=np.array([0.10, -0.20, -0.01]),
              ws_max=np.array([0.45, 0.25, 0.30]))


def make_probe(domain):
    from diagnostic_msgs.msg import DiagnosticArray
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand

    from llada_vla_ros.msg import ActionChunk
    from llada_vla_ros.ros import qos

    probe = RosProbe(domain)
    probe.record(JointGroupCommand, GROUP, qos.COMMANDS)
    probe.record(JointSingleCommand, SINGLE, qos.COMMANDS)
    probe.record(DiagnosticArray, "/diagnostics")
    probe.record(ActionChunk, "/llada_vla/action_chunk")
    return probe


def publish_instruction(probe, text):
    from std_msgs.msg import String

    from llada_vla_ros.ros import qos
    pub = probe.node.create_publisher(String, INSTRUCTION, qos.LATCHED)
    pub.publish(String(data=text))
    return pub


def policy_statuses(probe, since=0.0):
    """The policy node's DiagnosticStatus entries received after `since` (other nodes, e.g.
    the simulated world, publish on /diagnostics too)."""
    return [st for arr in probe.messages("/diagnostics", since) for st in arr.status
            if "llada_vla_policy" in st.name]


def wait_started(probe, timeout=20):
    """Until the node reports a state past its startup hold (``startup_hold``)."""
    from llada_vla_ros.control.loop import STARTING
    t = time.monotonic()
    wait_for(lambda: [st for st in policy_statuses(probe, t) if st.message != STARTING], timeout,
             what="the end of the node's startup hold")


def diagnostics_mention(probe, since, words):
    """True once a diagnostic of the policy received after `since` names the cause."""
    for st in policy_statuses(probe, since):
        text = (st.message + " " + " ".join(f"{kv.key}={kv.value}" for kv in st.values)).lower()
        if all(w.lower() in text for w in words):
            return True
    return False


def holding_for(probe, since, words):
    """True once a diagnostic received after `since` gives the cause as the current hold
    reason (the status message; `last_refusal` may still name an older cause)."""
    return any(all(w.lower() in st.message.lower() for w in words)
               for st in policy_statuses(probe, since))


def assert_commands_safe(commands):
    from llada_vla_ros import kinematics
    for c in commands:
        q = np.asarray(c.cmd, float)
        assert c.name == "arm" and q.shape == (6,)
        assert np.all(q >= kinematics.JOINT_LOWER + LIMITS["margin"] - 1e-5), q
        assert np.all(q <= kinematics.JOINT_UPPER - LIMITS["margin"] + 1e-5), q
        p = kinematics.fk(q)[:3, 3]
        assert np.all(p >= LIMITS["ws_min"] - 1e-3) and np.all(p <= LIMITS["ws_max"] + 1e-3), p


class Camera:
    """This process as a camera whose frames can be broken on purpose."""

    def __init__(self, probe):
        from sensor_msgs.msg import Image

        from llada_vla_ros.images import rgb_to_image_fields
        from llada_vla_ros.ros import qos
        self.Image, self.mode = Image, "rgb8"
        frame = np.zeros((240, 320, 3), np.uint8)
        frame[:, 160:] = (200, 30, 30)
        self.good = rgb_to_image_fields(frame, "rgb8", pad=64)  # padded rows, on purpose
        self.pub = probe.node.create_publisher(Image, IMAGE, qos.IMAGE_PUB)
        self.node = probe.node
        probe.node.create_timer(1 / 15, self.tick)

    def tick(self):
        if self.mode == "off":
            return
        f = dict(self.good)
        if self.mode == "yuv422":
            f["encoding"] = "yuv422"
        elif self.mode == "zero":
            f.update(width=0, height=0, step=0, data=b"")
        elif self.mode == "short_step":
            f["step"] = f["width"] * 3 - 3
        msg = self.Image(**f)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(msg)


def call_trigger(probe, name, node="/llada_vla_policy"):
    """`ros2 service call <node>/<name> std_srvs/srv/Trigger`."""
    from std_srvs.srv import Trigger
    client = probe.node.create_client(Trigger, f"{node}/{name}")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    wait_for(future.done, 10, what=f"~/{name} response")
    return future.result()


def set_parameters(probe, values: dict, node="/llada_vla_policy"):
    """`ros2 param set`: the SetParameters service; one SetParametersResult per name."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    client = probe.node.create_client(SetParameters, f"{node}/set_parameters")
    assert client.wait_for_service(timeout_sec=10)
    request = SetParameters.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    future = client.call_async(request)
    wait_for(future.done, 10, what="set_parameters response")
    return future.result().results


def get_parameter(probe, name, node="/llada_vla_policy"):
    """`ros2 param get`: the parameter's value (any type)."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python
    client = probe.node.create_client(GetParameters, f"{node}/get_parameters")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(GetParameters.Request(names=[name]))
    wait_for(future.done, 10, what="get_parameters response")
    return parameter_value_to_python(future.result().values[0])


def write_table(path, rows):
    np.savetxt(path, np.asarray(rows, dtype=float), delimiter=",")
    return f"scripted:{path}"


def publisher(probe, msg_type, topic, reliability="reliable", durability="volatile", depth=10):
    """A publisher with the QoS an operator tool or driver would choose; waits for a match."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    profile = QoSProfile(depth=depth,
                         reliability=getattr(ReliabilityPolicy, reliability.upper()),
                         durability=getattr(DurabilityPolicy, durability.upper()))
    pub = probe.node.create_publisher(msg_type, topic, profile)
    return pub


def wait_matched(pub, timeout=10, count=1):
    """Until ``count`` subscriptions match, plus a moment: the writer can see a match before
    the reader has matched the writer, and a sample sent in between is lost."""
    wait_for(lambda: pub.get_subscription_count() >= count, timeout,
             what="a matching subscription")
    time.sleep(0.3)


def sim_world(domain, tmp, **params):
    """The simulated world (rendered camera + xs_sdk-like driver) in its own process, with
    small frames to spare the CPU and the short time profile the node sets anyway."""
    return NodeProcess("sim_world", domain, tmp, {
        "width": 160, "height": 120, "fps": 15.0, "moving_time": 0.25, **params})


class Graph:
    """The simulated world (camera + driver) and the node in their own processes, this
    process as operator."""

    def __init__(self, domain, tmp, node_params=None, driver_params=None, instruction="go",
                 executable="policy_node", node_profile=None):
        """``node_profile``: the node's Fast DDS profile (default: the tests' one)."""
        self.domain, self.tmp, self.executable = domain, tmp, executable
        self.node_profile = node_profile
        self.probe = make_probe(domain)
        self.driver = sim_world(domain, tmp, **(driver_params or {}))
        self.node_params = {"execute": True, **FAST_START, **(node_params or {})}
        self.node = None
        self.start_node()
        if instruction:
            self.instruction = publish_instruction(self.probe, instruction)

    def start_node(self):
        self.node = NodeProcess(self.executable, self.domain, self.tmp, self.node_params,
                                profile=self.node_profile, subnet=False)
        if self.executable == "policy_node":  # a managed node says nothing until configured
            t = time.monotonic()
            wait_for(lambda: policy_statuses(self.probe, t), 30, what="the node's diagnostics")

    def restart_driver(self, **params):
        self.driver.stop()
        self.driver = sim_world(self.domain, self.tmp, **params)

    def commands(self, since=0.0):
        return [np.asarray(m.cmd, float) for m in self.probe.messages(GROUP, since)]

    def expect_moving(self, timeout=20):
        t = time.monotonic()
        wait_for(lambda: len(self.probe.messages(GROUP, t)) >= 3, timeout, what="commands")

    def close(self):
        for p in (self.node, self.driver):
            if p is not None:
                p.stop()
        self.probe.close()
