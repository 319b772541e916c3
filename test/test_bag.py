"""BagWriter / read_bag / load_episode on synthetic bags in both storage formats."""
import threading

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Writer

from llada_vla_ros import kinematics, topics
from llada_vla_ros.images import image_msg_to_rgb
from llada_vla_ros.bag import (BagError, BagWriter, build_message, find_msg_file,
                               load_episode, make_typestore, read_bag)

SEC = 1_000_000_000
JS_TOPIC = topics.robot_topic(topics.ROBOT_NAME, topics.JOINT_STATES)
JOINT_NAMES = list(kinematics.ARM_JOINTS) + ["gripper", "left_finger", "right_finger"]
STORAGES = ["sqlite3", "mcap"]


# --- helpers ----------------------------------------------------------------------------------

def header(stamp_ns, frame_id="camera_color_optical_frame"):
    return {"stamp": {"sec": stamp_ns // SEC, "nanosec": stamp_ns % SEC}, "frame_id": frame_id}


def image_msg(stamp_ns, rgb, encoding="rgb8", pad=0):
    """sensor_msgs/Image dict holding ``rgb`` in ``encoding``, rows padded by ``pad`` bytes."""
    h, w, _ = rgb.shape
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1],
              "rgba8": np.dstack([rgb, np.full((h, w), 255, np.uint8)]),
              "bgra8": np.dstack([rgb[..., ::-1], np.full((h, w), 7, np.uint8)]),
              "mono8": rgb[..., :1]}[encoding]
    rows = pixels.reshape(h, -1)
    rows = np.hstack([rows, np.full((h, pad), 99, np.uint8)])
    return {"header": header(stamp_ns), "height": h, "width": w, "encoding": encoding,
            "is_bigendian": 0, "step": rows.shape[1], "data": rows.ravel()}


def chunk_msg(stamp_ns, actions, instruction="task"):
    actions = np.asarray(actions, np.float32).reshape(-1, 7)
    return {"header": header(stamp_ns, "wx250s/base_link"), "instruction": instruction,
            "horizon": len(actions), "action_dim": 7, "actions": actions.ravel(),
            "confidence": np.ones(len(actions), np.float32), "inference_ms": 12.5,
            "model_id": "test"}


def joint_msg(stamp_ns, q, finger=None, gripper=0.0):
    names = list(kinematics.ARM_JOINTS) + ["gripper"]
    pos = list(q) + [gripper]
    if finger is not None:
        names += ["left_finger", "right_finger"]
        pos += [finger, -finger]
    return {"header": header(stamp_ns, ""), "name": names, "position": np.array(pos)}


def rgb_image(seed, h=4, w=5):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def add_default_topics(bag):
    bag.add_topic(topics.IMAGE, topics.IMAGE_TYPE)
    bag.add_topic(topics.INSTRUCTION, topics.INSTRUCTION_TYPE, latched=True)


# --- writing and reading ----------------------------------------------------------------------

