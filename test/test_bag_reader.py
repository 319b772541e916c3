"""Recordings as ``ros2 bag record`` leaves them, written directly with the rosbags library
(test/recorded_bags.py): split bags, directories without metadata.yaml, an mcap whose
recorder was killed, a single storage file, directories of bags, Humble bags without
stored definitions, compressed and YUYV camera images."""
import io

import numpy as np
import pytest
from PIL import Image as PILImage

from llada_vla_ros import kinematics, topics
from llada_vla_ros.bag import BagError, BagReader, find_bags, load_episode, read_bag
from recorded_bags import SEC, header, interrupt, msg, record, storage_file

STORAGES = ["sqlite3", "mcap"]
JS = topics.robot_topic(topics.ROBOT_NAME, topics.JOINT_STATES)
H, W = 48, 64


def colour(i):
    """Frame i: a grey level that tells the frame, and a red block that moves."""
    rgb = np.full((H, W, 3), (7 * i) % 200, np.uint8)
    rgb[10:30, 2 + i % 40:12 + i % 40] = (220, 20, 30)
    return rgb


def raw_image(t, rgb):
    return msg("sensor_msgs/msg/Image", header=header(t), height=H, width=W, encoding="rgb8",
               is_bigendian=0, step=3 * W, data=rgb.ravel())


def compressed_image(t, rgb, codec):
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, codec, **({"quality": 95} if codec == "JPEG" else {}))
    fmt = f"rgb8; {codec.lower()} compressed bgr8"  # as image_transport's compressed writes
    return msg("sensor_msgs/msg/CompressedImage", header=header(t), format=fmt,
               data=np.frombuffer(buf.getvalue(), np.uint8))


def yuyv_image(t, rgb):
    """BT.601 limited-range YUYV of ``rgb`` (each pair shares the first pixel's chroma)."""
    f = rgb.astype(np.float64)
    y = 16 + 0.257 * f[..., 0] + 0.504 * f[..., 1] + 0.098 * f[..., 2]
    u = 128 - 0.148 * f[..., 0] - 0.291 * f[..., 1] + 0.439 * f[..., 2]
    v = 128 + 0.439 * f[..., 0] - 0.368 * f[..., 1] - 0.071 * f[..., 2]
    packed = np.stack([y[:, 0::2], u[:, 0::2], y[:, 1::2], v[:, 0::2]], axis=2)
    data = np.clip(np.rint(packed), 0, 255).astype(np.uint8).ravel()
    return msg("sensor_msgs/msg/Image", header=header(t), height=H, width=W,
               encoding="yuv422_yuy2", is_bigendian=0, step=2 * W, data=data)


def true_q(waist, t_ns):
    return kinematics.READY_POSE + np.array([waist((t_ns - SEC) / SEC), 0, 0, 0, 0, 0])


def joint_state(t, q):
    names = list(kinematics.ARM_JOINTS) + ["gripper", "left_finger", "right_finger"]
    return msg("sensor_msgs/msg/JointState", header=header(t, ""), name=names,
               position=np.array([*q, 0.0, 0.03, -0.03]), velocity=np.zeros(0),
               effort=np.zeros(0))


def steady(t_s):
    return 0.2 * t_s


def demo(frames=20, hz=5.0, image=raw_image, js_hz=None, js_gap=None, waist=steady):
    """A teleoperated demonstration as recorded on the robot: the instruction once
    (latched), camera images at ``hz`` and joint states at ``js_hz`` (default: with each
    image), the waist at ``waist(t)`` rad from the ready pose; ``js_gap`` = (start_s,
    end_s) of the recording without joint states."""
    out = [(topics.INSTRUCTION, "std_msgs/msg/String", SEC // 2,
            msg("std_msgs/msg/String", data="push the block"))]
    for i in range(frames):
        t = SEC + int(i * SEC / hz)
        img = image(t, colour(i))
        out.append((topics.IMAGE, img.__msgtype__, t + 3_000_000, img))
    js_hz = js_hz or hz
    for k in range(int(frames * js_hz / hz)):
        t = SEC + int(k * SEC / js_hz)
        if js_gap and js_gap[0] * SEC < t - SEC < js_gap[1] * SEC:
            continue
        out.append((JS, "sensor_msgs/msg/JointState", t + 1_000_000,
                    joint_state(t, true_q(waist, t))))
    return out


