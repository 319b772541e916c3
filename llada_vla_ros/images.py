"""Camera images -> HxWx3 uint8 RGB numpy arrays, without ROS or OpenCV.

- ``image_to_rgb`` / ``image_msg_to_rgb``: sensor_msgs/Image (8-bit colour, mono and packed
  YUV 4:2:2 YUYV); 16-bit, floating-point (depth) and other encodings are refused, naming why.
- ``compressed_to_rgb`` / ``compressed_msg_to_rgb``: sensor_msgs/CompressedImage as
  image_transport's ``compressed`` transport writes it (JPEG or PNG), decoded with Pillow.

Both work on any object with the message's fields (an rclpy message, a rosbags message), so
the node, the bag readers and the tools share one converter. Errors are
``ImageConversionError`` (a ValueError) with the cause in the message.
"""
from __future__ import annotations

import io

import numpy as np

# encoding -> (bytes per pixel, channel order to pick for R, G, B)
ENCODINGS = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
# Packed YUV 4:2:2 YUYV (usb_cam, RealSense YUYV modes), two pixels in four bytes: offsets of
# (Y0, U, Y1, V). ROS spells it yuv422_yuy2 (Humble, Jazzy) or yuyv (newer). UYVY ("yuv422",
# "uyvy") would be offsets (1, 0, 3, 2); it is not accepted yet.
YUV422 = {"yuyv": (0, 1, 2, 3), "yuv422_yuy2": (0, 1, 2, 3)}
ACCEPTED = (*ENCODINGS, *YUV422)
MAX_PIXELS = 4096 * 4096
COMPRESSED_CODECS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}

# BT.601 limited range, in the fixed point of OpenCV's YUV 4:2:2 -> RGB conversion (what
# cv_bridge uses), so both give the same pixels.
_SHIFT = 20
_CY, _CUB, _CUG, _CVG, _CVR = 1220542, 2116026, -409993, -852492, 1673527


class ImageConversionError(ValueError):
    """The image cannot be converted; the message names the cause."""


def refusal(encoding: str) -> str:
    """Why an Image of ``encoding`` is not accepted ("" when it is)."""
    if encoding in ACCEPTED:
        return ""
    return (_not_8bit(encoding) or
            f"unsupported image encoding '{encoding}' (accepted: {', '.join(ACCEPTED)})")


def _not_8bit(encoding: str) -> str:
    """Why a 16-bit or floating-point (depth) encoding is refused; "" for others."""
    e = encoding.lower()
    if e.endswith("16") or e.startswith(("16u", "16s")):
        return (f"16-bit image encoding '{encoding}' refused: the policy takes 8-bit colour "
                "images (a depth or infrared stream? use the camera's colour topic)")
    if e.startswith(("32f", "64f", "32s")):
        return (f"{e[:2]}-bit image encoding '{encoding}' refused: a depth or other "
                "measurement image, not a colour image (use the camera's colour topic)")
    return ""


