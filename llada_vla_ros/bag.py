"""rosbag2 bags without rosbag2: write and read them with the ``rosbags`` library.

- ``BagWriter``: writes real rosbag2 bags (metadata.yaml + .db3 or .mcap, version 8, with
  message definitions and type hashes) from raw CDR bytes or from messages; thread-safe.
  The policy node uses it when its ``record_to`` parameter is set.
- ``read_bag``: iterate over ``(topic, msgtype, timestamp_ns, msg)`` of a bag.
- ``load_episode``: frames of a bag (RGB image, instruction in force, recorded action) for
  offline evaluation. Actions come from recorded ``ActionChunk`` messages or, for
  teleoperated demonstrations, from joint states through forward kinematics.

Custom types (``llada_vla_ros/msg/ActionChunk`` and the Interbotix commands) are registered
from their .msg text. No rclpy here.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from rosbags.interfaces import (MessageDefinitionFormat, Nodetype, Qos, QosDurability,
                                QosHistory, QosLiveliness, QosReliability, QosTime)
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

from . import kinematics
from . import topics as T
from .images import image_msg_to_rgb

ACTION_DIM = 7
BAG_VERSION = 8  # metadata v8: read by Iron/Jazzy and later; QoS in the format Humble reads
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}

# The real interbotix_xs_msgs may be absent: its definitions are embedded here.
INTERBOTIX_MSGS = {
    "interbotix_xs_msgs/msg/JointGroupCommand": "string name\nfloat32[] cmd\n",
    "interbotix_xs_msgs/msg/JointSingleCommand": "string name\nfloat32 cmd\n",
    "interbotix_xs_msgs/msg/JointTrajectoryCommand":
        "string cmd_type\nstring name\ntrajectory_msgs/JointTrajectory traj\n",
}


class BagError(RuntimeError):
    """A bag cannot be written or used; the message names the bag and the cause."""


# --- message types ---------------------------------------------------------------------------

def find_msg_file(name: str = "ActionChunk.msg") -> Path:
    """Path of one of this package's .msg files: the source tree's ``msg/``, or
    ``<prefix>/share/llada_vla_ros/msg`` of the prefix this package is installed in (a
    colcon install space, a venv or ``--prefix``/``--user`` pip install), or the ament index."""
    here = Path(__file__).resolve()
    candidates = [here.parent.parent / "msg" / name]
    if len(here.parents) > 4:  # <prefix>/lib/pythonX.Y/site-packages/llada_vla_ros/bag.py
        candidates.append(here.parents[4] / "share" / "llada_vla_ros" / "msg" / name)
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


# --- writing ---------------------------------------------------------------------------------

def _qos(latched: bool) -> Qos:
    zero = QosTime(sec=0, nsec=0)
    return Qos(
        history=QosHistory.KEEP_LAST, depth=1 if latched else 10,
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
        deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False)


class BagWriter:
    """Writes a new rosbag2 bag; use as a context manager. All methods are thread-safe.

    >>> with BagWriter("out/bag", storage="mcap") as bag:
    ...     bag.add_topic("/llada_vla/instruction", "std_msgs/msg/String", latched=True)
    ...     bag.write_message("/llada_vla/instruction", t_ns, {"data": "pick up the cup"})
    """

    def __init__(self, path, storage: str = "sqlite3"):
        self.path = Path(path)
        if storage not in STORAGES:
            raise ValueError(f"bag storage must be one of {sorted(STORAGES)}, got {storage!r}")
        if self.path.exists():
            raise BagError(f"{self.path}: already exists; a bag is never overwritten, "
                           "choose a new path")
        self.storage = storage
        self.typestore = make_typestore()
        self._lock = threading.Lock()
        self._connections: dict = {}
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        try:
            self._writer.open()
        except WriterError as exc:
            raise BagError(f"{self.path}: cannot create bag: {exc}") from exc
        self._closed = False

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def add_topic(self, topic: str, msgtype: str, *, latched: bool = False) -> None:
        """Declare a topic; ``latched`` records it as reliable + transient local, depth 1."""
        msgtype = normalize_msgtype(msgtype)
        with self._lock:
            self._check_open()
            known = self._connections.get(topic)
            if known is not None:
                if known.msgtype != msgtype:
                    raise BagError(f"{self.path}: topic {topic} already added with type "
                                   f"{known.msgtype}, not {msgtype}")
                return
            if msgtype not in self.typestore.fielddefs:
                hint = ""
                if msgtype == T.ACTION_CHUNK_TYPE:
                    hint = " (msg/ActionChunk.msg was not found: install the package)"
                raise BagError(f"{self.path}: unknown message type {msgtype} for topic "
                               f"{topic}{hint}")
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore, offered_qos_profiles=[_qos(latched)])

    def write(self, topic: str, timestamp_ns: int, cdr_bytes) -> None:
        """Write one serialized (CDR) message, e.g. from an rclpy raw subscription."""
        with self._lock:
            self._check_open()
            conn = self._connections.get(topic)
            if conn is None:
                raise BagError(f"{self.path}: topic {topic} was not added (call add_topic)")
            self._writer.write(conn, int(timestamp_ns), bytes(cdr_bytes))

    def write_message(self, topic: str, timestamp_ns: int, msg) -> None:
        """Serialize and write a rosbags message or a dict of its fields."""
        conn = self._connections.get(topic)
        if conn is None:
            raise BagError(f"{self.path}: topic {topic} was not added (call add_topic)")
        msg = build_message(self.typestore, conn.msgtype, msg)
        self.write(topic, timestamp_ns, self.typestore.serialize_cdr(msg, conn.msgtype))

    def close(self) -> None:
        """Write metadata.yaml and close the storage file; calling twice is harmless."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._writer.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BagError(f"{self.path}: bag is closed")