# --- opening recordings ---------------------------------------------------------------------

@pytest.mark.parametrize("storage", STORAGES)
def test_split_bag_reads_as_one_episode(tmp_path, storage):
    messages = demo(frames=20)
    whole = record(tmp_path / "whole", messages, storage)
    split = record(tmp_path / "split", messages, storage, split_ns=SEC)  # 1 s per file
    names = sorted(p.name for p in split.iterdir())
    assert names == ["metadata.yaml"] + [f"split_{k}{storage_file(whole, storage).suffix}"
                                         for k in range(5)]
    a, b = load_episode(whole), load_episode(split)
    assert len(a) == len(b) == 19 and b.notes == []
    np.testing.assert_array_equal(a.stamps_ns, b.stamps_ns)
    np.testing.assert_allclose(a.actions, b.actions)
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.image, fb.image)
    with BagReader(split) as bag:
        assert bag.topics[topics.IMAGE].count == 20 and bag.message_count == len(messages)
        stamps = [t for _, _, t, _ in bag.messages()]
    assert stamps == sorted(stamps)


@pytest.mark.parametrize("storage", STORAGES)
def test_bag_without_metadata_is_opened_by_its_storage_files(tmp_path, storage):
    messages = demo(frames=20)
    reference = load_episode(record(tmp_path / "complete", messages, storage))
    for name, split in (("one_file", None), ("split", 3 * SEC)):
        path = record(tmp_path / name, messages, storage, split_ns=split)
        (path / "metadata.yaml").unlink()
        episode = load_episode(path)
        np.testing.assert_allclose(episode.actions, reference.actions)
        [note] = episode.notes
        assert "has no metadata.yaml" in note and str(path) in note
        assert note.count(storage_file(path, storage).suffix) == (1 if split is None else 2)


def test_metadata_listing_fewer_files_than_recorded(tmp_path):
    """Stopped after a split: metadata.yaml lists the first file only; all are read."""
    path = record(tmp_path / "bag", demo(frames=20), "sqlite3", split_ns=2 * SEC)
    import yaml

    meta_path = path / "metadata.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["rosbag2_bagfile_information"]["relative_file_paths"] = ["bag_0.db3"]
    meta_path.write_text(yaml.safe_dump(meta))
    episode = load_episode(path)
    assert len(episode) == 19 and "lists 1 storage file(s) but" in episode.notes[0]


def test_killed_mcap_recorder_is_read_up_to_its_last_complete_record(tmp_path):
    messages = demo(frames=300, hz=30.0)  # ~2.8 MB: several 1 MiB chunks
    path = interrupt(record(tmp_path / "bag", messages, "mcap"), "mcap", keep=0.6)
    episode = load_episode(path)
    assert 50 < len(episode) < 299
    assert any("has no MCAP footer" in n for n in episode.notes)
    complete = load_episode(record(tmp_path / "ref", messages, "mcap"))
    np.testing.assert_allclose(episode.actions, complete.actions[:len(episode)])
    path.joinpath("bag_0.mcap").write_bytes(b"\x89MCAP0\r\n")  # nothing after the magic
    with pytest.raises(BagError, match="no complete record"):
        load_episode(path)


