"""Action-chunk execution for the control loop (one action per tick).

The policy returns chunks of K actions; action i of a chunk whose observation was taken at
step s is meant for step s + i. ``ChunkExecutor`` turns chunks into one action per step:

- ``receding_horizon``: execute the first ``actions_per_chunk`` (n) actions of the newest
  chunk, then re-plan. ``needs_chunk()`` is True once at most ``refill_at`` actions are left:
  ``refill_at=0`` (default) asks after exactly n actions (plain receding horizon, the robot
  waits during inference); ``refill_at=1`` asks one action early, LeRobot-style, so inference
  overlaps the last action. A newer chunk replaces the queue; its actions for steps that have
  already passed are skipped.
- ``temporal_ensemble``: keep every chunk; the action for step t is the weighted mean of all
  predictions for t (all dims, gripper included), weight ``exp(-ensemble_decay * age)`` with
  age = t - s >= 0. decay 0: plain mean; decay > 0: newer chunks weigh more; decay < 0: older
  chunks weigh more (ACT's original scheme). Each chunk contributes its first n actions.
  ``needs_chunk()`` is True when no chunk was observed at or after the next step.

A chunk observed before the newest one already added is ignored (``add_chunk`` returns 0).

Step indices: "step" is whatever the caller counts; counting executed actions (advance only
when ``pop`` returned one) makes a chunk planned while the robot held fully usable, and only
actions the robot already moved past become stale. Non-finite actions pass through (the
safety filter holds on them). Thread-safe: every method takes one lock, so an inference
thread may ``add_chunk`` while a timer calls ``pop``. After ``clear()`` the caller should
drop the result of an inference started before it.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Optional

import numpy as np

MODES = ("receding_horizon", "temporal_ensemble")


class ChunkExecutor:
    def __init__(self, mode: str = "receding_horizon", actions_per_chunk: int = 5,
                 ensemble_decay: float = 0.0, refill_at: int = 0):
        if mode not in MODES:
            raise ValueError(f"execution mode must be one of {MODES}, got {mode!r}")
        if int(actions_per_chunk) < 1:
            raise ValueError(f"actions_per_chunk must be >= 1, got {actions_per_chunk}")
        if not np.isfinite(ensemble_decay):
            raise ValueError(f"ensemble_decay must be finite, got {ensemble_decay}")
        if not 0 <= int(refill_at) < int(actions_per_chunk):
            raise ValueError(f"refill_at must be in [0, actions_per_chunk), got {refill_at}")
        self.mode = mode
        self.actions_per_chunk = int(actions_per_chunk)
        self.ensemble_decay = float(ensemble_decay)
        self.refill_at = int(refill_at)
        self._lock = threading.Lock()
        self._dim: Optional[int] = None
        self._queue: deque = deque()   # receding horizon: (step, action)
        self._chunks: list = []        # temporal ensemble: (step, actions (n, D))
        self._newest: Optional[int] = None  # observation step of the newest chunk
        self._next = 0                 # first step not executed yet

    def add_chunk(self, actions, step_index: int) -> int:
        """Add a (K, D) chunk observed at ``step_index``; returns how many actions are usable."""
        a = np.array(actions, dtype=np.float64)  # a copy
        if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"chunk must be a non-empty (K, D) array, got shape {a.shape}")
        s = int(step_index)
        a = a[:self.actions_per_chunk]
        with self._lock:
            if self._dim is not None and a.shape[1] != self._dim:
                raise ValueError(f"chunk has {a.shape[1]} dims, earlier chunks {self._dim}")
            self._dim = a.shape[1]
            if self._newest is not None and s < self._newest:
                return 0  # older than what we already have
            self._newest = s
            first = max(0, self._next - s)  # skip actions for steps already passed
            usable = max(0, len(a) - first)
            if self.mode == "receding_horizon":
                self._queue = deque((s + i, a[i]) for i in range(first, len(a)))
            elif usable:
                self._chunks.append((s, a))
            return usable

    def pop(self, step_index: int) -> Optional[np.ndarray]:
        """Action (D,) for ``step_index``, or None when there is none (the caller holds)."""
        t = int(step_index)
        with self._lock:
            if self.mode == "receding_horizon":
                action = self._pop_queue(t)
            else:
                action = self._pop_ensemble(t)
            self._next = t + 1 if action is not None else t
            return action

    def _pop_queue(self, t: int) -> Optional[np.ndarray]:
        while self._queue and self._queue[0][0] < t:
            self._queue.popleft()
        if self._queue and self._queue[0][0] == t:
            return self._queue.popleft()[1].copy()
        return None

    def _pop_ensemble(self, t: int) -> Optional[np.ndarray]:
        self._chunks = [(s, a) for s, a in self._chunks if s + len(a) > t]
        preds = [(t - s, a[t - s]) for s, a in self._chunks if s <= t]
        if not preds:
            return None
        ages = np.array([age for age, _ in preds], dtype=np.float64)
        logw = -self.ensemble_decay * ages
        w = np.exp(logw - logw.max())
        values = np.stack([p for _, p in preds])
        return (w[:, None] * values).sum(axis=0) / w.sum()

    def needs_chunk(self) -> bool:
        """Whether the inference thread should be asked for a new chunk now."""
        with self._lock:
            if self.mode == "receding_horizon":
                return self._count() <= self.refill_at
            return self._newest is None or self._newest < self._next

    def queued(self) -> int:
        """Number of upcoming steps (from the next one on) that have an action."""
        with self._lock:
            return self._count()

    def _count(self) -> int:
        if self.mode == "receding_horizon":
            return sum(1 for step, _ in self._queue if step >= self._next)
        steps = set()
        for s, a in self._chunks:
            steps.update(range(max(s, self._next), s + len(a)))
        return len(steps)

    def clear(self) -> None:
        """Drop every queued action and chunk, and restart the step bookkeeping."""
        with self._lock:
            self._queue.clear()
            self._chunks = []
            self._newest = None
            self._next = 0