# --- reading ---------------------------------------------------------------------------------

def _open_reader(path) -> Reader:
    path = Path(path)
    if path.is_file() and (path.parent / "metadata.yaml").is_file():
        path = path.parent  # a .db3/.mcap inside a bag directory
    if not path.exists():
        raise BagError(f"{path}: bag not found")
    try:
        reader = Reader(path)
        reader.open()
    except ReaderError as exc:
        raise BagError(f"{path}: not a readable rosbag2 bag: {exc}") from exc
    return reader


def describe_topics(reader: Reader) -> str:
    """``/a (pkg/msg/A, 3 msgs), ...`` for error messages."""
    items = [f"{name} ({info.msgtype}, {info.msgcount} msgs)"
             for name, info in sorted(reader.topics.items())]
    return ", ".join(items) if items else "none"


def _register_types(store, connections, path) -> None:
    """Make every connection's type deserializable; raise BagError naming what is missing."""
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


def read_bag(path, topics=None) -> Iterator[tuple]:
    """Yield ``(topic, msgtype, timestamp_ns, msg)`` for every message (or only ``topics``).

    Messages are rosbags dataclasses (image data etc. as numpy arrays). An empty bag yields
    nothing; a selected topic of unknown type raises BagError.
    """
    reader = _open_reader(path)
    try:
        conns = [c for c in reader.connections if topics is None or c.topic in set(topics)]
        if not conns:
            return
        store = make_typestore(custom=False)
        _register_types(store, conns, path)
        for conn, stamp, raw in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, stamp, store.deserialize_cdr(raw, conn.msgtype)
    finally:
        reader.close()


# --- episodes --------------------------------------------------------------------------------

@dataclass
class Frame:
    stamp_ns: int           # image header stamp (bag time when the header has none)
    bag_ns: int             # time the image was recorded
    image: np.ndarray       # HxWx3 uint8 RGB
    instruction: str        # instruction in force ("" when none was published yet)
    action: np.ndarray      # (7,) recorded action in robot units


@dataclass
class Episode:
    bag: str
    action_source: str      # "action_chunk" | "joint_states"
    frames: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def stamps_ns(self) -> np.ndarray:
        return np.array([f.stamp_ns for f in self.frames], dtype=np.int64)

    @property
    def actions(self) -> np.ndarray:
        return np.array([f.action for f in self.frames], dtype=np.float32).reshape(-1, ACTION_DIM)

    @property
    def instructions(self) -> list:
        return [f.instruction for f in self.frames]


def _stamp_ns(msg, bag_ns: int) -> int:
    stamp = msg.header.stamp
    ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return ns if ns > 0 else int(bag_ns)


def _gripper_opening(names: list, positions) -> Optional[tuple]:
    """('finger', 0..1) from left_finger, ('joint', raw angle) from gripper, or None."""
    if "left_finger" in names:
        return "finger", kinematics.finger_opening(positions[names.index("left_finger")])
    if "gripper" in names:
        return "joint", float(positions[names.index("gripper")])
    return None


