"""Bags written directly with the ``rosbags`` library as ``ros2 bag record`` writes them (not
with the package's BagWriter), for the reader tests: sqlite3 or mcap storage, metadata
version 8 (Jazzy) or 9, the publishers' offered QoS, message definitions stored (Jazzy) or
not (Humble's sqlite3 bags), split into several storage files (``--max-bag-duration``: one
``<name>_<k>`` file per part, one metadata.yaml listing them), and what an interrupted
recording leaves (no metadata.yaml; an mcap file without its footer)."""
from pathlib import Path

import yaml
from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

SEC = 1_000_000_000
STORE = get_typestore(Stores.ROS2_HUMBLE)
STORE.register(get_types_from_msg(  # as installed with the package on the recording machine
    (Path(__file__).resolve().parents[1] / "msg" / "ActionChunk.msg").read_text(),
    "llada_vla_ros/msg/ActionChunk"))
SUFFIX = {"sqlite3": ".db3", "mcap": ".mcap"}
_ZERO = QosTime(sec=0, nsec=0)
SENSOR_QOS = Qos(history=QosHistory.KEEP_LAST, depth=5, reliability=QosReliability.BEST_EFFORT,
                 durability=QosDurability.VOLATILE, deadline=_ZERO, lifespan=_ZERO,
                 liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=_ZERO,
                 avoid_ros_namespace_conventions=False)
LATCHED_QOS = SENSOR_QOS._replace(depth=1, reliability=QosReliability.RELIABLE,
                                  durability=QosDurability.TRANSIENT_LOCAL)


def stamp(ns):
    return STORE.types["builtin_interfaces/msg/Time"](sec=ns // SEC, nanosec=ns % SEC)


def header(ns, frame_id="camera_color_optical_frame"):
    return STORE.types["std_msgs/msg/Header"](stamp=stamp(ns), frame_id=frame_id)


def msg(msgtype, **fields):
    return STORE.types[msgtype](**fields)


def record(path, messages, storage="sqlite3", *, split_ns=None, version=8,
           definitions=True, latched=("/llada_vla/instruction",)):
    """Write ``messages`` [(topic, msgtype, bag time ns, rosbags message)] into a bag at
    ``path``; ``split_ns`` starts a new storage file every that many ns of bag time."""
    path = Path(path)
    types = {}
    for topic, msgtype, _, _ in messages:
        types.setdefault(topic, msgtype)
    first = min(t for _, _, t, _ in messages)
    parts = {}
    for m in messages:
        parts.setdefault(0 if not split_ns else (m[2] - first) // split_ns, []).append(m)
    if len(parts) == 1:
        _write(path, messages, types, storage, version, definitions, latched)
        return path
    path.mkdir()
    infos = []
    for k, part in enumerate(parts[key] for key in sorted(parts)):
        tmp = path.with_name(f"{path.name}.part{k}")
        _write(tmp, part, types, storage, version, definitions, latched)
        name = f"{path.name}_{k}{SUFFIX[storage]}"
        next(tmp.glob(f"*{SUFFIX[storage]}")).rename(path / name)
        infos.append((name, yaml.safe_load((tmp / "metadata.yaml").read_text())
                      ["rosbag2_bagfile_information"]))
        (tmp / "metadata.yaml").unlink()
        tmp.rmdir()
    meta = infos[0][1]
    meta["relative_file_paths"] = [name for name, _ in infos]
    meta["files"] = [dict(info["files"][0], path=name) for name, info in infos]
    meta["message_count"] = sum(info["message_count"] for _, info in infos)
    end = max(info["starting_time"]["nanoseconds_since_epoch"] + info["duration"]["nanoseconds"]
              for _, info in infos)
    meta["duration"]["nanoseconds"] = end - meta["starting_time"]["nanoseconds_since_epoch"]
    for topic in meta["topics_with_message_count"]:
        topic["message_count"] = sum(
            t["message_count"] for _, info in infos for t in info["topics_with_message_count"]
            if t["topic_metadata"]["name"] == topic["topic_metadata"]["name"])
    (path / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": meta}))
    return path


def _write(path, messages, types, storage, version, definitions, latched):
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    with Writer(path, version=version, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msgtype in types.items():  # every part knows every topic, as rosbag2 does
            qos = [LATCHED_QOS if topic in latched else SENSOR_QOS]
            extra = {} if definitions else {"msgdef": "", "rihs01": STORE.hash_rihs01(msgtype)}
            conns[topic] = writer.add_connection(topic, msgtype, typestore=STORE,
                                                 offered_qos_profiles=qos, **extra)
        for topic, msgtype, t, message in sorted(messages, key=lambda m: m[2]):
            writer.write(conns[topic], t, STORE.serialize_cdr(message, msgtype))


def storage_file(path, storage="sqlite3"):
    return next(Path(path).glob(f"*{SUFFIX[storage]}"))


def interrupt(path, storage="mcap", keep=0.6):
    """What a killed recorder leaves: no metadata.yaml, and for mcap the first ``keep`` of
    the storage file (no summary, no footer)."""
    path = Path(path)
    (path / "metadata.yaml").unlink()
    if storage == "mcap":
        for f in path.glob("*.mcap"):
            data = f.read_bytes()
            f.write_bytes(data[: int(len(data) * keep)])
    return path
