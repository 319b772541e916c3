"""ScriptedPolicy: a fixed table of actions played chunk after chunk (tests, demos without a
checkpoint, the node's default)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .base import ACTION_DIM, ActionChunk, check_observation


class ScriptedPolicy:
    """Plays a fixed table of actions, chunk after chunk (wrapping around).

    ``delay_s`` makes each call take at least that long, to test that slow inference never
    blocks the control loop.
    """

    def __init__(self, table: np.ndarray, chunk_size: int = 5, delay_s: float = 0.0,
                 model_id: str = "scripted"):
        table = np.asarray(table, dtype=np.float32)
        if table.ndim != 2 or table.shape[1] != ACTION_DIM or len(table) == 0:
            raise ValueError(f"scripted table must be N x {ACTION_DIM}, got {table.shape}")
        self.table = table
        self.chunk_size = int(chunk_size)
        self.delay_s = float(delay_s)
        self.model_id = model_id
        self._cursor = 0

    @classmethod
    def default(cls, **kwargs) -> "ScriptedPolicy":
        """A small square in the horizontal plane, closing then opening the gripper."""
        step = 0.01
        moves = [(step, 0, 0), (0, step, 0), (-step, 0, 0), (0, -step, 0)]
        rows = []
        for i, (dx, dy, dz) in enumerate(moves):
            for _ in range(5):
                rows.append([dx, dy, dz, 0.0, 0.0, 0.0, 1.0 if i % 2 == 0 else 0.0])
        return cls(np.array(rows, dtype=np.float32), **kwargs)

    @classmethod
    def from_csv(cls, path: str | Path, **kwargs) -> "ScriptedPolicy":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"scripted action table not found: {path}")
        table = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        return cls(table, model_id=f"scripted:{path.name}", **kwargs)

    def predict(self, image_rgb: np.ndarray, instruction: str) -> ActionChunk:
        check_observation(image_rgb, instruction)
        start = time.perf_counter()
        idx = (self._cursor + np.arange(self.chunk_size)) % len(self.table)
        self._cursor = int((self._cursor + self.chunk_size) % len(self.table))
        actions = self.table[idx].copy()
        remaining = self.delay_s - (time.perf_counter() - start)
        if remaining > 0:
            time.sleep(remaining)
        return ActionChunk(
            actions=actions,
            confidence=np.ones(self.chunk_size, dtype=np.float32),
            inference_ms=(time.perf_counter() - start) * 1e3,
            model_id=self.model_id,
        )