def _fk_actions(frame_stamps, js_stamps, js_q, js_grip, frame_bag_ns=None,
                gripper_commands=()) -> list:
    """Delta-EE actions between consecutive frames; None where no pose is known. The gripper
    is the last recorded gripper command (pwm: +effort = open 1, -effort = closed 0) at the
    next frame (bag time); before any command, the normalised opening there. Commands are
    what the operator asked: the opening of fingers closed on an object stays above half
    for objects wider than half the travel."""
    order = np.argsort(js_stamps, kind="stable")
    ts, q, g = js_stamps[order].astype(np.float64), js_q[order], js_grip[order]
    cmd_ns = np.array([t for t, _ in gripper_commands], dtype=np.int64)
    cmd_open = [v for _, v in gripper_commands]
    poses, grips = [], []
    for s in frame_stamps:
        if s < ts[0] or s > ts[-1]:
            poses.append(None)
            grips.append(None)
            continue
        qi = np.array([np.interp(s, ts, q[:, j]) for j in range(q.shape[1])])
        poses.append(kinematics.fk(qi))
        grips.append(float(np.interp(s, ts, g)))
    actions = []
    for i in range(len(frame_stamps)):
        if i + 1 >= len(frame_stamps) or poses[i] is None or poses[i + 1] is None:
            actions.append(None)
            continue
        T0, T1 = poses[i], poses[i + 1]
        droll, dpitch, dyaw = kinematics.matrix_to_euler_sxyz(T1[:3, :3] @ T0[:3, :3].T)
        dp = T1[:3, 3] - T0[:3, 3]
        grip = grips[i + 1]
        if gripper_commands and frame_bag_ns is not None:
            k = int(np.searchsorted(cmd_ns, frame_bag_ns[i + 1], side="right")) - 1
            grip = cmd_open[k] if k >= 0 else grip
        actions.append(np.array([*dp, droll, dpitch, dyaw, grip], dtype=np.float32))
    return actions


def load_episode(path, *, image_topic: str = T.IMAGE, instruction_topic: str = T.INSTRUCTION,
                 robot_name: str = T.ROBOT_NAME, joint_states_topic: Optional[str] = None,
                 action_topic: str = T.ACTION_CHUNK, action_source: str = "auto",
                 hz: Optional[float] = None, max_frames: Optional[int] = None,
                 default_instruction: str = "") -> Episode:
    """Frames of a bag paired with the instruction in force and the recorded action.

    ``action_source``: ``action_chunk`` (first action of the latest chunk whose header stamp
    equals or precedes the image stamp), ``joint_states`` (delta EE pose between this frame
    and the next, by forward kinematics, Bridge convention; gripper = the gripper command in
    force at the next frame when the bag has JointSingleCommand 'gripper' messages, else
    the normalised opening there), or ``auto`` (chunks when the bag has any, else joint
    states).
    The instruction in force is the latest one recorded before the image (bag time).
    ``hz`` keeps at most that many frames per second (e.g. the 5 Hz control rate).
    Frames without an action (before the first chunk or joint state, the last frame of a
    joint-state episode) are left out. Only the kept images are decoded.
    """
    joint_states_topic = joint_states_topic or T.robot_topic(robot_name, T.JOINT_STATES)
    reader = _open_reader(path)
    try:
        if reader.message_count == 0:
            raise BagError(f"{path}: bag is empty (no messages)")
        counts = {name: info.msgcount for name, info in reader.topics.items()}
        if counts.get(image_topic, 0) == 0:
            raise BagError(f"{path}: no messages on the image topic {image_topic}; topics in "
                           f"the bag: {describe_topics(reader)}")
        source = _pick_action_source(path, reader, counts, action_source, action_topic,
                                     joint_states_topic)
        action_or_js = action_topic if source == "action_chunk" else joint_states_topic
        expected = {image_topic: T.IMAGE_TYPE, instruction_topic: T.INSTRUCTION_TYPE,
                    action_or_js: (T.ACTION_CHUNK_TYPE if source == "action_chunk"
                                   else T.JOINT_STATES_TYPE)}
        single_topic = T.robot_topic(robot_name, T.JOINT_SINGLE_COMMAND)
        if source == "joint_states":
            expected[single_topic] = T.JOINT_SINGLE_COMMAND_TYPE
        conns = [c for c in reader.connections if c.topic in expected]
        for conn in conns:
            if conn.msgtype != expected[conn.topic]:
                raise BagError(f"{path}: topic {conn.topic} has type {conn.msgtype}; "
                               f"expected {expected[conn.topic]}")
        store = make_typestore(custom=False)
        _register_types(store, conns, path)
        scan = _scan(reader, store, conns, image_topic, instruction_topic, action_or_js,
                     source, path, single_topic)
        chosen = _choose_frames(scan, source, hz, max_frames)
        images = _decode_images(reader, store, conns, image_topic, chosen, path)
    finally:
        reader.close()
    instr_ns = np.array([t for t, _ in scan["instructions"]], dtype=np.int64)
    episode = Episode(bag=str(path), action_source=source)
    for (_, stamp, bag_ns), action in chosen:
        k = int(np.searchsorted(instr_ns, bag_ns, side="right")) - 1
        text = scan["instructions"][k][1] if k >= 0 else default_instruction
        episode.frames.append(Frame(stamp, bag_ns, images[(stamp, bag_ns)], text, action))
    return episode


