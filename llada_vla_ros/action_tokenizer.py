"""Continuous robot actions <-> discrete action classes (numpy only, no torch).

An action chunk is K x D floats (D = 7: dx, dy, dz, droll, dpitch, dyaw, gripper). Each
dimension is normalized with its q01/q99 statistics into [-1, 1] (clipped), except the
dimensions whose ``mask`` is False (the gripper), which are used raw. [-1, 1] is cut into
``num_bins`` uniform bins; a value becomes the index of its bin (its *local class*,
0..num_bins-1) and a class decodes to its bin center. The model maps local classes to
vocabulary ids (``action_token_ids``); this module only validates those ids.

Statistics live in ``dataset_statistics.json`` next to the checkpoint, keyed by dataset like
OpenVLA's ``unnorm_key``: ``{"bridge_orig": {"action": {"q01": [...], "q99": [...],
"mask": [...]}}}``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

STATS_FILE = "dataset_statistics.json"
NUM_BINS = 32
ACTION_DIM = 7
CHUNK_SIZE = 5
MASK_TOKEN_ID = 126336  # LLaDA's <|mdm_mask|>
FIRST_ACTION_TOKEN_ID = 126084  # LLaDA's <|reserved_token_0|>


def default_action_token_ids(num_bins: int = NUM_BINS,
                             first: int = FIRST_ACTION_TOKEN_ID) -> list[int]:
    """``num_bins`` consecutive ids starting at ``first`` (LLaDA reserved tokens)."""
    return list(range(first, first + num_bins))


def validate_action_token_ids(ids: Sequence[int], num_bins: int, mask_token_id: int,
                              vocab_size: Optional[int] = None) -> list[int]:
    """Return ``ids`` as a list of ints, or raise ValueError naming what is wrong."""
    ids = [int(i) for i in ids]
    if len(ids) != num_bins:
        raise ValueError(f"need exactly num_bins={num_bins} action token ids, got {len(ids)}")
    if len(set(ids)) != len(ids):
        dups = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"action token ids contain duplicates: {dups}")
    if int(mask_token_id) in ids:
        raise ValueError(
            f"action token ids include the mask token id {mask_token_id}: the mask token "
            "cannot also be an action token; pick other (reserved) ids")
    if min(ids) < 0:
        raise ValueError(f"action token ids must be >= 0, got {min(ids)}")
    if vocab_size is not None and max(ids) >= vocab_size:
        raise ValueError(f"action token id {max(ids)} is outside the vocabulary "
                         f"(vocab_size={vocab_size})")
    return ids


@dataclass
class NormStats:
    """Per-dimension q01/q99 and the mask of normalized dimensions (False = left raw)."""

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray

    def __post_init__(self):
        self.q01 = np.asarray(self.q01, dtype=np.float64).reshape(-1)
        self.q99 = np.asarray(self.q99, dtype=np.float64).reshape(-1)
        self.mask = np.asarray(self.mask, dtype=bool).reshape(-1)
        if not (self.q01.shape == self.q99.shape == self.mask.shape):
            raise ValueError(f"q01/q99/mask lengths differ: {self.q01.shape[0]}, "
                             f"{self.q99.shape[0]}, {self.mask.shape[0]}")
        if np.any(self.q99 < self.q01):
            raise ValueError("q99 must be >= q01 in every dimension")

    @property
    def dim(self) -> int:
        return int(self.q01.shape[0])

    @classmethod
    def from_actions(cls, actions: np.ndarray, mask: Optional[Sequence[bool]] = None
                     ) -> "NormStats":
        """q01/q99 over all rows of ``actions`` (..., D). Default mask: all but the last
        dimension (the gripper) normalized."""
        a = np.asarray(actions, dtype=np.float64)
        a = a.reshape(-1, a.shape[-1])
        if mask is None:
            mask = [True] * (a.shape[1] - 1) + [False]
        return cls(np.quantile(a, 0.01, axis=0), np.quantile(a, 0.99, axis=0), mask)

    def to_dict(self) -> dict:
        return {"q01": self.q01.tolist(), "q99": self.q99.tolist(), "mask": self.mask.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "NormStats":
        if "q01" not in d or "q99" not in d:
            raise ValueError(f"action statistics need q01 and q99, got keys {sorted(d)}")
        mask = d.get("mask", [True] * len(d["q01"]))
        return cls(d["q01"], d["q99"], mask)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, dtype=np.float64)
        span = self.q99 - self.q01
        safe = np.where(span > 0, span, 1.0)
        scaled = np.where(span > 0, 2.0 * (a - self.q01) / safe - 1.0, 0.0)
        return np.clip(np.where(self.mask, scaled, a), -1.0, 1.0)

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        n = np.asarray(normalized, dtype=np.float64)
        return np.where(self.mask, 0.5 * (n + 1.0) * (self.q99 - self.q01) + self.q01, n)


def load_stats_file(path: str | Path, unnorm_key: Optional[str] = None) -> tuple[str, NormStats]:
    """Read ``dataset_statistics.json``; return (key, stats). ``unnorm_key=None`` works only
    when the file holds exactly one dataset."""
    path = Path(path)
    if path.is_dir():
        path = path / STATS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"action statistics not found: {path}")
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{path} holds no dataset statistics")
    if not unnorm_key:
        if len(table) != 1:
            raise ValueError(f"{path} holds statistics for several datasets {sorted(table)}; "
                             "choose one with unnorm_key")
        unnorm_key = next(iter(table))
    if unnorm_key not in table:
        raise KeyError(f"unnorm_key {unnorm_key!r} not in {path}; available: {sorted(table)}")
    entry = table[unnorm_key]
    return unnorm_key, NormStats.from_dict(entry.get("action", entry))


class ActionTokenizer:
    """Actions (K, D) in robot units <-> local classes (K, D) in 0..num_bins-1."""

    def __init__(self, stats: NormStats, num_bins: int = NUM_BINS,
                 action_token_ids: Optional[Sequence[int]] = None,
                 mask_token_id: int = MASK_TOKEN_ID, chunk_size: int = CHUNK_SIZE,
                 unnorm_key: Optional[str] = None):
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        self.stats = stats
        self.num_bins = int(num_bins)
        self.chunk_size = int(chunk_size)
        self.mask_token_id = int(mask_token_id)
        ids = action_token_ids if action_token_ids is not None else default_action_token_ids(
            self.num_bins)
        self.action_token_ids = validate_action_token_ids(ids, self.num_bins, self.mask_token_id)
        self.unnorm_key = unnorm_key
        self.bin_centers = (-1.0 + (np.arange(self.num_bins) + 0.5) * 2.0 / self.num_bins)

    @property
    def action_dim(self) -> int:
        return self.stats.dim

    @property
    def half_bin(self) -> np.ndarray:
        """Half a bin width per dimension in robot units (the round-trip error bound)."""
        half = 1.0 / self.num_bins  # half of the bin width 2 / num_bins in [-1, 1]
        return np.where(self.stats.mask, half * 0.5 * (self.stats.q99 - self.stats.q01), half)

    def _check_dim(self, a: np.ndarray) -> None:
        if a.ndim < 1 or a.shape[-1] != self.action_dim:
            raise ValueError(f"expected (..., {self.action_dim}) array, got {a.shape}")

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """(..., D) floats in robot units -> (..., D) int64 classes."""
        a = np.asarray(actions, dtype=np.float64)
        self._check_dim(a)
        if not np.all(np.isfinite(a)):
            raise ValueError("actions contain NaN or inf")
        n = self.stats.normalize(a)
        classes = np.floor((n + 1.0) * 0.5 * self.num_bins).astype(np.int64)
        return np.clip(classes, 0, self.num_bins - 1)

    def decode(self, classes: np.ndarray) -> np.ndarray:
        """(..., D) classes -> (..., D) float32 robot units (bin centers, un-normalized)."""
        c = np.asarray(classes)
        self._check_dim(c)
        if not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"classes must be integers, got {c.dtype}")
        if c.size and (c.min() < 0 or c.max() >= self.num_bins):
            raise ValueError(f"classes must lie in 0..{self.num_bins - 1}, got "
                             f"{int(c.min())}..{int(c.max())}")
        return self.stats.unnormalize(self.bin_centers[c]).astype(np.float32)

    def classes_to_token_ids(self, classes: np.ndarray) -> np.ndarray:
        """Local classes -> vocabulary ids; -1 (masked) -> mask_token_id."""
        c = np.asarray(classes, dtype=np.int64)
        table = np.asarray(self.action_token_ids, dtype=np.int64)
        return np.where(c < 0, self.mask_token_id, table[np.clip(c, 0, None)])

    def token_ids_to_classes(self, token_ids: np.ndarray) -> np.ndarray:
        """Vocabulary ids -> local classes; any non-action id -> -100 (paper eq. 6)."""
        t = np.asarray(token_ids, dtype=np.int64)
        out = np.full(t.shape, -100, dtype=np.int64)
        for cls, tid in enumerate(self.action_token_ids):
            out[t == tid] = cls
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, unnorm_key: Optional[str] = None,
                        num_bins: Optional[int] = None) -> "ActionTokenizer":
        """Statistics from ``dataset_statistics.json``; bins and token ids from the
        checkpoint's config.json when present."""
        directory = Path(directory)
        key, stats = load_stats_file(directory, unnorm_key)
        cfg = {}
        if (directory / "config.json").is_file():
            with open(directory / "config.json", encoding="utf-8") as f:
                cfg = json.load(f)
        bins = int(num_bins or cfg.get("num_bins", NUM_BINS))
        ids = cfg.get("action_token_ids") if num_bins in (None, cfg.get("num_bins")) else None
        return cls(stats, num_bins=bins, action_token_ids=ids,
                   mask_token_id=int(cfg.get("mask_token_id", MASK_TOKEN_ID)),
                   chunk_size=int(cfg.get("chunk_size", CHUNK_SIZE)), unnorm_key=key)

    def save_pretrained(self, directory: str | Path, key: Optional[str] = None) -> Path:
        """Add (or replace) this tokenizer's statistics under ``key`` in the stats file."""
        key = key or self.unnorm_key
        if not key:
            raise ValueError("save_pretrained needs a dataset key (e.g. 'bridge_orig')")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / STATS_FILE
        table = {}
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                table = json.load(f)
        table[key] = {"action": self.stats.to_dict()}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=2)
        return path


