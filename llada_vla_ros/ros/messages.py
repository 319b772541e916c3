"""The policy node's outgoing messages, built from the core library's values (no state)."""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped

from llada_vla_ros import kinematics
from llada_vla_ros.control.loop import WAITING
from llada_vla_ros.msg import ActionChunk


def action_chunk(chunk, stamp, instruction: str, frame_id: str) -> ActionChunk:
    """policy.ActionChunk -> llada_vla_ros/ActionChunk (stamped with its image's stamp)."""
    msg = ActionChunk()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.instruction = instruction
    msg.horizon, msg.action_dim = chunk.actions.shape
    msg.actions = chunk.actions.astype(np.float32).ravel().tolist()
    msg.confidence = np.asarray(chunk.confidence, np.float32).ravel().tolist()
    msg.inference_ms = float(chunk.inference_ms)
    msg.model_id = chunk.model_id
    return msg


def target_pose(T: np.ndarray, stamp, frame_id: str) -> PoseStamped:
    """A 4x4 target pose -> PoseStamped."""
    pose = PoseStamped()
    pose.header.stamp, pose.header.frame_id = stamp, frame_id
    x, y, z, qx, qy, qz, qw = kinematics.pose_to_xyz_quat(T)
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = x, y, z
    o = pose.pose.orientation
    o.x, o.y, o.z, o.w = qx, qy, qz, qw
    return pose


def policy_diagnostics(values: dict, error: bool, name: str, hardware_id: str,
                       stamp) -> DiagnosticArray:
    """The node's status: ERROR on ``error`` (estop, no policy), WARN while it holds for a
    reason other than waiting for a chunk, OK otherwise; the hold reason as the message."""
    reason = values["hold_reason"]
    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    if error:
        status.level = DiagnosticStatus.ERROR
    elif reason and reason != WAITING:
        status.level = DiagnosticStatus.WARN
    else:
        status.level = DiagnosticStatus.OK
    status.message = reason or "executing"
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array