@pytest.mark.parametrize("storage", STORAGES)
def test_single_storage_file(tmp_path, storage):
    path = record(tmp_path / "bag", demo(frames=10), storage)
    assert len(load_episode(storage_file(path, storage))) == 9  # inside a complete bag
    lone = tmp_path / f"lone{storage_file(path, storage).suffix}"
    storage_file(path, storage).rename(lone)
    assert len(load_episode(lone)) == 9
    with pytest.raises(BagError, match="not a readable rosbag2 bag: .*files are missing"):
        load_episode(path)  # metadata.yaml names the file that was moved away
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BagError, match="not a rosbag2 bag directory or storage file"):
        load_episode(tmp_path / "notes.txt")
    (path / "metadata.yaml").unlink()
    with pytest.raises(BagError, match="no metadata.yaml and no storage file"):
        load_episode(path)


def test_humble_bag_without_stored_definitions(tmp_path):
    path = record(tmp_path / "bag", demo(frames=6), "sqlite3", definitions=False)
    with BagReader(path) as bag:
        assert all(not c.msgdef.data for c in bag.connections())
    assert len(load_episode(path)) == 5
    assert [m.data for t, _, _, m in read_bag(path, [topics.INSTRUCTION])] == ["push the block"]


def test_find_bags_in_directories(tmp_path):
    root = tmp_path / "bags"
    for name in ("b", "a", "nested/c"):
        record(root / name, demo(frames=3), "mcap")
    (root / "a_eval").mkdir()  # a report directory, not a bag
    (root / "a_eval" / "report.md").write_text("x")
    found = find_bags([root, root / "b"])
    assert [p.relative_to(root).as_posix() for p in found] == ["a", "b", "nested/c"]
    crashed = interrupt(record(tmp_path / "crashed", demo(frames=3), "sqlite3"), "sqlite3")
    assert find_bags([crashed]) == [crashed]
    with pytest.raises(BagError, match="not found"):
        find_bags([tmp_path / "missing"])
    with pytest.raises(BagError, match="no rosbag2 bag in this directory"):
        find_bags([root / "a_eval"])


# --- camera images as recorded --------------------------------------------------------------

@pytest.mark.parametrize("codec,tolerance", [("PNG", 0), ("JPEG", 4.0)])
@pytest.mark.parametrize("storage", STORAGES)
def test_compressed_image_bags(tmp_path, storage, codec, tolerance):
    def compressed(t, rgb):
        return compressed_image(t, rgb, codec)

    path = record(tmp_path / "bag", demo(frames=8, image=compressed), storage)
    episode = load_episode(path)
    assert len(episode) == 7
    for i, frame in enumerate(episode):
        assert frame.image.shape == (H, W, 3)
        assert np.abs(frame.image.astype(int) - colour(i)).mean() <= tolerance


def test_yuyv_image_bag(tmp_path):
    path = record(tmp_path / "bag", demo(frames=4, image=yuyv_image), "sqlite3")
    for i, frame in enumerate(load_episode(path)):
        err = np.abs(frame.image.astype(int) - colour(i))
        assert err[:, 0::2].max() <= 2  # chroma subsampling blurs the other pixel's colour


def test_corrupt_compressed_image_names_the_frame(tmp_path):
    messages = demo(frames=3, image=lambda t, rgb: compressed_image(t, rgb, "PNG"))
    bad = msg("sensor_msgs/msg/CompressedImage", header=header(SEC), format="jpeg",
              data=np.frombuffer(b"\xff\xd8 not really", np.uint8))
    messages = [(t, typ, s, bad if (t == topics.IMAGE and s < 1.1 * SEC) else m)
                for t, typ, s, m in messages]
    path = record(tmp_path / "bag", messages, "mcap")
    with pytest.raises(BagError, match=r"image on /camera/camera/color/image_raw at \d+ ns: "
                                       "compressed image data .* is not a JPEG image"):
        load_episode(path)


# --- gaps ------------------------------------------------------------------------------------

def wave(t_s):
    return 0.4 * np.sin(np.pi * t_s)  # back and forth: interpolating across a gap is wrong


