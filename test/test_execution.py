"""Chunk execution: receding horizon, temporal ensembling, thread safety."""
import threading
import time

import numpy as np
import pytest

from llada_vla_ros.execution import ChunkExecutor


def chunk(step, k=5, d=7):
    """Action i of a chunk taken at ``step`` holds (step, i, step + i, ...)."""
    a = np.zeros((k, d))
    a[:, 0] = step
    a[:, 1] = np.arange(k)
    a[:, 2] = step + np.arange(k)
    return a


def test_validation():
    with pytest.raises(ValueError, match="mode"):
        ChunkExecutor(mode="open_loop")
    with pytest.raises(ValueError, match="actions_per_chunk"):
        ChunkExecutor(actions_per_chunk=0)
    with pytest.raises(ValueError, match="refill_at"):
        ChunkExecutor(actions_per_chunk=3, refill_at=3)
    ex = ChunkExecutor()
    with pytest.raises(ValueError, match="shape"):
        ex.add_chunk(np.zeros(7), 0)
    ex.add_chunk(chunk(0), 0)
    with pytest.raises(ValueError, match="dims"):
        ex.add_chunk(np.zeros((5, 6)), 1)


# --- receding horizon ----------------------------------------------------------------------

def test_receding_horizon_executes_exactly_n_then_asks():
    ex = ChunkExecutor("receding_horizon", actions_per_chunk=3)
    assert ex.needs_chunk() and ex.queued() == 0
    assert ex.add_chunk(chunk(0, k=5), 0) == 3
    popped = []
    for t in range(3):
        assert not ex.needs_chunk()
        assert ex.queued() == 3 - t
        popped.append(ex.pop(t))
    assert [a[1] for a in popped] == [0, 1, 2]  # the first n actions, in order
    assert ex.needs_chunk() and ex.queued() == 0
    assert ex.pop(3) is None  # actions 3, 4 of the chunk are never executed


def test_receding_horizon_early_refill():
    ex = ChunkExecutor("receding_horizon", actions_per_chunk=4, refill_at=1)
    ex.add_chunk(chunk(0), 0)
    ex.pop(0), ex.pop(1)
    assert not ex.needs_chunk()
    ex.pop(2)
    assert ex.needs_chunk() and ex.queued() == 1


def test_newer_chunk_replaces_queue_and_skips_stale_actions():
    ex = ChunkExecutor("receding_horizon", actions_per_chunk=5, refill_at=1)
    ex.add_chunk(chunk(0), 0)
    for t in range(4):
        ex.pop(t)
    # A chunk observed at step 2 arrives after step 3 ran: its actions for 2, 3 are stale.
    assert ex.add_chunk(chunk(2), 2) == 3
    assert ex.queued() == 3
    a = ex.pop(4)
    assert a[0] == 2 and a[2] == 4  # chunk 2's action meant for step 4, not chunk 0's
    assert [ex.pop(t)[2] for t in (5, 6)] == [5, 6]
    assert ex.pop(7) is None


def test_fully_stale_chunk_gives_nothing_and_older_chunk_ignored():
    ex = ChunkExecutor("receding_horizon", actions_per_chunk=3)
    ex.add_chunk(chunk(10), 10)
    for t in range(10, 13):
        ex.pop(t)
    assert ex.add_chunk(chunk(8, k=3), 8) == 0  # older than the newest
    ex.add_chunk(chunk(11, k=3), 11)
    assert ex.pop(14) is None and ex.needs_chunk()


def test_pop_skips_missed_steps():
    ex = ChunkExecutor("receding_horizon", actions_per_chunk=5)
    ex.add_chunk(chunk(0), 0)
    a = ex.pop(3)  # steps 0..2 were missed
    assert a[2] == 3 and ex.queued() == 1


def test_pop_returns_copy():
    ex = ChunkExecutor("receding_horizon", actions_per_chunk=2)
    c = chunk(0)
    ex.add_chunk(c, 0)
    c[:] = -1  # the caller's array is copied on add
    a = ex.pop(0)
    a[:] = 99
    assert ex.pop(1)[1] == 1


def test_clear_empties():
    for mode in ("receding_horizon", "temporal_ensemble"):
        ex = ChunkExecutor(mode, actions_per_chunk=5)
        ex.add_chunk(chunk(0), 0)
        ex.pop(0)
        ex.clear()
        assert ex.queued() == 0 and ex.needs_chunk()
        assert ex.add_chunk(chunk(0), 0) == 5  # step bookkeeping restarted too
        ex.clear()
        assert ex.pop(1) is None