def image_to_rgb(encoding: str, height: int, width: int, step: int, data,
                 is_bigendian: int = 0) -> np.ndarray:
    """Return a contiguous HxWx3 uint8 RGB copy of the image.

    Honours row padding (step > width * bytes per pixel). All accepted encodings are 8-bit,
    so the big-endian flag does not change the byte order and is accepted either way.
    """
    why = refusal(encoding)
    if why:
        raise ImageConversionError(why)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image has zero size ({width}x{height})")
    if height * width > MAX_PIXELS:
        raise ImageConversionError(f"image too large ({width}x{height})")
    if encoding in YUV422 and width % 2:
        raise ImageConversionError(
            f"{encoding} image has an odd width ({width}): two pixels share one U and V")
    channels = 2 if encoding in YUV422 else ENCODINGS[encoding][0]
    rows = _rows(encoding, height, width * channels, step, data)
    if encoding in YUV422:
        return _yuv422_to_rgb(rows.reshape(height, width // 2, 4), YUV422[encoding])
    pixels = rows.reshape(height, width, channels)
    return np.ascontiguousarray(pixels[:, :, list(ENCODINGS[encoding][1])])


def _rows(encoding: str, height: int, row_bytes: int, step: int, data) -> np.ndarray:
    """The height x row_bytes pixel bytes of a row-padded buffer."""
    if step < row_bytes:
        raise ImageConversionError(
            f"image step {step} is smaller than width x bytes per pixel = {row_bytes} "
            f"({encoding})")
    buf = _bytes(data)
    if buf.size < step * (height - 1) + row_bytes:
        raise ImageConversionError(
            f"image data has {buf.size} bytes, expected {step * height} "
            f"({height} rows of step {step})")
    if buf.size < step * height:  # last row may be unpadded
        buf = np.concatenate([buf, np.zeros(step * height - buf.size, np.uint8)])
    return buf[: step * height].reshape(height, step)[:, :row_bytes]


def _bytes(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)  # bytes, array.array('B'), memoryview


def _yuv422_to_rgb(pairs: np.ndarray, offsets: tuple) -> np.ndarray:
    """H x W/2 x 4 packed YUV 4:2:2 -> H x W x 3 RGB."""
    iy0, iu, iy1, iv = offsets
    h, half, _ = pairs.shape
    p = pairs.astype(np.int32)
    u, v = p[..., iu] - 128, p[..., iv] - 128
    rnd = 1 << (_SHIFT - 1)
    ruv, guv, buv = rnd + _CVR * v, rnd + _CVG * v + _CUG * u, rnd + _CUB * u
    rgb = np.empty((h, half, 2, 3), np.int32)
    for k, iy in enumerate((iy0, iy1)):
        y = np.maximum(p[..., iy] - 16, 0) * _CY
        rgb[:, :, k, 0] = (y + ruv) >> _SHIFT
        rgb[:, :, k, 1] = (y + guv) >> _SHIFT
        rgb[:, :, k, 2] = (y + buv) >> _SHIFT
    return np.clip(rgb, 0, 255).astype(np.uint8).reshape(h, 2 * half, 3)


def check_rgb(image_rgb) -> None:
    """Raise ImageConversionError unless ``image_rgb`` is a non-empty HxWx3 uint8 array."""
    if not isinstance(image_rgb, np.ndarray):
        raise ImageConversionError(f"image must be a numpy array, got {type(image_rgb).__name__}")
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ImageConversionError(f"image must be HxWx3 RGB, got shape {image_rgb.shape}")
    if image_rgb.shape[0] == 0 or image_rgb.shape[1] == 0:
        raise ImageConversionError(f"image is empty (shape {image_rgb.shape})")
    if image_rgb.dtype != np.uint8:
        raise ImageConversionError(f"image must be uint8, got {image_rgb.dtype}")


def image_msg_to_rgb(msg) -> np.ndarray:
    """Convert a sensor_msgs/Image-like object (attributes named as in the message)."""
    return image_to_rgb(msg.encoding, int(msg.height), int(msg.width), int(msg.step),
                        msg.data, int(getattr(msg, "is_bigendian", 0)))


def compressed_to_rgb(format: str, data) -> np.ndarray:  # noqa: A002 (the message's name)
    """sensor_msgs/CompressedImage fields -> a contiguous HxWx3 uint8 RGB array.

    ``format`` as image_transport's compressed transport writes it (``"rgb8; jpeg compressed
    bgr8"``, ``"mono8; png compressed "``), a bare codec (``"jpeg"``, ``"png"``) or empty
    (the codec is then recognised from the data). The "bgr8" target names the buffer OpenCV
    encoded; the JPEG/PNG stream itself holds true colours, so no channel swap is needed.
    16-bit sources and the compressedDepth transport are refused.
    """
    text = str(format).strip()
    if "compresseddepth" in text.lower().replace(" ", ""):
        raise ImageConversionError(
            f"compressed depth image (format '{text}') refused: the policy takes colour "
            "images (use the camera's colour topic)")
    source, _, codec_text = text.rpartition(";")
    why = _not_8bit(source.strip())  # other sources were converted to bgr8/mono8 to encode
    if why:
        raise ImageConversionError(why)
    words = codec_text.lower().replace(",", " ").split()
    codecs = [COMPRESSED_CODECS[w] for w in words if w in COMPRESSED_CODECS]
    if words and not codecs:
        raise ImageConversionError(
            f"unsupported compressed image format '{text}' (accepted: jpeg, png, as written "
            "by image_transport's compressed transport)")
    raw = _bytes(data).tobytes()
    if not raw:
        raise ImageConversionError(f"compressed image has no data (format '{text}')")
    from PIL import Image, UnidentifiedImageError  # only where compressed images are used

    expected = codecs[:1] or ["JPEG", "PNG"]
    try:
        img = Image.open(io.BytesIO(raw), formats=expected)
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageConversionError(
            f"compressed image data ({len(raw)} bytes) is not a {' or '.join(expected)} "
            f"image (format '{text}')") from exc
    width, height = img.size
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image has zero size ({width}x{height})")
    if height * width > MAX_PIXELS:
        raise ImageConversionError(f"image too large ({width}x{height})")
    if img.mode.startswith(("I", "F")):
        raise ImageConversionError(
            f"{img.format} image with {img.mode} pixels (16-bit or float) refused: the "
            "policy takes 8-bit colour images (use the camera's colour topic)")
    try:
        pixels = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except OSError as exc:  # truncated or corrupt stream
        raise ImageConversionError(
            f"cannot decode the {img.format} image (format '{text}'): {exc}") from exc
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def compressed_msg_to_rgb(msg) -> np.ndarray:
    """Convert a sensor_msgs/CompressedImage-like object (``format`` and ``data``)."""
    return compressed_to_rgb(msg.format, msg.data)


def rgb_to_compressed_fields(rgb: np.ndarray, codec: str = "jpeg", quality: int = 85) -> dict:
    """For simulators: the CompressedImage fields image_transport's compressed publisher
    gives an rgb8 image (``format`` "rgb8; jpeg compressed bgr8", the encoded ``data``)."""
    import io

    from PIL import Image
    if codec not in COMPRESSED_CODECS:
        raise ImageConversionError(f"unsupported codec '{codec}' (jpeg or png)")
    buf = io.BytesIO()
    options = {"quality": int(quality)} if COMPRESSED_CODECS[codec] == "JPEG" else {}
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, COMPRESSED_CODECS[codec], **options)
    return {"format": f"rgb8; {codec} compressed bgr8", "data": buf.getvalue()}


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "rgb8", pad: int = 0) -> dict:
    """Inverse, for simulators and tests: the Image fields of an HxWx3 RGB array."""
    if encoding not in ENCODINGS:
        raise ImageConversionError(f"unsupported image encoding '{encoding}'")
    channels, order = ENCODINGS[encoding]
    h, w, _ = rgb.shape
    if channels == 1:
        px = rgb.mean(axis=2, keepdims=True).astype(np.uint8)
    else:
        px = np.zeros((h, w, channels), np.uint8)
        px[:, :, list(order)] = rgb
        if channels == 4:
            px[:, :, 3] = 255
    step = w * channels + pad
    rows = np.zeros((h, step), np.uint8)
    rows[:, : w * channels] = px.reshape(h, -1)
    return {"encoding": encoding, "height": h, "width": w, "step": step,
            "is_bigendian": 0, "data": rows.tobytes()}
