"""Episode pictures: MP4 videos (imageio-ffmpeg) and a contact sheet PNG (frames of several
episodes in a grid, each labelled)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def write_mp4(path, frames: Sequence[np.ndarray], fps: float = 5.0) -> Path:
    """H.264 MP4 of RGB uint8 frames (an odd width or height is padded to even)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=7,
                            macro_block_size=2, ffmpeg_log_level="error") as writer:
        for f in frames:
            writer.append_data(np.asarray(f, dtype=np.uint8))
    return path


def pick(frames: Sequence[np.ndarray], n: int) -> list:
    """n frames evenly spread over the episode, first and last included."""
    if not frames:
        return []
    idx = np.unique(np.linspace(0, len(frames) - 1, n).round().astype(int))
    return [frames[i] for i in idx]


def contact_sheet(path, rows: Sequence[tuple], columns: int = 6, width: int = 200) -> Path:
    """One PNG: a row per (label, frames) pair, ``columns`` frames each, resized to ``width``
    pixels wide, the label above the row."""
    from PIL import Image, ImageDraw

    rows = [(label, pick(frames, columns)) for label, frames in rows if len(frames)]
    if not rows:
        raise ValueError("contact sheet: no frames")
    h0, w0 = rows[0][1][0].shape[:2]
    height = int(round(width * h0 / w0))
    label_h, pad = 18, 4
    sheet = Image.new("RGB", (columns * (width + pad) + pad,
                              len(rows) * (height + label_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (label, frames) in enumerate(rows):
        y = pad + r * (height + label_h + pad)
        draw.text((pad, y + 3), label, fill=(0, 0, 0))
        for c, f in enumerate(frames):
            tile = Image.fromarray(np.asarray(f, np.uint8)).resize((width, height),
                                                                   Image.BILINEAR)
            sheet.paste(tile, (pad + c * (width + pad), y + label_h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path