@pytest.mark.parametrize("storage", STORAGES)
def test_roundtrip_all_encodings_and_types(tmp_path, storage):
    path = tmp_path / "bag"
    encodings = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"]
    originals = []
    with BagWriter(path, storage=storage) as bag:
        for name, msgtype in topics.recorded_topics().items():
            bag.add_topic(name, msgtype)
        for i, enc in enumerate(encodings):
            rgb = rgb_image(i)
            if enc == "mono8":
                rgb = np.repeat(rgb[..., :1], 3, axis=2)
            originals.append(rgb)
            bag.write_message(topics.IMAGE, i * SEC, image_msg(i * SEC, rgb, enc, pad=i))
        bag.write_message(topics.INSTRUCTION, 0, {"data": "pick up the cup"})
        bag.write_message(topics.ACTION_CHUNK, 1, chunk_msg(0, np.arange(35) / 100))
        bag.write_message(JS_TOPIC, 2, joint_msg(2, np.zeros(6), finger=0.02))
        bag.write_message("/wx250s/commands/joint_group", 3, {"name": "arm", "cmd": [0.1] * 6})
        bag.write_message("/wx250s/commands/joint_single", 4, {"name": "gripper", "cmd": 250.0})
        bag.write_message(topics.DIAGNOSTICS, 5, {"status": [{"level": 1, "name": "x"}]})
    files = sorted(p.name for p in path.iterdir())
    suffix = {"sqlite3": ".db3", "mcap": ".mcap"}[storage]
    assert "metadata.yaml" in files and any(f.endswith(suffix) for f in files)
    meta = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == storage
    assert meta["message_count"] == len(encodings) + 6
    counts = {t["topic_metadata"]["name"]: t["message_count"]
              for t in meta["topics_with_message_count"]}
    assert counts[topics.IMAGE] == len(encodings) and counts[topics.ACTION_CHUNK] == 1
    assert counts[topics.TARGET_POSE] == 0
    assert all(t["topic_metadata"]["type_description_hash"].startswith("RIHS01_")
               for t in meta["topics_with_message_count"])

    messages = list(read_bag(path))
    images = [m for t, _, _, m in messages if t == topics.IMAGE]
    for rgb, msg in zip(originals, images):
        np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    by_topic = {t: (typ, m) for t, typ, _, m in messages}
    typ, chunk = by_topic[topics.ACTION_CHUNK]
    assert typ == topics.ACTION_CHUNK_TYPE and chunk.horizon == 5 and chunk.model_id == "test"
    np.testing.assert_allclose(chunk.actions, np.arange(35) / 100, rtol=1e-6)
    assert by_topic[topics.INSTRUCTION][1].data == "pick up the cup"
    assert list(by_topic["/wx250s/commands/joint_group"][1].cmd) == pytest.approx([0.1] * 6)
    assert by_topic["/wx250s/commands/joint_single"][1].cmd == pytest.approx(250.0)
    assert [t for t, *_ in read_bag(path, topics=[topics.INSTRUCTION])] == [topics.INSTRUCTION]


def test_raw_cdr_from_rclpy(tmp_path):
    serialization = pytest.importorskip("rclpy.serialization")
    from std_msgs.msg import String

    path = tmp_path / "bag"
    with BagWriter(path) as bag:
        bag.add_topic(topics.INSTRUCTION, "std_msgs/String")
        bag.write(topics.INSTRUCTION, 10, serialization.serialize_message(String(data="hi")))
    [(topic, msgtype, stamp, msg)] = list(read_bag(path))
    assert (topic, msgtype, stamp) == (topics.INSTRUCTION, "std_msgs/msg/String", 10)
    assert msg.data == "hi"


