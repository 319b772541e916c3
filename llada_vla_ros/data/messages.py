"""Message types for bags: the custom .msg definitions, typestores, messages from dicts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.interfaces import MessageDefinitionFormat, Nodetype
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

from .. import topics as T
from . import BagError

# The real interbotix_xs_msgs may be absent: its definitions are embedded here.
INTERBOTIX_MSGS = {
    "interbotix_xs_msgs/msg/JointGroupCommand": "string name\nfloat32[] cmd\n",
    "interbotix_xs_msgs/msg/JointSingleCommand": "string name\nfloat32 cmd\n",
    "interbotix_xs_msgs/msg/JointTrajectoryCommand":
        "string cmd_type\nstring name\ntrajectory_msgs/JointTrajectory traj\n",
}


def find_msg_file(name: str = "ActionChunk.msg") -> Path:
    """Path of one of this package's .msg files: the source tree's ``msg/``, or
    ``<prefix>/share/llada_vla_ros/msg`` of the prefix this package is installed in (a
    colcon install space, a venv or ``--prefix``/``--user`` pip install), or the ament index."""
    here = Path(__file__).resolve()  # <root>/llada_vla_ros/data/messages.py
    candidates = [here.parents[2] / "msg" / name]
    if len(here.parents) > 5:  # <prefix>/lib/pythonX.Y/site-packages/llada_vla_ros/data/...
        candidates.append(here.parents[5] / "share" / "llada_vla_ros" / "msg" / name)
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("llada_vla_ros")) / "msg" / name)
    except Exception:  # ament_index missing or the package is not installed
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{name} not found (looked in: {', '.join(str(p) for p in candidates)})")


def custom_msg_definitions() -> dict:
    """Type name -> .msg text of the custom types this package knows."""
    defs = dict(INTERBOTIX_MSGS)
    try:
        defs[T.ACTION_CHUNK_TYPE] = find_msg_file("ActionChunk.msg").read_text()
    except FileNotFoundError:
        pass  # reading still works when the bag stores the definition
    return defs


def make_typestore(custom: bool = True):
    """A fresh rosbags typestore (ROS 2 Humble base types) with the custom types registered."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    if custom:
        for name, text in custom_msg_definitions().items():
            store.register(get_types_from_msg(text, name))
    return store


def register_types(store, connections, path) -> None:
    """Make every connection's type deserializable; raise BagError naming what is missing.

    The definition stored in the bag wins; a bag without one (Humble's sqlite3 bags) falls
    back on the typestore's base types and this package's custom definitions."""
    known = custom_msg_definitions()
    for conn in connections:
        if conn.msgtype in store.fielddefs:
            continue
        text, fmt = conn.msgdef.data, conn.msgdef.format
        try:
            if text and fmt == MessageDefinitionFormat.IDL:
                types = get_types_from_idl(text)
            elif text:
                types = get_types_from_msg(text, conn.msgtype)
            elif conn.msgtype in known:
                types = get_types_from_msg(known[conn.msgtype], conn.msgtype)
            else:
                raise BagError(
                    f"{path}: unknown message type {conn.msgtype} on topic {conn.topic}: the "
                    "bag stores no definition for it and llada_vla_ros does not know it")
            store.register({k: v for k, v in types.items() if k not in store.fielddefs})
        except BagError:
            raise
        except Exception as exc:
            raise BagError(f"{path}: cannot use the definition of {conn.msgtype} on topic "
                           f"{conn.topic}: {exc}") from exc


def normalize_msgtype(msgtype: str) -> str:
    """``pkg/Type`` or ``pkg/msg/Type`` -> ``pkg/msg/Type``."""
    parts = msgtype.strip("/").split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else "/".join(parts)


_NUMPY_DTYPES = {
    "bool": np.bool_, "byte": np.uint8, "octet": np.uint8, "char": np.uint8, "uint8": np.uint8,
    "int8": np.int8, "uint16": np.uint16, "int16": np.int16, "uint32": np.uint32,
    "int32": np.int32, "uint64": np.uint64, "int64": np.int64, "float32": np.float32,
    "float64": np.float64,
}


def build_message(store, msgtype: str, value):
    """A rosbags message of ``msgtype`` from a (nested) dict; missing fields get defaults."""
    if not isinstance(value, dict):
        return value
    _, fields = store.fielddefs[msgtype]
    unknown = set(value) - {name for name, _ in fields}
    if unknown:
        raise ValueError(f"{msgtype} has no field(s) {sorted(unknown)}")
    kwargs = {name: _field_value(store, desc, value.get(name, _MISSING))
              for name, desc in fields}
    return store.types[msgtype](**kwargs)


_MISSING = object()


def _field_value(store, desc, value):
    nodetype, detail = desc
    if nodetype == Nodetype.BASE:
        typ = detail[0]
        if value is _MISSING:
            return "" if typ in ("string", "wstring") else (False if typ == "bool" else 0)
        return value
    if nodetype == Nodetype.NAME:
        return build_message(store, detail, {} if value is _MISSING else value)
    (sub_type, sub_detail), length = detail
    if value is _MISSING:
        value = []
        if nodetype == Nodetype.ARRAY:
            value = [_field_value(store, (sub_type, sub_detail), _MISSING)] * length
    if sub_type == Nodetype.BASE and sub_detail[0] in _NUMPY_DTYPES:
        return np.asarray(value, dtype=_NUMPY_DTYPES[sub_detail[0]])
    return [_field_value(store, (sub_type, sub_detail), v) for v in value]


def header_stamp_ns(raw) -> int:
    """``header.stamp`` in ns of a CDR message whose first field is a std_msgs/Header
    (Image, CompressedImage, JointState, ActionChunk), read without deserializing the rest:
    after the 4-byte encapsulation header come int32 sec and uint32 nanosec."""
    order = "little" if raw[1] & 1 else "big"  # encapsulation kind: CDR_LE = 1, CDR_BE = 0
    sec = int.from_bytes(raw[4:8], order, signed=True)
    return sec * 1_000_000_000 + int.from_bytes(raw[8:12], order)
