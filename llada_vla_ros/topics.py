"""Topic names and message types of the policy node, in one place (no rclpy).

Fixed topics are absolute. The Interbotix driver's topics live under ``/<robot_name>``;
build them with ``robot_topic``. Defaults match ``config/policy.yaml``, realsense2_camera
>= 4.55.1 and interbotix_xs_sdk. The launch files use this module too (the install space
that lets ``ros2 launch`` find them also puts the package on PYTHONPATH).
"""
from __future__ import annotations

# --- outputs of the policy node (relative to its namespace; these are the names without one)
ACTION_CHUNK = "/llada_vla/action_chunk"
TARGET_POSE = "/llada_vla/target_pose"
DIAGNOSTICS = "/diagnostics"

# --- inputs (defaults; the node reads the real names from its parameters) ---------------
INSTRUCTION = "/llada_vla/instruction"
ESTOP = "/llada_vla/estop"
CAMERA_NAMESPACE = "camera"
CAMERA_NAME = "camera"
COLOR_IMAGE = "color/image_raw"  # relative to /<camera_namespace>/<camera_name>
IMAGE = "/camera/camera/color/image_raw"

# --- Interbotix driver, relative to /<robot_name> ----------------------------------------
ROBOT_NAME = "wx250s"
JOINT_STATES = "joint_states"
JOINT_GROUP_COMMAND = "commands/joint_group"
JOINT_SINGLE_COMMAND = "commands/joint_single"

# --- message types (rosbag2 names) -------------------------------------------------------
ACTION_CHUNK_TYPE = "llada_vla_ros/msg/ActionChunk"
TARGET_POSE_TYPE = "geometry_msgs/msg/PoseStamped"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"  # image_transport's compressed
INSTRUCTION_TYPE = "std_msgs/msg/String"
ESTOP_TYPE = "std_msgs/msg/Bool"
JOINT_STATES_TYPE = "sensor_msgs/msg/JointState"
JOINT_GROUP_COMMAND_TYPE = "interbotix_xs_msgs/msg/JointGroupCommand"
JOINT_SINGLE_COMMAND_TYPE = "interbotix_xs_msgs/msg/JointSingleCommand"

OUTPUT_TOPICS = {ACTION_CHUNK: ACTION_CHUNK_TYPE, TARGET_POSE: TARGET_POSE_TYPE,
                 DIAGNOSTICS: DIAGNOSTICS_TYPE}  # what the policy node publishes (fixed names)


def relative(topic: str) -> str:
    """``/llada_vla/x`` -> ``llada_vla/x``: the same topic for a node without a namespace,
    ``/<namespace>/llada_vla/x`` for a node in one."""
    return topic.lstrip("/")


def in_namespace(namespace: str, topic: str) -> str:
    """The absolute name ``relative(topic)`` resolves to in ``namespace``."""
    ns = namespace.strip("/")
    return f"/{ns}/{relative(topic)}" if ns else "/" + relative(topic)


def robot_topic(robot_name: str, name: str) -> str:
    """``/<robot_name>/<name>``; an empty robot name gives ``/<name>``."""
    robot_name = robot_name.strip("/")
    return f"/{robot_name}/{name}" if robot_name else f"/{name}"


def camera_image_topic(camera_namespace: str = CAMERA_NAMESPACE,
                       camera_name: str = CAMERA_NAME) -> str:
    """Color topic of realsense2_camera: ``/<namespace>/<name>/color/image_raw``."""
    parts = [p.strip("/") for p in (camera_namespace, camera_name) if p.strip("/")]
    return "/" + "/".join(parts + [COLOR_IMAGE])


def image_transport_topic(image_topic: str, transport: str = "raw") -> tuple:
    """(topic, message type) of a camera stream under an image_transport transport: the
    raw Image on ``image_topic``, or CompressedImage on ``<image_topic>/compressed``."""
    if transport == "compressed":
        return f"{image_topic.rstrip('/')}/compressed", COMPRESSED_IMAGE_TYPE
    if transport == "raw":
        return image_topic, IMAGE_TYPE
    raise ValueError(f"image_transport must be raw or compressed, got {transport!r}")


def recorded_topics(robot_name: str = ROBOT_NAME, image_topic: str = IMAGE,
                    instruction_topic: str = INSTRUCTION, namespace: str = "",
                    image_transport: str = "raw") -> dict:
    """Topic -> message type of everything worth recording on the robot (the policy's own
    outputs in its ``namespace``; the camera under its ``image_transport``)."""
    image = image_transport_topic(image_topic, image_transport)
    return {
        image[0]: image[1],
        instruction_topic: INSTRUCTION_TYPE,
        robot_topic(robot_name, JOINT_STATES): JOINT_STATES_TYPE,
        robot_topic(robot_name, JOINT_GROUP_COMMAND): JOINT_GROUP_COMMAND_TYPE,
        robot_topic(robot_name, JOINT_SINGLE_COMMAND): JOINT_SINGLE_COMMAND_TYPE,
        in_namespace(namespace, ACTION_CHUNK): ACTION_CHUNK_TYPE,
        in_namespace(namespace, TARGET_POSE): TARGET_POSE_TYPE,
        DIAGNOSTICS: DIAGNOSTICS_TYPE,
    }
