"""sensor_msgs/Image fields -> HxWx3 uint8 RGB numpy array, without ROS or OpenCV.

Works on any object with the Image fields (an rclpy message, a rosbags message, a dict via
``image_to_rgb(**fields)``), so the node and the bag reader share one converter.
"""
from __future__ import annotations

import numpy as np

# encoding -> (channels, channel order to pick for R, G, B)
ENCODINGS = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
MAX_PIXELS = 4096 * 4096


class ImageConversionError(ValueError):
    """The image cannot be converted; the message names the cause."""


def image_to_rgb(encoding: str, height: int, width: int, step: int, data,
                 is_bigendian: int = 0) -> np.ndarray:
    """Return a contiguous HxWx3 uint8 RGB copy of the image.

    Honours row padding (step > width * channels). All accepted encodings are 8-bit, so the
    big-endian flag does not change the byte order and is accepted either way.
    """
    if encoding not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding '{encoding}' (accepted: {', '.join(ENCODINGS)})")
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image has zero size ({width}x{height})")
    if height * width > MAX_PIXELS:
        raise ImageConversionError(f"image too large ({width}x{height})")
    channels, order = ENCODINGS[encoding]
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageConversionError(
            f"image step {step} is smaller than width x channels = {row_bytes} ({encoding})")
    if isinstance(data, np.ndarray):
        buf = data.reshape(-1).view(np.uint8)
    elif isinstance(data, (list, tuple)):
        buf = np.asarray(data, dtype=np.uint8)
    else:  # bytes, array.array('B'), memoryview
        buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < step * (height - 1) + row_bytes:
        raise ImageConversionError(
            f"image data has {buf.size} bytes, expected {step * height} "
            f"({height} rows of step {step})")
    if buf.size < step * height:  # last row may be unpadded
        buf = np.concatenate([buf, np.zeros(step * height - buf.size, np.uint8)])
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = rows.reshape(height, width, channels)
    return np.ascontiguousarray(pixels[:, :, list(order)])


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
