"""The numpy Image converter on every accepted encoding, padded rows and endianness flags."""
import numpy as np
import pytest

from llada_vla_ros.images import (ENCODINGS, ImageConversionError, check_rgb, image_to_rgb,
                                  rgb_to_image_fields)

RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("pad", [0, 3, 16])
@pytest.mark.parametrize("big_endian", [0, 1])
def test_colour_encodings_round_trip(encoding, pad, big_endian):
    f = rgb_to_image_fields(RGB, encoding, pad=pad)
    f["is_bigendian"] = big_endian
    assert f["step"] == 7 * ENCODINGS[encoding][0] + pad
    out = image_to_rgb(**f)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, RGB)


def test_bgr_bytes_are_swapped():
    data = bytes([10, 20, 30])  # one BGR pixel: B=10 G=20 R=30
    assert image_to_rgb("bgr8", 1, 1, 3, data).tolist() == [[[30, 20, 10]]]
    assert image_to_rgb("bgra8", 1, 1, 4, data + b"\xff").tolist() == [[[30, 20, 10]]]


@pytest.mark.parametrize("pad", [0, 5])
def test_mono8_becomes_grey_rgb(pad):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rows = np.zeros((3, 4 + pad), np.uint8)
    rows[:, :4] = grey
    out = image_to_rgb("mono8", 3, 4, 4 + pad, rows.tobytes())
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


def test_accepts_array_list_and_memoryview_data():
    f = rgb_to_image_fields(RGB)
    for data in (np.frombuffer(f["data"], np.uint8), list(f["data"]), memoryview(f["data"])):
        np.testing.assert_array_equal(image_to_rgb("rgb8", 5, 7, f["step"], data), RGB)


@pytest.mark.parametrize("kwargs,words", [
    (dict(encoding="yuv422"), "unsupported image encoding 'yuv422'"),
    (dict(encoding="16UC1"), "unsupported"),
    (dict(height=0, width=0, step=0, data=b""), "zero size"),
    (dict(step=7 * 3 - 1), "step 20 is smaller"),
    (dict(data=b"\x00" * 10), "expected"),
])
def test_bad_images_are_refused_with_the_cause(kwargs, words):
    f = rgb_to_image_fields(RGB)
    f.update(kwargs)
    with pytest.raises(ImageConversionError, match=words):
        image_to_rgb(**f)


@pytest.mark.parametrize("bad,words", [
    ([[0, 0, 0]], "numpy array"), (np.zeros((4, 4), np.uint8), "HxWx3"),
    (np.zeros((4, 4, 4), np.uint8), "HxWx3"), (np.zeros((0, 4, 3), np.uint8), "empty"),
    (np.zeros((4, 4, 3), np.float32), "uint8"),
])
def test_check_rgb_names_the_problem(bad, words):
    with pytest.raises(ImageConversionError, match=words):
        check_rgb(bad)
    check_rgb(RGB)  # a good one passes
