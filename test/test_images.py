"""The image converters: every accepted Image encoding, padded rows and endianness flags,
packed YUV 4:2:2, refused 16-bit/depth encodings, and CompressedImage (JPEG, PNG) as
image_transport's compressed transport writes it."""
import io

import numpy as np
import pytest
from PIL import Image as PILImage

from llada_vla_ros.images import (ENCODINGS, ImageConversionError, check_rgb,
                                  compressed_msg_to_rgb, compressed_to_rgb, image_to_rgb,
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
    (dict(encoding="nv12"), "unsupported image encoding 'nv12'"),
    (dict(encoding="yuv422"), "unsupported image encoding 'yuv422'"),  # UYVY
    (dict(encoding="bayer_rggb8"), "accepted: rgb8, bgr8, rgba8, bgra8, mono8, yuyv"),
    (dict(encoding="16UC1"), "16-bit image encoding '16UC1' refused"),
    (dict(encoding="mono16"), "16-bit image encoding 'mono16' refused: the policy takes 8-bit"),
    (dict(encoding="rgb16"), "16-bit .* colour topic"),
    (dict(encoding="32FC1"), "32-bit image encoding '32FC1' refused: a depth"),
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


# --- packed YUV 4:2:2 -----------------------------------------------------------------------

def bt601_reference(y, u, v):
    """Limited-range BT.601 in floating point (the textbook formula, not the fixed point);
    Y below 16 counts as black, as in OpenCV (cv_bridge)."""
    c, d, e = max(y - 16.0, 0.0), u - 128.0, v - 128.0
    rgb = [1.164 * c + 1.596 * e, 1.164 * c - 0.392 * d - 0.813 * e, 1.164 * c + 2.017 * d]
    return np.clip(np.rint(rgb), 0, 255)


@pytest.mark.parametrize("encoding", ["yuv422_yuy2", "yuyv"])
@pytest.mark.parametrize("pad", [0, 6])
def test_yuyv_is_converted(encoding, pad):
    rng = np.random.default_rng(1)
    h, w = 3, 6
    y = rng.integers(0, 256, (h, w))
    u, v = rng.integers(0, 256, (h, w // 2)), rng.integers(0, 256, (h, w // 2))
    packed = np.zeros((h, w // 2, 4), np.uint8)
    for k, plane in enumerate((y[:, 0::2], u, y[:, 1::2], v)):  # Y0 U Y1 V
        packed[..., k] = plane
    rows = np.zeros((h, 2 * w + pad), np.uint8)
    rows[:, :2 * w] = packed.reshape(h, -1)
    out = image_to_rgb(encoding, h, w, 2 * w + pad, rows.tobytes())
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    for r in range(h):
        for c in range(w):
            ref = bt601_reference(y[r, c], u[r, c // 2], v[r, c // 2])
            assert np.abs(out[r, c].astype(int) - ref).max() <= 1, (r, c, out[r, c], ref)


def test_yuv422_known_colours_and_odd_width():
    # (Y, U, V) of black, white and BT.601 red, as a camera sends them (YUYV pairs)
    pairs = [(16, 128, 128), (235, 128, 128), (81, 90, 240)]
    data = bytes(b for y, u, v in pairs for b in (y, u, y, v))
    out = image_to_rgb("yuv422_yuy2", 1, 6, 12, data)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 2].tolist() == [255, 255, 255]
    assert out[0, 4].tolist() == pytest.approx([255, 0, 0], abs=1)
    np.testing.assert_array_equal(out[0, ::2], out[0, 1::2])  # a pair shares U and V
    with pytest.raises(ImageConversionError, match="odd width"):
        image_to_rgb("yuyv", 1, 3, 8, bytes(8))


# --- CompressedImage ----------------------------------------------------------------------------

def smooth_rgb(h=48, w=64):
    """Colour gradients with a red block: JPEG keeps these within a few levels."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full((h, w), 90)], axis=2)
    rgb[10:30, 20:40] = (220, 20, 30)
    return rgb.astype(np.uint8)


def encode(rgb, codec, mode="RGB"):
    """What OpenCV's imencode writes for image_transport (a standard JPEG/PNG stream)."""
    buf = io.BytesIO()
    image = PILImage.fromarray(rgb).convert(mode)
    image.save(buf, codec, **({"quality": 95} if codec == "JPEG" else {}))
    return buf.getvalue()


class Msg:
    def __init__(self, format, data):
        self.format, self.data = format, data


@pytest.mark.parametrize("fmt", ["rgb8; png compressed bgr8", "bgr8; png compressed bgr8",
                                 "png", ""])
def test_png_is_exact(fmt):
    rgb = smooth_rgb()
    data = np.frombuffer(encode(rgb, "PNG"), np.uint8)  # rosbags gives uint8 arrays
    out = compressed_msg_to_rgb(Msg(fmt, data))
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("fmt", ["rgb8; jpeg compressed bgr8", "bgra8; jpeg compressed bgr8",
                                 "jpeg", "jpg", ""])
def test_jpeg_keeps_the_colours(fmt):
    rgb = smooth_rgb()
    out = compressed_to_rgb(fmt, encode(rgb, "JPEG"))
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 2.0
    assert out[20, 30].tolist() == pytest.approx([220, 20, 30], abs=8)  # red stays red


@pytest.mark.parametrize("codec", ["JPEG", "PNG"])
def test_mono_becomes_grey_rgb(codec):
    grey = smooth_rgb()[..., 1]
    fmt = f"mono8; {codec.lower()} compressed "  # image_transport: no target for mono
    out = compressed_to_rgb(fmt, encode(np.dstack([grey] * 3), codec, mode="L"))
    err = np.abs(out.astype(int) - grey[..., None])
    assert err.max() == 0 if codec == "PNG" else err.mean() < 1.0
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_compressed_refusals_name_the_cause():
    rgb = smooth_rgb()
    png = encode(rgb, "PNG")
    with pytest.raises(ImageConversionError, match="not a JPEG image .*'rgb8; jpeg compressed"):
        compressed_to_rgb("rgb8; jpeg compressed bgr8", png)  # declared codec is checked
    with pytest.raises(ImageConversionError, match="unsupported compressed image format 'tiff'"):
        compressed_to_rgb("tiff", png)
    with pytest.raises(ImageConversionError, match="compressed depth image"):
        compressed_to_rgb("16UC1; compressedDepth png", png)
    with pytest.raises(ImageConversionError, match="16-bit image encoding 'mono16'"):
        compressed_to_rgb("mono16; png compressed ", png)
    deep = io.BytesIO()
    PILImage.fromarray(np.full((4, 4), 4000, np.uint16)).save(deep, "PNG")
    with pytest.raises(ImageConversionError, match="16-bit or float"):
        compressed_to_rgb("png", deep.getvalue())
    with pytest.raises(ImageConversionError, match="no data"):
        compressed_to_rgb("jpeg", b"")
    with pytest.raises(ImageConversionError, match="not a JPEG or PNG image"):
        compressed_to_rgb("", b"definitely not an image")
    jpeg = encode(rgb, "JPEG")
    with pytest.raises(ImageConversionError, match="cannot decode the JPEG image"):
        compressed_to_rgb("jpeg", jpeg[: len(jpeg) // 2])  # truncated