def checkpoint_control_hz(checkpoint, unnorm_key: Optional[str] = None) -> Optional[float]:
    """The control rate a checkpoint was trained at (its labels' rate), or None when it is
    not a checkpoint directory or does not record a usable one."""
    path = Path(str(checkpoint)).expanduser() / STATS_FILE
    if not path.is_file():
        return None
    table = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(table, dict) or not table:
        return None
    if not unnorm_key:
        if len(table) != 1:
            return None
        unnorm_key = next(iter(table))
    entry = table.get(unnorm_key)
    try:
        hz = float(entry.get("control_hz")) if isinstance(entry, dict) else None
    except (TypeError, ValueError):  # absent or not a number: not recorded
        return None
    return hz if hz is not None and np.isfinite(hz) and hz > 0 else None


def control_rate_mismatch(checkpoint, control_hz: float,
                          unnorm_key: Optional[str] = None) -> str:
    """'' when ``control_hz`` is the rate ``checkpoint`` was trained at (or it records none);
    otherwise why running it at ``control_hz`` is wrong (the node logs it at start-up)."""
    trained = checkpoint_control_hz(checkpoint, unnorm_key) if checkpoint else None
    if not trained or abs(trained - float(control_hz)) < 1e-6:
        return ""
    return (f"control_hz is {float(control_hz):g} Hz but the checkpoint was trained on "
            f"actions at {trained:g} Hz: each action is one {trained:g} Hz step, so the arm "
            f"moves {float(control_hz) / trained:.2g}x as fast as in the demonstrations "
            f"(set control_hz:={trained:g})")