def true_action(t0, t1):
    T0, T1 = (kinematics.fk(true_q(wave, t)) for t in (t0, t1))
    return np.array([*(T1[:3, 3] - T0[:3, 3]),
                     *kinematics.matrix_to_euler_sxyz(T1[:3, :3] @ T0[:3, :3].T)])


def test_joint_state_gap_is_never_spanned(tmp_path):
    from llada_vla_ros.dataset import episode_examples

    # 8 s at 5 Hz, joint states at 50 Hz, none between 3.0 s and 5.0 s
    path = record(tmp_path / "bag", demo(frames=40, js_hz=50.0, js_gap=(3.0, 5.0),
                                         waist=wave), "mcap")
    episode = load_episode(path)
    gap_reason = f"gap in {JS} (no joint state for more than 0.3 s)"
    assert episode.skipped == {gap_reason: 10, "last frame (no next frame to measure the "
                                                "motion)": 1}
    stamps = episode.stamps_ns
    assert not np.any((stamps > 2.8 * SEC + SEC) & (stamps < 5.0 * SEC + SEC))
    for frame in episode:  # every label is the motion the arm made (2 s gap: up to 0.5 rad)
        truth = true_action(frame.stamp_ns, frame.stamp_ns + SEC // 5)
        np.testing.assert_allclose(frame.action[:6], truth, atol=2e-4)
    assert [f.segment for f in episode] == [0] * 15 + [1] * 14  # 0-2.8 s, 5.0-7.6 s
    examples = episode_examples(episode, chunk_size=5)
    assert len(examples) == (15 - 4) + (14 - 4)  # no window across the gap


def test_single_dropped_joint_states_are_no_gap(tmp_path):
    messages = [m for m in demo(frames=10, js_hz=50.0, waist=wave)
                if not (m[0] == JS and m[2] % (SEC // 5) == SEC // 50 + 1_000_000)]
    episode = load_episode(record(tmp_path / "bag", messages, "sqlite3"))
    assert len(episode) == 9 and list(episode.skipped) == ["last frame (no next frame to "
                                                           "measure the motion)"]


def test_image_gap_splits_segments(tmp_path):
    messages = [m for m in demo(frames=20) if not (m[0] == topics.IMAGE and
                                                   1.9 * SEC < m[2] - SEC < 2.5 * SEC)]
    episode = load_episode(record(tmp_path / "bag", messages, "sqlite3"))
    # frames 0-9 and 13-19 (10-12 missing): frame 9's motion would span the gap
    assert episode.skipped == {"the next frame comes after a gap in the images": 1,
                               "last frame (no next frame to measure the motion)": 1}
    assert [f.segment for f in episode] == [0] * 9 + [1] * 6


def action_chunk(t, value):
    return msg(topics.ACTION_CHUNK_TYPE, header=header(t, "wx250s/base_link"),
               instruction="push the block", horizon=5, action_dim=7,
               actions=np.full(35, value, np.float32), confidence=np.ones(5, np.float32),
               inference_ms=3.0, model_id="recorded")


def test_action_chunk_gap_leaves_frames_unlabelled(tmp_path):
    messages = demo(frames=30)  # 6 s of images; chunks at 1 Hz stop from 2 s to 5 s
    for k in (0, 1, 2, 5):
        t = SEC + k * SEC
        messages.append((topics.ACTION_CHUNK, topics.ACTION_CHUNK_TYPE, t + 10_000_000,
                         action_chunk(t, k)))
    episode = load_episode(record(tmp_path / "bag", messages, "sqlite3"))
    assert episode.action_source == "action_chunk"
    reason = f"gap in {topics.ACTION_CHUNK} (latest ActionChunk older than 1.5 s)"
    assert episode.skipped == {reason: 7}  # 3.6 s to 4.8 s
    assert sorted({float(f.action[0]) for f in episode}) == [0.0, 1.0, 2.0, 5.0]
