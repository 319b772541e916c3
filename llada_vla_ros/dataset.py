"""Training examples from recorded bags (teleoperated demonstrations or policy trials).

A frame with an instruction and the ``chunk_size - 1`` frames after it give one example:
(image of the first frame, instruction, ``chunk_size`` x 7 recorded actions). A window never
crosses an instruction change or a gap in any topic the labels use (``Frame.segment``: the
episode reader starts a new segment at each gap and at each frame left without an action),
so the last ``chunk_size - 1`` frames of a segment only appear as later actions of earlier
windows. Frames are read with ``bag.load_episode`` (joint states through forward
kinematics, or recorded ActionChunk messages).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

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
