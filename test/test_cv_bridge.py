"""images.py gives the same arrays as cv_bridge, where a system ROS 2 provides cv_bridge
(ros-$ROS_DISTRO-cv-bridge; it is not on PyPI, so this file skips here)."""
import io

import numpy as np
import pytest

try:
    from cv_bridge import CvBridge, CvBridgeError
except ImportError:  # PyPI's "cv-bridge" is an unrelated ROS 1 package
    pytest.skip("cv_bridge is not installed: it comes with a system ROS 2 "
                "(ros-$ROS_DISTRO-cv-bridge), not from PyPI", allow_module_level=True)

from llada_vla_ros.images import compressed_msg_to_rgb, image_msg_to_rgb

sensor_msgs = pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs (ROS 2) not found")
BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1,
                   "yuv422_yuy2": 2, "yuyv": 2}


@pytest.mark.parametrize("encoding", list(BYTES_PER_PIXEL))
@pytest.mark.parametrize("pad_pixels", [0, 2])  # cv_bridge needs whole pixels of padding
def test_image_conversion_equals_cv_bridge(encoding, pad_pixels):
    h, w = 6, 10
    step = (w + pad_pixels) * BYTES_PER_PIXEL[encoding]
    data = np.random.default_rng(3).integers(0, 256, h * step, dtype=np.uint8)
    msg = sensor_msgs.Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=step,
                            data=data.tobytes())
    try:
        expected = CvBridge().imgmsg_to_cv2(msg, "rgb8")
    except CvBridgeError as err:  # e.g. yuyv is newer than Humble's cv_bridge
        pytest.skip(f"this cv_bridge does not convert {encoding}: {err}")
    np.testing.assert_array_equal(image_msg_to_rgb(msg), expected)


@pytest.mark.parametrize("codec", ["JPEG", "PNG"])
def test_compressed_conversion_equals_cv_bridge(codec):
    from PIL import Image as PILImage

    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, codec)
    msg = sensor_msgs.CompressedImage(format=f"rgb8; {codec.lower()} compressed bgr8",
                                      data=buf.getvalue())
    expected = CvBridge().compressed_imgmsg_to_cv2(msg, "rgb8")
    ours = compressed_msg_to_rgb(msg)
    assert ours.shape == expected.shape
    # PNG is lossless; two JPEG decoders (Pillow's and OpenCV's libjpeg builds) may round
    # an inverse DCT differently by a level
    tolerance = 0 if codec == "PNG" else 2
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= tolerance