def add_episode_arguments(parser, hz: Optional[float] = None,
                          action_source: str = "auto") -> None:
    """The ``load_episode`` options as command-line flags (llada-vla-eval, llada-vla-train);
    ``episode_options(args)`` turns them back into keyword arguments."""
    parser.add_argument("--image-topic", default=T.IMAGE)
    parser.add_argument("--instruction-topic", default=T.INSTRUCTION)
    parser.add_argument("--robot-name", default=T.ROBOT_NAME,
                        help="namespace of the Interbotix driver (joint states topic)")
    parser.add_argument("--joint-states-topic", default=None,
                        help="default: /<robot-name>/joint_states")
    parser.add_argument("--action-topic", default=T.ACTION_CHUNK)
    parser.add_argument("--action-source", choices=("auto", "action_chunk", "joint_states"),
                        default=action_source,
                        help="recorded ActionChunk messages, joint states (FK: the motion "
                             "the arm made) or auto (chunks when the bag has any); default "
                             f"{action_source}")
    parser.add_argument("--hz", type=float, default=hz,
                        help="keep at most this many frames per second (e.g. 5, the control "
                             f"rate; default {hz or 'all frames'})")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="use at most N frames per bag")
    parser.add_argument("--instruction", default="",
                        help="instruction for frames before any recorded instruction")


def episode_options(args) -> dict:
    """``load_episode`` keyword arguments from flags added by ``add_episode_arguments``."""
    return dict(image_topic=args.image_topic, instruction_topic=args.instruction_topic,
                robot_name=args.robot_name, joint_states_topic=args.joint_states_topic,
                action_topic=args.action_topic, action_source=args.action_source,
                hz=args.hz, max_frames=args.max_frames, default_instruction=args.instruction)


def _pick_action_source(path, reader, counts, action_source, action_topic, js_topic) -> str:
    if action_source not in ("auto", "action_chunk", "joint_states"):
        raise ValueError(f"action_source must be auto, action_chunk or joint_states, "
                         f"got {action_source!r}")
    have_chunks, have_js = counts.get(action_topic, 0) > 0, counts.get(js_topic, 0) > 0
    if action_source == "auto":
        if have_chunks:
            return "action_chunk"
        if have_js:
            return "joint_states"
        raise BagError(f"{path}: no recorded actions: neither {action_topic} nor {js_topic} "
                       f"has messages; topics in the bag: {describe_topics(reader)}")
    topic, present = ((action_topic, have_chunks) if action_source == "action_chunk"
                      else (js_topic, have_js))
    if not present:
        raise BagError(f"{path}: no messages on {topic} (action source {action_source}); "
                       f"topics in the bag: {describe_topics(reader)}")
    return action_source