# --- temporal ensembling -------------------------------------------------------------------

def three_overlapping(ex):
    # Chunks taken at steps 0, 1, 2, each 3 actions with constant value 10*s + i.
    for s in range(3):
        a = np.stack([np.full(7, 10.0 * s + i) for i in range(3)])
        ex.add_chunk(a, s)


def test_ensemble_plain_average():
    ex = ChunkExecutor("temporal_ensemble", actions_per_chunk=3)
    three_overlapping(ex)
    # step 2 is covered by chunk 0 (i=2 -> 2), chunk 1 (i=1 -> 11), chunk 2 (i=0 -> 20).
    ex.pop(0), ex.pop(1)
    assert np.allclose(ex.pop(2), (2 + 11 + 20) / 3)
    assert np.allclose(ex.pop(3), (12 + 21) / 2)  # chunk 0 no longer covers step 3
    assert np.allclose(ex.pop(4), 22)
    assert ex.pop(5) is None and ex.queued() == 0


def test_ensemble_first_steps():
    ex = ChunkExecutor("temporal_ensemble", actions_per_chunk=3)
    ex.add_chunk(np.stack([np.full(7, float(i)) for i in range(3)]), 0)
    assert np.allclose(ex.pop(0), 0.0)
    ex.add_chunk(np.stack([np.full(7, 10.0 + i) for i in range(3)]), 1)
    assert np.allclose(ex.pop(1), (1 + 10) / 2)


@pytest.mark.parametrize("decay", [0.5, -0.7])
def test_ensemble_decay_weights(decay):
    ex = ChunkExecutor("temporal_ensemble", actions_per_chunk=3, ensemble_decay=decay)
    three_overlapping(ex)
    ex.pop(0), ex.pop(1)
    ages = np.array([2, 1, 0])  # chunks 0, 1, 2 at step 2
    w = np.exp(-decay * ages)
    expected = (w @ np.array([2.0, 11.0, 20.0])) / w.sum()
    got = ex.pop(2)
    assert np.allclose(got, expected)
    if decay > 0:
        assert got[0] > (2 + 11 + 20) / 3  # newer chunks (larger values) weigh more
    else:
        assert got[0] < (2 + 11 + 20) / 3


def test_ensemble_averages_gripper_and_needs_chunk():
    ex = ChunkExecutor("temporal_ensemble", actions_per_chunk=2)
    assert ex.needs_chunk()
    a = np.zeros((2, 7))
    a[:, 6] = 1.0
    ex.add_chunk(a, 0)
    assert not ex.needs_chunk()  # a chunk for the next step exists
    ex.pop(0)
    assert ex.needs_chunk()
    b = np.zeros((2, 7))  # gripper closed
    ex.add_chunk(b, 1)
    assert ex.queued() == 2  # step 1 (both chunks) and step 2 (chunk 1)
    assert np.isclose(ex.pop(1)[6], 0.5)


def test_ensemble_uses_first_n_actions_only():
    ex = ChunkExecutor("temporal_ensemble", actions_per_chunk=2)
    ex.add_chunk(chunk(0, k=5), 0)
    assert ex.queued() == 2
    ex.pop(0), ex.pop(1)
    assert ex.pop(2) is None


# --- thread safety -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["receding_horizon", "temporal_ensemble"])
def test_thread_safety_smoke(mode):
    ex = ChunkExecutor(mode, actions_per_chunk=5, refill_at=1 if mode == "receding_horizon" else 0)
    errors, popped = [], []
    step = [0]
    done = threading.Event()

    def producer():
        try:
            while not done.is_set():
                s = step[0]
                if ex.needs_chunk():
                    ex.add_chunk(chunk(s, k=5), s)
                ex.queued()
                time.sleep(0)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def consumer():
        try:
            deadline = time.monotonic() + 10.0
            while step[0] < 500 and time.monotonic() < deadline:
                t = step[0]
                a = ex.pop(t)
                if a is not None:
                    popped.append((t, a))
                    step[0] = t + 1
                time.sleep(0)  # let the producer run
        except Exception as e:  # pragma: no cover
            errors.append(e)
        finally:
            done.set()

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not errors
    assert len(popped) == 500
    # Every action came out for the step it was planned for, steps strictly increasing.
    assert all(a[2] == t for t, a in popped)
    assert [t for t, _ in popped] == sorted({t for t, _ in popped})
    assert ex.queued() >= 0
