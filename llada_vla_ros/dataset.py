"""Training examples from recorded bags (teleoperated demonstrations or policy trials).

A frame with an instruction and the ``chunk_size - 1`` frames after it give one example:
(image of the first frame, instruction, ``chunk_size`` x 7 recorded actions). A window never
crosses an instruction change or a gap in any topic the labels use (``Frame.segment``: the
episode reader starts a new segment at each gap and at each frame left without an action),
so the last ``chunk_size - 1`` frames of a segment only appear as later actions of earlier
windows. Frames are read with ``bag.load_episode`` (joint states through forward
kinematics, or recorded ActionChunk messages).

A checkpoint records what it was trained on beside the action statistics, in its
``dataset_statistics.json`` entry: ``control_hz`` (the rate of the labels: the policy must
run at it), ``num_transitions`` and ``num_trajectories`` (OpenVLA's keys), and the mean,
std, min and max of the actions next to q01/q99 (``write_dataset_info``,
``checkpoint_control_hz``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .bag import Episode, load_episode
from .training import Example


def segments(episode: Episode) -> list:
    """Index ranges [start, stop) of frames with one instruction and no gap between them."""
    frames = episode.frames
    out, start = [], 0
    for i in range(1, len(frames) + 1):
        if (i == len(frames) or frames[i].instruction != frames[i - 1].instruction
                or frames[i].segment != frames[i - 1].segment):
            if frames[start].instruction.strip():
                out.append((start, i))
            start = i
    return out


def episode_examples(episode: Episode, chunk_size: int = 5) -> list:
    """Every complete window of ``chunk_size`` frames inside one segment, as Examples."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    examples = []
    actions = episode.actions
    for start, stop in segments(episode):
        for i in range(start, stop - chunk_size + 1):
            window = actions[i:i + chunk_size]
            if np.isfinite(window).all():
                f = episode.frames[i]
                examples.append(Example(f.image, f.instruction, window.copy()))
    return examples


def load_examples(bags: Sequence, chunk_size: int = 5, progress: bool = True,
                  **episode_kwargs) -> tuple:
    """Examples of every bag (``episode_kwargs`` go to ``load_episode``: topics, ``hz``,
    ``default_instruction``, ...). Returns (examples, per-bag summary). A bag that gives no
    example is an error naming the bag and why, rather than a silently smaller dataset."""
    from tqdm import tqdm

    examples, summary = [], {}
    for bag in tqdm(list(bags), desc="bags", unit="bag", disable=not progress):
        episode = load_episode(bag, **episode_kwargs)
        found = episode_examples(episode, chunk_size)
        with_text = sum(1 for f in episode.frames if f.instruction.strip())
        if not found:
            skipped = "".join(f"; {n} without an action: {why}"
                              for why, n in episode.skipped.items())
            raise ValueError(
                f"{bag}: no training example ({len(episode)} frames with an action, "
                f"{with_text} with an instruction{skipped}; an example needs {chunk_size} "
                "consecutive frames under one instruction, without a gap). Give --instruction "
                "if the bag has none, or record a longer episode")
        summary[str(Path(bag))] = {"frames": len(episode), "frames_with_instruction": with_text,
                                   "examples": len(found),
                                   "action_source": episode.action_source,
                                   "skipped": episode.skipped, "notes": episode.notes}
        examples += found
    return examples, summary


def split_bags(bags: Sequence, fraction: float, seed: int = 0) -> tuple:
    """(train, held out): ``round(fraction x n)`` bags (at least one, never all) chosen with
    a fixed seed, whole episodes only (frames of one episode look alike: a frame split
    would measure memory, not generalization)."""
    bags = sorted(str(b) for b in bags)
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction}")
    if len(bags) < 2:
        raise ValueError("a validation split needs at least 2 bags")
    n = min(len(bags) - 1, max(1, int(round(fraction * len(bags)))))
    held = set(np.random.default_rng(seed).permutation(len(bags))[:n].tolist())
    return ([b for i, b in enumerate(bags) if i not in held],
            [b for i, b in enumerate(bags) if i in held])


def write_dataset_info(directory, unnorm_key: str, examples, control_hz: Optional[float],
                       trajectories: int) -> Path:
    """Add the control rate, counts and action moments to the checkpoint's statistics entry
    (written by ``ActionTokenizer.save_pretrained`` first)."""
    from .action_tokenizer import STATS_FILE

    path = Path(directory) / STATS_FILE
    table = json.loads(path.read_text(encoding="utf-8"))
    entry = table[unnorm_key]
    a = np.stack([e.actions for e in examples]).reshape(-1, examples[0].actions.shape[-1])
    entry["action"].update(mean=a.mean(0).tolist(), std=a.std(0).tolist(),
                           min=a.min(0).tolist(), max=a.max(0).tolist())
    entry.update(control_hz=None if not control_hz else float(control_hz),
                 num_transitions=len(examples), num_trajectories=int(trajectories))
    path.write_text(json.dumps(table, indent=2), encoding="utf-8")
    return path


def checkpoint_control_hz(checkpoint, unnorm_key: Optional[str] = None) -> Optional[float]:
    """The control rate a checkpoint was trained at (its labels' rate), or None when it is
    not a checkpoint directory or does not record one."""
    from .action_tokenizer import STATS_FILE

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
    hz = (table.get(unnorm_key) or {}).get("control_hz")
    return float(hz) if hz else None