def _scan(reader, store, conns, image_topic, instruction_topic, action_topic, source,
          path, single_topic: str = "") -> dict:
    """First pass: image stamps, instructions, and chunks or joint states (no pixels)."""
    scan = {"images": [], "instructions": [], "chunks": [], "js": [], "gripper_commands": []}
    for conn, bag_ns, raw in reader.messages(connections=conns):
        msg = store.deserialize_cdr(raw, conn.msgtype)
        if conn.topic == image_topic:
            scan["images"].append((len(scan["images"]), _stamp_ns(msg, bag_ns), bag_ns))
        elif conn.topic == instruction_topic:
            scan["instructions"].append((bag_ns, str(msg.data)))
        elif conn.topic == single_topic:
            if msg.name == "gripper" and msg.cmd != 0:
                scan["gripper_commands"].append((bag_ns, 1.0 if msg.cmd > 0 else 0.0))
        elif source == "action_chunk":
            actions = np.asarray(msg.actions, dtype=np.float32)
            if msg.action_dim != ACTION_DIM or actions.size < ACTION_DIM:
                raise BagError(f"{path}: ActionChunk at {bag_ns} ns has action_dim "
                               f"{msg.action_dim} and {actions.size} values; expected "
                               f"{ACTION_DIM}-dim actions")
            scan["chunks"].append((_stamp_ns(msg, bag_ns), actions[:ACTION_DIM].copy()))
        else:
            names = list(msg.name)
            if all(j in names for j in kinematics.ARM_JOINTS):
                q = [float(msg.position[names.index(j)]) for j in kinematics.ARM_JOINTS]
                scan["js"].append((_stamp_ns(msg, bag_ns), q,
                                   _gripper_opening(names, msg.position)))
    if source == "joint_states" and not scan["js"]:
        raise BagError(f"{path}: no joint state on {action_topic} names all arm joints "
                       f"{', '.join(kinematics.ARM_JOINTS)}")
    for key in scan:
        scan[key].sort(key=lambda item: item[1] if key == "images" else item[0])
    return scan


def _subsample(images: list, hz: Optional[float]) -> list:
    """Keep images at least ~1/hz apart (10 % tolerance for camera jitter)."""
    if not hz:
        return images
    period, kept = 1e9 / hz, []
    for image in images:
        if not kept or image[1] >= kept[-1][1] + 0.9 * period:
            kept.append(image)
    return kept


def _choose_frames(scan: dict, source: str, hz, max_frames) -> list:
    """[((index, stamp_ns, bag_ns), action)] of the frames that have a recorded action."""
    images = _subsample(scan["images"], hz)
    stamps = np.array([s for _, s, _ in images], dtype=np.int64)
    if source == "action_chunk":
        chunk_ns = np.array([t for t, _ in scan["chunks"]], dtype=np.int64)
        idx = np.searchsorted(chunk_ns, stamps, side="right") - 1
        actions = [scan["chunks"][i][1] if i >= 0 else None for i in idx]
    else:
        js = scan["js"]
        actions = _fk_actions(stamps, np.array([t for t, _, _ in js], dtype=np.int64),
                              np.array([q for _, q, _ in js], dtype=np.float64),
                              _normalised_gripper(js),
                              np.array([b for _, _, b in images], dtype=np.int64),
                              scan["gripper_commands"])
    chosen = [(image, a) for image, a in zip(images, actions) if a is not None]
    return chosen if max_frames is None else chosen[:max_frames]


def _decode_images(reader, store, conns, image_topic, chosen, path) -> dict:
    """Second pass: RGB arrays of the chosen images, keyed by (stamp_ns, bag_ns)."""
    wanted = {(stamp, bag_ns) for (_, stamp, bag_ns), _ in chosen}
    images = {}
    image_conns = [c for c in conns if c.topic == image_topic]
    if not wanted:
        return images
    for conn, bag_ns, raw in reader.messages(connections=image_conns):
        msg = store.deserialize_cdr(raw, conn.msgtype)
        key = (_stamp_ns(msg, bag_ns), bag_ns)
        if key in wanted and key not in images:
            try:
                images[key] = image_msg_to_rgb(msg)
            except ValueError as exc:
                raise BagError(f"{path}: image on {image_topic} at {bag_ns} ns: {exc}") from exc
            if len(images) == len(wanted):
                break
    return images


def _normalised_gripper(js: list) -> np.ndarray:
    """Opening in [0, 1]: fingers by their travel, the gripper joint by its range seen."""
    kinds = {g[0] for _, _, g in js if g is not None}
    values = np.array([g[1] if g is not None else np.nan for _, _, g in js], dtype=np.float64)
    if "finger" in kinds or not kinds:
        return np.nan_to_num(values, nan=1.0)
    lo, hi = np.nanmin(values), np.nanmax(values)
    if hi - lo < 1e-6:
        return np.ones_like(values)  # never moved: Bridge's default, open
    return np.nan_to_num((values - lo) / (hi - lo), nan=1.0)
