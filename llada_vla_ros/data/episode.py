"""Frames of a bag for offline evaluation and training: the image, the instruction in force
and the recorded action, streamed one decoded image at a time.

``open_episode(path, ...)`` reads everything but the pixels (image stamps, instructions,
action chunks or joint states) and decides which frames have an action (``labels``);
iterating it decodes only those images, one at a time, so an hour-long bag needs the
memory of one frame plus a few numbers per message. ``load_episode`` keeps every frame.
Images are sensor_msgs/Image or sensor_msgs/CompressedImage (JPEG/PNG, image_transport).
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Optional

import numpy as np

from .. import kinematics
from .. import topics as T
from ..images import ImageConversionError, compressed_msg_to_rgb, image_msg_to_rgb
from . import BagError
from .labels import (ACTION_DIM, GRIPPER_LABELS, chunk_actions, fk_actions, gap_limit,
                     gripper_opening, normalised_gripper)
from .messages import header_stamp_ns, make_typestore, register_types
from .reader import BagReader

IMAGE_TYPES = (T.IMAGE_TYPE, T.COMPRESSED_IMAGE_TYPE)
ACTION_SOURCES = ("auto", "action_chunk", "joint_states")
MAX_GAP_FACTOR = 1.5


@dataclass
class Frame:
    stamp_ns: int           # image header stamp (bag time when the header has none)
    bag_ns: int             # time the image was recorded
    image: np.ndarray       # HxWx3 uint8 RGB
    instruction: str        # instruction in force ("" when none was published yet)
    action: np.ndarray      # (7,) recorded action in robot units
    segment: int = 0        # frames of one segment follow each other without a gap
    state: Optional[np.ndarray] = None  # robot state at the frame (joint-state bags)


@dataclass
class Episode:
    bag: str
    action_source: str      # "action_chunk" | "joint_states"
    frames: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)  # reason -> frames left out for it
    notes: list = field(default_factory=list)    # how the bag was opened, when not plainly

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)

    @property
    def stamps_ns(self) -> np.ndarray:
        return np.array([f.stamp_ns for f in self.frames], dtype=np.int64)

    @property
    def actions(self) -> np.ndarray:
        return np.array([f.action for f in self.frames], dtype=np.float32).reshape(-1, ACTION_DIM)

    @property
    def instructions(self) -> list:
        return [f.instruction for f in self.frames]


class _Planned(NamedTuple):
    index: int              # position of the image among the image topic's messages
    stamp_ns: int
    bag_ns: int
    instruction: str
    action: np.ndarray
    segment: int
    state: Optional[np.ndarray] = None


class EpisodeStream:
    """The frames of one bag that have a recorded action; iterate to decode them in order.

    Construction reads the bag once without pixels (clear errors come here); ``len()`` is
    the number of frames; ``skipped`` counts the frames left out per reason; ``notes`` says
    how the bag was opened. Each iteration reads the images again, one at a time.
    """

    def __init__(self, path, *, image_topic: str = T.IMAGE,
                 instruction_topic: str = T.INSTRUCTION, robot_name: str = T.ROBOT_NAME,
                 joint_states_topic: Optional[str] = None, action_topic: str = T.ACTION_CHUNK,
                 action_source: str = "auto", hz: Optional[float] = None,
                 max_frames: Optional[int] = None, default_instruction: str = "",
                 max_gap_factor: float = MAX_GAP_FACTOR, gripper_label: str = "step"):
        if action_source not in ACTION_SOURCES:
            raise ValueError(f"action_source must be one of {', '.join(ACTION_SOURCES)}, "
                             f"got {action_source!r}")
        if not max_gap_factor > 1:
            raise ValueError(f"max_gap_factor must be > 1, got {max_gap_factor}")
        if gripper_label not in GRIPPER_LABELS:
            raise ValueError(f"gripper_label must be one of {', '.join(GRIPPER_LABELS)}, "
                             f"got {gripper_label!r}")
        self.gripper_label = gripper_label
        self.bag = str(path)
        self.image_topic = image_topic
        js_topic = joint_states_topic or T.robot_topic(robot_name, T.JOINT_STATES)
        with BagReader(path) as bag:
            self.notes = list(bag.notes)
            if bag.message_count == 0:
                raise BagError(f"{path}: bag is empty (no messages)")
            counts = {name: info.count for name, info in bag.topics.items()}
            if counts.get(image_topic, 0) == 0:
                raise BagError(f"{path}: no messages on the image topic {image_topic}; "
                               f"topics in the bag: {bag.describe_topics()}")
            self.action_source = _pick_action_source(path, bag, counts, action_source,
                                                     action_topic, js_topic)
            label_topic = action_topic if self.action_source == "action_chunk" else js_topic
            expected = {image_topic: IMAGE_TYPES, instruction_topic: (T.INSTRUCTION_TYPE,),
                        label_topic: ((T.ACTION_CHUNK_TYPE,) if label_topic == action_topic
                                      else (T.JOINT_STATES_TYPE,))}
            single_topic = T.robot_topic(robot_name, T.JOINT_SINGLE_COMMAND)
            if self.action_source == "joint_states":  # the gripper label: its commands
                expected[single_topic] = (T.JOINT_SINGLE_COMMAND_TYPE,)
            conns = bag.connections(set(expected))
            for conn in conns:
                if conn.msgtype not in expected[conn.topic]:
                    raise BagError(f"{path}: topic {conn.topic} has type {conn.msgtype}; "
                                   f"expected {' or '.join(expected[conn.topic])}")
            store = make_typestore(custom=False)
            register_types(store, conns, path)
            scan = _scan(bag, store, image_topic, instruction_topic, label_topic,
                         single_topic, self.action_source, path)
        self.skipped: dict = {}
        self._planned = self._plan(scan, label_topic, hz, max_gap_factor,
                                   default_instruction)[:max_frames]

    def __len__(self) -> int:
        return len(self._planned)

    @property
    def labels(self) -> list:
        """The frames without their pixels (``instruction``, ``action``, ``segment``,
        stamps), in order: what a dataset needs to choose its windows before decoding."""
        return list(self._planned)

    def __iter__(self) -> Iterator[Frame]:
        planned = iter(self._planned)
        want = next(planned, None)
        if want is None:
            return
        with BagReader(self.bag) as bag:
            store = make_typestore(custom=False)
            register_types(store, bag.connections({self.image_topic}), self.bag)
            for index, (_, msgtype, bag_ns, raw) in enumerate(bag.messages({self.image_topic})):
                if index != want.index:
                    continue
                yield Frame(want.stamp_ns, bag_ns, self._decode(store, msgtype, raw, bag_ns),
                            want.instruction, want.action, want.segment, want.state)
                want = next(planned, None)
                if want is None:
                    return
        raise BagError(f"{self.bag}: the image topic changed while reading it")

    def load(self) -> Episode:
        """Every frame in memory."""
        return Episode(self.bag, self.action_source, list(self), dict(self.skipped),
                       list(self.notes))

    def _decode(self, store, msgtype: str, raw, bag_ns: int) -> np.ndarray:
        msg = store.deserialize_cdr(raw, msgtype)
        try:
            if msgtype == T.COMPRESSED_IMAGE_TYPE:
                return compressed_msg_to_rgb(msg)
            return image_msg_to_rgb(msg)
        except ImageConversionError as exc:
            raise BagError(f"{self.bag}: image on {self.image_topic} at {bag_ns} ns: "
                           f"{exc}") from exc

    def _plan(self, scan: dict, label_topic: str, hz, max_gap_factor: float,
              default_instruction: str) -> list:
        """The frames to decode: subsampled to ``hz``, with an action, in segments."""
        kept = _subsample(scan["image_ns"], hz)
        frame_ns = scan["image_ns"][kept]
        step = np.diff(frame_ns)
        limit = gap_limit(max_gap_factor, frame_ns)
        breaks = np.concatenate([[True], (step > limit) | (step <= 0)])
        states = [None] * len(frame_ns)
        if self.action_source == "action_chunk":
            actions, reasons = chunk_actions(
                frame_ns, scan["chunk_ns"], scan["chunks"],
                gap_limit(max_gap_factor, scan["chunk_ns"], frame_ns), label_topic)
        else:
            next_ok = np.concatenate([~breaks[1:], [False]])
            actions, reasons, states = fk_actions(
                frame_ns, next_ok, scan["js_ns"], scan["js_q"], scan["js_grip"],
                gap_limit(max_gap_factor, scan["js_ns"], frame_ns), label_topic,
                scan["image_bag_ns"][kept], scan["gripper_commands"], self.gripper_label)
        instr_ns = np.array([t for t, _ in scan["instructions"]], dtype=np.int64)
        planned, segment, dropped = [], -1, True
        for k, i in enumerate(kept):
            if actions[k] is None:
                self.skipped[reasons[k]] = self.skipped.get(reasons[k], 0) + 1
                dropped = True
                continue
            if breaks[k] or dropped:
                segment, dropped = segment + 1, False
            bag_ns = int(scan["image_bag_ns"][i])
            j = int(np.searchsorted(instr_ns, bag_ns, side="right")) - 1
            text = scan["instructions"][j][1] if j >= 0 else default_instruction
            planned.append(_Planned(int(i), int(frame_ns[k]), bag_ns, text, actions[k],
                                    segment, states[k]))
        return planned


def open_episode(path, **options) -> EpisodeStream:
    """The frames of a bag, to stream (see EpisodeStream; options as load_episode)."""
    return EpisodeStream(path, **options)


def load_episode(path, **options) -> Episode:
    """Frames of a bag paired with the instruction in force and the recorded action.

    ``action_source``: ``action_chunk`` (first action of the latest chunk whose header stamp
    equals or precedes the image stamp), ``joint_states`` (delta EE pose between this frame
    and the next, by forward kinematics, Bridge convention; gripper = the gripper command
    given during the step when the bag has JointSingleCommand 'gripper' messages, else
    the normalised opening at the next frame; ``gripper_label="ahead"``: the command in
    force at the next frame, see ``labels``), or ``auto`` (chunks when the bag has any, else
    joint states).
    The instruction in force is the latest one recorded before the image (bag time).
    ``hz`` keeps at most that many frames per second (e.g. the 5 Hz control rate).
    Frames without an action (before the first chunk, at a gap in a topic the action uses,
    the last frame of a joint-state episode) are left out and counted in ``skipped``; a gap
    is an interval above ``max_gap_factor`` x the stream's median interval (and the frame
    period). Only the kept images are decoded.
    """
    return EpisodeStream(path, **options).load()


def _pick_action_source(path, bag, counts, action_source, action_topic, js_topic) -> str:
    have_chunks, have_js = counts.get(action_topic, 0) > 0, counts.get(js_topic, 0) > 0
    if action_source == "auto":
        if have_chunks:
            return "action_chunk"
        if have_js:
            return "joint_states"
        raise BagError(f"{path}: no recorded actions: neither {action_topic} nor {js_topic} "
                       f"has messages; topics in the bag: {bag.describe_topics()}")
    topic, present = ((action_topic, have_chunks) if action_source == "action_chunk"
                      else (js_topic, have_js))
    if not present:
        raise BagError(f"{path}: no messages on {topic} (action source {action_source}); "
                       f"topics in the bag: {bag.describe_topics()}")
    return action_source


def _stamp_ns(msg, bag_ns: int) -> int:
    stamp = msg.header.stamp
    ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return ns if ns > 0 else int(bag_ns)


def _scan(bag, store, image_topic, instruction_topic, label_topic, single_topic, source,
          path) -> dict:
    """One pass without pixels: image stamps, instructions, and chunks or joint states and
    gripper commands (kept in compact arrays: a few numbers per message)."""
    image_ns, image_bag_ns = array("q"), array("q")
    instructions, chunk_ns, chunks = [], array("q"), []
    js_ns, js_q, js_kind, js_value = array("q"), array("d"), array("b"), array("d")
    cmd_ns, cmd_open = array("q"), array("d")
    wanted = {image_topic, instruction_topic, label_topic}
    if source == "joint_states":
        wanted.add(single_topic)
    for topic, msgtype, bag_ns, raw in bag.messages(wanted):
        if topic == image_topic:
            stamp = header_stamp_ns(raw)  # the pixels are not deserialized here
            image_ns.append(stamp if stamp > 0 else bag_ns)
            image_bag_ns.append(bag_ns)
            continue
        msg = store.deserialize_cdr(raw, msgtype)
        if topic == instruction_topic:
            instructions.append((bag_ns, str(msg.data)))
        elif topic == single_topic:
            if msg.name == "gripper" and msg.cmd != 0:
                cmd_ns.append(bag_ns)
                cmd_open.append(1.0 if msg.cmd > 0 else 0.0)
        elif source == "action_chunk":
            actions = np.asarray(msg.actions, dtype=np.float32)
            if msg.action_dim != ACTION_DIM or actions.size < ACTION_DIM:
                raise BagError(f"{path}: ActionChunk at {bag_ns} ns has action_dim "
                               f"{msg.action_dim} and {actions.size} values; expected "
                               f"{ACTION_DIM}-dim actions")
            chunk_ns.append(_stamp_ns(msg, bag_ns))
            chunks.append(actions[:ACTION_DIM].copy())
        else:
            names = list(msg.name)
            if all(j in names for j in kinematics.ARM_JOINTS):
                js_ns.append(_stamp_ns(msg, bag_ns))
                js_q.extend(float(msg.position[names.index(j)]) for j in kinematics.ARM_JOINTS)
                kind, value = gripper_opening(names, msg.position)
                js_kind.append(kind)
                js_value.append(value)
    if source == "joint_states" and not js_ns:
        raise BagError(f"{path}: no joint state on {label_topic} names all arm joints "
                       f"{', '.join(kinematics.ARM_JOINTS)}")
    order = np.argsort(np.asarray(chunk_ns, dtype=np.int64), kind="stable")
    instructions.sort(key=lambda item: item[0])
    return {"image_ns": np.asarray(image_ns, dtype=np.int64),
            "image_bag_ns": np.asarray(image_bag_ns, dtype=np.int64),
            "instructions": instructions,
            "chunk_ns": np.asarray(chunk_ns, dtype=np.int64)[order],
            "chunks": [chunks[i] for i in order],
            "js_ns": np.asarray(js_ns, dtype=np.int64),
            "js_q": np.asarray(js_q, dtype=np.float64).reshape(-1, len(kinematics.ARM_JOINTS)),
            "js_grip": normalised_gripper(np.asarray(js_kind), np.asarray(js_value)),
            "gripper_commands": (np.asarray(cmd_ns, dtype=np.int64),
                                 np.asarray(cmd_open, dtype=np.float64))}


def _subsample(stamps_ns: np.ndarray, hz: Optional[float]) -> np.ndarray:
    """Indices of the images kept at most ``hz`` per second, in recording order: each at
    least ~1/hz after the last kept one (10 % tolerance for camera jitter)."""
    if not hz:
        return np.arange(len(stamps_ns))
    period, kept, last = 1e9 / hz, [], None
    for i, stamp in enumerate(stamps_ns):
        if last is None or stamp >= last + 0.9 * period:
            kept.append(i)
            last = stamp
    return np.asarray(kept, dtype=np.int64)
