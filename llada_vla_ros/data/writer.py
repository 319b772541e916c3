"""``BagWriter``: real rosbag2 bags (metadata.yaml + .db3 or .mcap, version 8, with message
definitions and type hashes) from raw CDR bytes or from messages; thread-safe. The policy
node uses it when its ``record_to`` parameter is set."""
from __future__ import annotations

import threading
from pathlib import Path

from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

from .. import topics as T
from . import BagError
from .messages import build_message, make_typestore, normalize_msgtype

BAG_VERSION = 8  # metadata v8: read by Iron/Jazzy and later; QoS in the format Humble reads
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


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
