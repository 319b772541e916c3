"""LLaVA-NeXT "anyres" image input as LLaDA-V uses it (``image_aspect_ratio anyres_max_4``,
``mm_patch_merge_type spatial_unpad``, ``image_grid_pinpoints (1x1),...,(6x6)``).

Pixels (``crops``): crop 0 is the whole image resized to the tower's S x S (squashed); then
the image is resized, keeping its aspect ratio, into the best grid resolution (the candidate
that keeps most of its pixels with least padding), padded with black to it, and cut into
S x S tiles, row by row.

Features (``merge``): each crop gives T x T features (T = S / patch). The tiles' features
are laid out as one (rows*T) x (cols*T) map, the padding rows or columns are cut off
(unpad), with ``anyres_max_N`` a map larger than ~N tiles is bilinearly shrunk to about N
tiles' worth, and a learned ``image_newline`` closes every row. The result is the base
image's T*T features followed by the map row by row.

The arithmetic (integer truncations, the 1.1 tolerance, the symmetric cut of the unpad)
follows LLaDA-V's code so that feature counts and positions agree with it exactly; the
resampling is torch's bicubic with antialiasing instead of PIL's (values differ slightly).
"""
from __future__ import annotations

import math
import re
from typing import Optional

import torch
import torch.nn.functional as F


def max_tiles(config) -> Optional[int]:
    """N of ``anyres_max_N``; None for plain ``anyres``."""
    m = re.fullmatch(r"anyres_max_(\d+)", config.image_aspect_ratio)
    return int(m.group(1)) if m else None


def is_anyres(config) -> bool:
    return config.image_aspect_ratio.startswith("anyres")


def best_resolution(size, candidates) -> tuple:
    """(width, height) among ``candidates`` that keeps the most of the image's pixels
    (after an aspect-preserving resize into it), ties broken by the least padding."""
    w0, h0 = size
    best, best_eff, best_waste = None, 0, float("inf")
    for w, h in candidates:
        scale = min(w / w0, h / h0)
        eff = min(int(w0 * scale) * int(h0 * scale), w0 * h0)
        waste = w * h - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (int(w), int(h)), eff, waste
    return best


def grid_shape(config, size) -> tuple:
    """(cols, rows) of tiles for an image of ``size`` = (width, height)."""
    w, h = best_resolution(size, config.grid_pinpoints)
    return w // config.image_size, h // config.image_size


def resized_size(size, target) -> tuple:
    """(width, height) of the image inside the padded ``target`` resolution."""
    (w0, h0), (tw, th) = size, target
    sw, sh = tw / w0, th / h0
    if sw < sh:
        return tw, min(math.ceil(h0 * sw), th)
    return min(math.ceil(w0 * sh), tw), th


def unpad_window(map_hw, size) -> tuple:
    """(top, bottom, left, right) of the feature map rows/columns that hold the image."""
    (H, W), (w0, h0) = map_hw, size
    if w0 / h0 > W / H:  # padding was added above and below
        pad = (H - int(h0 * (W / w0))) // 2
        return pad, H - pad, 0, W
    pad = (W - int(w0 * (H / h0))) // 2
    return 0, H, pad, W - pad


def feature_map_shape(config, size) -> tuple:
    """(rows, cols) of the tile feature map after unpad and the anyres_max reduction."""
    cols, rows = grid_shape(config, size)
    T = config.image_size // int(config.vision_config.patch_size)
    top, bottom, left, right = unpad_window((rows * T, cols * T), size)
    h, w = bottom - top, right - left
    n = max_tiles(config)
    if n is not None:
        times = math.sqrt(h * w / (n * T * T))
        if times > 1.1:
            h, w = int(h // times), int(w // times)
    return h, w


def num_crops(config, size) -> int:
    """Images through the vision tower for one camera image of ``size`` (width, height)."""
    if not is_anyres(config):
        return 1
    cols, rows = grid_shape(config, size)
    return 1 + cols * rows


def num_features(config, size) -> int:
    """Image features in the prompt for one camera image of ``size`` (width, height)."""
    T2 = config.num_image_tokens
    newline = config.uses_image_newline
    if not is_anyres(config):
        return T2 + int(newline)
    if not newline:  # flat: every crop's features in a row
        return T2 * num_crops(config, size)
    h, w = feature_map_shape(config, size)
    return T2 + h * (w + 1)


def crops(pixels: torch.Tensor, config) -> torch.Tensor:
    """(1, 3, H, W) float image in [0, 1] -> (n, 3, S, S) in [0, 1]: the whole image
    resized, then the grid tiles row by row (anyres); only the first with ``square``."""
    S = config.image_size
    H, W = pixels.shape[-2:]
    base = _resize(pixels, S, S)
    if not is_anyres(config):
        return base
    tw, th = best_resolution((W, H), config.grid_pinpoints)
    nw, nh = resized_size((W, H), (tw, th))
    canvas = pixels.new_zeros(1, 3, th, tw)  # black padding, as LLaDA-V
    top, left = (th - nh) // 2, (tw - nw) // 2
    canvas[..., top:top + nh, left:left + nw] = _resize(pixels, nh, nw)
    tiles = canvas.view(3, th // S, S, tw // S, S).permute(1, 3, 0, 2, 4).reshape(-1, 3, S, S)
    return torch.cat([base, tiles])


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bicubic", antialias=True,
                         align_corners=False).clamp_(0.0, 1.0)


def merge(features: torch.Tensor, size, config,
          image_newline: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(n_crops, T*T, C) projected features of one image's crops -> (N, C) prompt features
    (N = ``num_features(config, size)``)."""
    newline = config.uses_image_newline
    if newline and image_newline is None:
        raise ValueError(f"mm_patch_merge_type {config.mm_patch_merge_type!r} needs the "
                         "model's image_newline")
    base = features[0]
    if not is_anyres(config):
        return torch.cat([base, image_newline[None].to(base.dtype)]) if newline else base
    if not newline:
        return features.flatten(0, 1)
    cols, rows = grid_shape(config, size)
    if features.shape[0] != 1 + cols * rows:
        raise ValueError(f"{features.shape[0]} crops for a {cols}x{rows} grid (+1 base image)")
    T, C = math.isqrt(base.shape[0]), base.shape[1]
    grid = features[1:].view(rows, cols, T, T, C).permute(4, 0, 2, 1, 3)
    grid = grid.reshape(C, rows * T, cols * T)
    top, bottom, left, right = unpad_window((rows * T, cols * T), size)
    grid = grid[:, top:bottom, left:right]
    h, w = feature_map_shape(config, size)
    if (h, w) != tuple(grid.shape[1:]):
        grid = F.interpolate(grid[None], [h, w], mode="bilinear")[0]
    ends = image_newline.to(grid.dtype)[:, None, None].expand(C, h, 1)
    grid = torch.cat([grid, ends], dim=-1).flatten(1, 2).T
    return torch.cat([base, grid])