def test_writer_is_thread_safe(tmp_path):
    path = tmp_path / "bag"
    with BagWriter(path, storage="mcap") as bag:
        add_default_topics(bag)

        def spam(k):
            for i in range(50):
                bag.write_message(topics.INSTRUCTION, k * 1000 + i, {"data": f"{k}-{i}"})

        threads = [threading.Thread(target=spam, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(list(read_bag(path))) == 200


def test_writer_errors(tmp_path):
    path = tmp_path / "bag"
    path.mkdir()
    with pytest.raises(BagError, match="already exists"):
        BagWriter(path)
    with pytest.raises(ValueError, match="storage"):
        BagWriter(tmp_path / "other", storage="rosbag1")
    with BagWriter(tmp_path / "new") as bag:
        with pytest.raises(BagError, match="unknown message type acme_msgs/msg/Thing"):
            bag.add_topic("/thing", "acme_msgs/msg/Thing")
        with pytest.raises(BagError, match="was not added"):
            bag.write("/nope", 0, b"")
    with pytest.raises(BagError, match="closed"):
        bag.add_topic("/x", "std_msgs/msg/String")


def test_image_conversion_errors():
    msg = type("Img", (), {"encoding": "16UC1", "height": 1, "width": 1, "step": 2,
                           "data": np.zeros(2, np.uint8)})
    with pytest.raises(ValueError, match="16-bit image encoding '16UC1' refused"):
        image_msg_to_rgb(msg)
    msg.encoding, msg.step = "rgb8", 2
    with pytest.raises(ValueError, match="step"):
        image_msg_to_rgb(msg)


def test_find_msg_file_in_source_tree():
    assert find_msg_file().read_text().startswith("# One decoded action chunk")


def test_bag_definition_used_when_package_msg_missing(tmp_path, monkeypatch):
    path = tmp_path / "bag"
    with BagWriter(path) as bag:
        bag.add_topic(topics.ACTION_CHUNK, topics.ACTION_CHUNK_TYPE)
        bag.write_message(topics.ACTION_CHUNK, 0, chunk_msg(0, np.ones(7)))
    import llada_vla_ros.data.messages as messages
    monkeypatch.setattr(messages, "custom_msg_definitions", lambda: {})
    [(_, _, _, msg)] = list(read_bag(path))
    assert msg.action_dim == 7


# --- episodes -------------------------------------------------------------------------------

def write_chunk_bag(path, storage):
    """10 frames at 5 Hz; instructions at 0.1 s and 1.05 s; chunks at frames 1, 4 and 7.5."""
    with BagWriter(path, storage=storage) as bag:
        add_default_topics(bag)
        bag.add_topic(topics.ACTION_CHUNK, topics.ACTION_CHUNK_TYPE)
        for i in range(10):
            t = i * SEC // 5
            bag.write_message(topics.IMAGE, t, image_msg(t, rgb_image(i), "bgr8", pad=3))
        bag.write_message(topics.INSTRUCTION, SEC // 10, {"data": "first"})
        bag.write_message(topics.INSTRUCTION, 105 * SEC // 100, {"data": "second"})
        for frame in (1, 4, 7.5):
            t = int(frame * SEC / 5)
            actions = np.full((5, 7), frame, np.float32) + np.arange(5)[:, None]
            bag.write_message(topics.ACTION_CHUNK, t + SEC // 20, chunk_msg(t, actions))


@pytest.mark.parametrize("storage", STORAGES)
def test_episode_pairs_instruction_and_chunk(tmp_path, storage):
    path = tmp_path / "bag"
    write_chunk_bag(path, storage)
    ep = load_episode(path)
    assert ep.action_source == "action_chunk" and len(ep) == 9  # frame 0 precedes every chunk
    assert list(ep.stamps_ns) == [i * SEC // 5 for i in range(1, 10)]
    expected_first = [1, 1, 1, 4, 4, 4, 4, 7.5, 7.5]  # frame 7 still uses chunk 4
    np.testing.assert_allclose(ep.actions, np.repeat(np.array(expected_first)[:, None], 7, 1))
    assert ep.instructions == ["first"] * 5 + ["second"] * 4  # 1.05 s lies between frames 5, 6
    for i, frame in zip(range(1, 10), ep.frames):
        np.testing.assert_array_equal(frame.image, rgb_image(i))


def test_episode_hz_and_max_frames(tmp_path):
    path = tmp_path / "bag"
    write_chunk_bag(path, "sqlite3")
    ep = load_episode(path, hz=2.5)  # every other frame: 0 (dropped, no chunk), 2, 4, 6, 8
    assert list(ep.stamps_ns) == [i * SEC // 5 for i in (2, 4, 6, 8)]
    assert len(load_episode(path, max_frames=3)) == 3


def write_joint_bag(path, qs, fingers=None, grippers=None, dt=SEC // 5):
    with BagWriter(path) as bag:
        add_default_topics(bag)
        bag.add_topic(JS_TOPIC, topics.JOINT_STATES_TYPE)
        bag.write_message(topics.INSTRUCTION, 0, {"data": "demo"})
        for i, q in enumerate(qs):
            t = SEC + i * dt
            bag.write_message(topics.IMAGE, t, image_msg(t, rgb_image(i)))
            finger = None if fingers is None else fingers[i]
            grip = 0.0 if grippers is None else grippers[i]
            bag.write_message(JS_TOPIC, t, joint_msg(t, q, finger=finger, gripper=grip))


def test_joint_states_straight_line_gives_constant_deltas(tmp_path):
    q0 = np.array([0.0, -0.3, 0.5, 0.0, 0.6, 0.0])
    T0 = kinematics.fk(q0)
    step = np.array([0.01, -0.005, 0.004])
    qs, q = [], q0
    for k in range(6):
        target = T0.copy()
        target[:3, 3] += k * step
        res = kinematics.ik(target, q, tol_pos=1e-9, tol_rot=1e-9, max_iters=200)
        assert res.pos_err < 1e-7 and res.rot_err < 1e-7
        q = res.q
        qs.append(q)
    openings = np.linspace(1.0, 0.0, 6)
    fingers = 0.015 + 0.022 * openings
    path = tmp_path / "bag"
    write_joint_bag(path, qs, fingers=fingers)
    ep = load_episode(path)
    assert ep.action_source == "joint_states" and len(ep) == 5  # last frame has no next pose
    np.testing.assert_allclose(ep.actions[:, :3], np.tile(step, (5, 1)), atol=1e-6)
    np.testing.assert_allclose(ep.actions[:, 3:6], 0.0, atol=1e-6)
    np.testing.assert_allclose(ep.actions[:, 6], openings[1:], atol=1e-6)
    assert ep.instructions == ["demo"] * 5


def test_joint_states_rotation_convention(tmp_path):
    """Turning the waist by d rotates the EE about world z: dyaw = d, R_delta = R1 R0^T."""
    d = 0.05
    qs = [np.array([k * d, -0.2, 0.4, 0.1, 0.5, 0.2]) for k in range(4)]
    path = tmp_path / "bag"
    write_joint_bag(path, qs, grippers=[0.0, 0.5, 1.0, 1.0])  # no fingers: gripper joint range
    ep = load_episode(path)
    np.testing.assert_allclose(ep.actions[:, 3:6], [[0, 0, d]] * 3, atol=1e-9)
    p = [kinematics.fk(q)[:3, 3] for q in qs]
    np.testing.assert_allclose(ep.actions[:, :3], np.diff(p, axis=0), atol=1e-6)
    np.testing.assert_allclose(ep.actions[:, 6], [0.5, 1.0, 1.0])


# --- clear errors ------------------------------------------------------------------------------

def test_error_no_image_topic(tmp_path):
    path = tmp_path / "bag"
    with BagWriter(path) as bag:
        add_default_topics(bag)
        bag.write_message(topics.INSTRUCTION, 0, {"data": "x"})
    with pytest.raises(BagError) as err:
        load_episode(path)
    text = str(err.value)
    assert str(path) in text and topics.IMAGE in text and "/llada_vla/instruction (" in text


def test_error_unknown_type_without_definition(tmp_path):
    path = tmp_path / "bag"
    store = make_typestore()
    with Writer(path, version=8) as writer:
        conn = writer.add_connection(topics.IMAGE, "acme_msgs/msg/Mystery", msgdef="",
                                     rihs01="RIHS01_" + "0" * 64)
        writer.write(conn, 0, b"\x00\x01\x00\x00")
        conn = writer.add_connection(topics.ACTION_CHUNK, topics.ACTION_CHUNK_TYPE,
                                     typestore=store)
        msg = build_message(store, topics.ACTION_CHUNK_TYPE, chunk_msg(0, np.zeros(7)))
        writer.write(conn, 0, store.serialize_cdr(msg, topics.ACTION_CHUNK_TYPE))
    with pytest.raises(BagError, match="unknown message type acme_msgs/msg/Mystery") as err:
        list(read_bag(path))
    assert str(path) in str(err.value)
    with pytest.raises(BagError, match="acme_msgs/msg/Mystery"):
        load_episode(path)


def test_error_wrong_image_type(tmp_path):
    path = tmp_path / "bag"
    with BagWriter(path) as bag:
        bag.add_topic(topics.IMAGE, "std_msgs/msg/String")
        bag.add_topic(topics.ACTION_CHUNK, topics.ACTION_CHUNK_TYPE)
        bag.write_message(topics.IMAGE, 0, {"data": "not an image"})
        bag.write_message(topics.ACTION_CHUNK, 0, chunk_msg(0, np.zeros(7)))
    with pytest.raises(BagError, match="String; expected sensor_msgs/msg/Image or "
                                       "sensor_msgs/msg/CompressedImage"):
        load_episode(path)


def test_error_empty_bag(tmp_path):
    path = tmp_path / "bag"
    with BagWriter(path, storage="mcap") as bag:
        add_default_topics(bag)
    assert list(read_bag(path)) == []
    with pytest.raises(BagError, match="empty") as err:
        load_episode(path)
    assert str(path) in str(err.value)


def test_error_no_actions_and_missing_bag(tmp_path):
    path = tmp_path / "bag"
    with BagWriter(path) as bag:
        add_default_topics(bag)
        bag.write_message(topics.IMAGE, 0, image_msg(0, rgb_image(0)))
    with pytest.raises(BagError, match="no recorded actions"):
        load_episode(path)
    with pytest.raises(BagError, match="not found"):
        load_episode(tmp_path / "missing")


def test_cdr_and_type_hashes_match_generated_messages(tmp_path):
    """Bytes from rclpy's generated types read back, and ours deserialize in rclpy."""
    from ros_harness import require_ros

    require_ros()
    import json
    from pathlib import Path

    from ament_index_python.packages import get_package_share_directory
    from interbotix_xs_msgs.msg import JointGroupCommand
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.rosbag2 import Reader

    from llada_vla_ros.msg import ActionChunk

    ours = ActionChunk(horizon=5, action_dim=7, actions=[0.5] * 35, model_id="rclpy")
    ours.header.stamp.sec = 7
    path = tmp_path / "bag"
    with BagWriter(path) as bag:
        bag.add_topic(topics.ACTION_CHUNK, topics.ACTION_CHUNK_TYPE)
        bag.add_topic("/wx250s/commands/joint_group", topics.JOINT_GROUP_COMMAND_TYPE)
        bag.write(topics.ACTION_CHUNK, 1, serialize_message(ours))
        bag.write_message(topics.ACTION_CHUNK, 2, chunk_msg(3 * SEC, np.arange(7) / 10))
        bag.write_message("/wx250s/commands/joint_group", 3, {"name": "arm", "cmd": [0.25] * 6})
    first = next(m for t, _, _, m in read_bag(path) if t == topics.ACTION_CHUNK)
    assert first.model_id == "rclpy" and first.header.stamp.sec == 7
    with Reader(path) as reader:
        raws = [(c.msgtype, c.digest, bytes(raw)) for c, _, raw in reader.messages()]
    back = deserialize_message(raws[1][2], ActionChunk)
    assert back.header.stamp.sec == 3 and list(back.actions[:2]) == pytest.approx([0.0, 0.1])
    assert list(deserialize_message(raws[2][2], JointGroupCommand).cmd) == [0.25] * 6
    share = Path(get_package_share_directory("llada_vla_ros")) / "msg" / "ActionChunk.json"
    if share.is_file():  # rosidl's own type hash
        hashes = json.loads(share.read_text())["type_hashes"]
        assert raws[0][1] == next(h["hash_string"] for h in hashes
                                  if h["type_name"] == topics.ACTION_CHUNK_TYPE)
