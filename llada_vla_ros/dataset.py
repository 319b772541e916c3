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
std, min and max of the actions next to q01/q99 (``write_dataset_info``;
``action_tokenizer.checkpoint_control_hz`` reads it).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .action_tokenizer import NormStats
from .bag import Episode, load_episode
from .data.episode import open_episode
from .training import Example


def segments(episode) -> list:
    """Index ranges [start, stop) of frames with one instruction and no gap between them
    (``episode``: an Episode, or any sequence of frames or labels with ``instruction`` and
    ``segment``)."""
    frames = getattr(episode, "frames", episode)
    out, start = [], 0
    for i in range(1, len(frames) + 1):
        if (i == len(frames) or frames[i].instruction != frames[i - 1].instruction
                or frames[i].segment != frames[i - 1].segment):
            if frames[start].instruction.strip():
                out.append((start, i))
            start = i
    return out


def window_starts(frames, actions: np.ndarray, chunk_size: int) -> list:
    """First frames of every complete window of ``chunk_size`` frames inside one segment
    with finite actions (``frames``: frames or labels; ``actions``: their (N, 7) array)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [i for start, stop in segments(frames)
            for i in range(start, stop - chunk_size + 1)
            if np.isfinite(actions[i:i + chunk_size]).all()]


def episode_examples(episode: Episode, chunk_size: int = 5) -> list:
    """Every complete window of ``chunk_size`` frames inside one segment, as Examples."""
    actions = episode.actions
    return [Example(episode.frames[i].image, episode.frames[i].instruction,
                    actions[i:i + chunk_size].copy(), episode.frames[i].state)
            for i in window_starts(episode.frames, actions, chunk_size)]


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
        if not found:
            raise ValueError(_no_example(bag, len(episode), episode.frames, episode.skipped,
                                         chunk_size))
        summary[str(Path(bag))] = _bag_summary(episode, episode.frames, len(found))
        examples += found
    return examples, summary


# --- streaming: datasets larger than memory --------------------------------------------------

STATS_ROWS = 1_000_000  # action rows kept for the quantiles (a uniform sample beyond this)


class BagExamples(IterableDataset):
    """The examples of many bags, streamed: bounded host memory whatever the dataset size.

    Construction reads every bag once without pixels (windows, counts, the action
    statistics; bad bags fail here, naming the bag). Iteration decodes one bag's images at
    a time, in order, keeps only the window starts, downscales them on the fly (``max_side``:
    longest image side, aspect kept, so LLaDA-V's anyres input still sees the camera's
    shape) and shuffles through a buffer of ``shuffle_buffer`` examples; the bag order is
    shuffled per epoch (``set_epoch``). ``shard(n, i)`` gives process ``i`` of ``n`` every
    n-th bag (what ``finetuning.loop.fit`` asks of an iterable dataset); ``workers`` > 0
    decodes in that many DataLoader worker processes, each taking its own bags.
    Peak memory: ``shuffle_buffer`` (+ ``workers`` x 2 prefetched) downscaled images, one
    decoded frame, and the labels (a few numbers per frame) of one bag.
    """

    def __init__(self, bags: Sequence, chunk_size: int = 5, max_side: Optional[int] = None,
                 shuffle_buffer: int = 64, seed: int = 0, workers: int = 0,
                 progress: bool = False, **episode_options):
        from tqdm import tqdm

        if shuffle_buffer < 1 or workers < 0 or (max_side is not None and max_side < 8):
            raise ValueError("shuffle_buffer must be >= 1, workers >= 0, max_side >= 8")
        self.chunk_size, self.max_side = int(chunk_size), max_side
        self.shuffle_buffer, self.seed, self.workers = int(shuffle_buffer), int(seed), workers
        self.options, self.epoch = dict(episode_options), 0
        self.summary, self._starts = {}, {}
        rows, seen = [], 0
        rng = np.random.default_rng(seed)
        for bag in tqdm(list(bags), desc="bags", unit="bag", disable=not progress):
            stream = open_episode(bag, **self.options)
            labels = stream.labels
            actions = np.array([f.action for f in labels], dtype=np.float64).reshape(-1, 7)
            starts = window_starts(labels, actions, self.chunk_size)
            if not starts:
                raise ValueError(_no_example(bag, len(labels), labels, stream.skipped,
                                             self.chunk_size))
            self._starts[str(bag)] = starts
            self.summary[str(Path(bag))] = _bag_summary(stream, labels, len(starts))
            # the statistics see each action as often as the windows hold it, as
            # NormStats.from_actions over the examples of load_examples does
            index = (np.asarray(starts)[:, None] + np.arange(self.chunk_size)).ravel()
            rows, seen = _reservoir(rows, seen, actions[index], STATS_ROWS, rng)
        self.action_sample = np.concatenate(rows)  # every windowed action, or a uniform sample
        self.stats = NormStats.from_actions(self.action_sample)
        self.bags = list(self._starts)

    def __len__(self) -> int:
        return sum(len(s) for s in self._starts.values())

    def shard(self, num_shards: int, index: int) -> "BagExamples":
        part = copy.copy(self)
        part.bags = self.bags[index::num_shards]
        if not part.bags:
            raise ValueError(f"{len(self.bags)} bag(s) cannot feed {num_shards} processes: "
                             "give at least one bag per process")
        return part

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Example]:
        info = get_worker_info()
        if self.workers and info is None:  # hand the bags to worker processes
            yield from DataLoader(self, batch_size=None, num_workers=self.workers,
                                  collate_fn=lambda e: e)
            return
        rng = np.random.default_rng([self.seed, self.epoch] + ([info.id] if info else []))
        bags = [self.bags[i] for i in np.random.default_rng([self.seed, self.epoch])
                .permutation(len(self.bags))]
        if info is not None:
            bags = bags[info.id::info.num_workers]
        buffer = []
        for bag in bags:
            for example in self._bag_examples(bag):
                buffer.append(example)
                if len(buffer) >= self.shuffle_buffer:
                    yield buffer.pop(int(rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))))

    def _bag_examples(self, bag: str) -> Iterator[Example]:
        stream = open_episode(bag, **self.options)
        labels = stream.labels
        actions = np.array([f.action for f in labels], dtype=np.float32).reshape(-1, 7)
        starts = set(self._starts[bag])
        for i, frame in enumerate(stream):
            if i in starts:
                yield Example(_downscale(frame.image, self.max_side), frame.instruction,
                              actions[i:i + self.chunk_size].copy(), frame.state)


def _downscale(image: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image
    from PIL import Image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def _reservoir(rows: list, seen: int, new: np.ndarray, cap: int, rng) -> tuple:
    """Keep a uniform sample of at most ``cap`` of all rows seen (exact below ``cap``)."""
    kept = sum(len(r) for r in rows)
    room = max(0, cap - kept)
    rows.append(new[:room])
    rest = new[room:]
    seen_before = seen + min(len(new), room)
    if len(rest):
        pool = np.concatenate(rows)
        # Algorithm R, vectorised: row j (the k-th seen overall) replaces a random slot
        # with probability cap / k
        k = seen_before + 1 + np.arange(len(rest))
        take = rng.random(len(rest)) < cap / k
        slots = rng.integers(0, cap, int(take.sum()))
        pool[slots] = rest[take]
        rows[:] = [pool]
    return rows, seen + len(new)


def _bag_summary(stream, labels, examples: int) -> dict:
    return {"frames": len(labels),
            "frames_with_instruction": sum(1 for f in labels if f.instruction.strip()),
            "examples": examples, "action_source": stream.action_source,
            "skipped": dict(stream.skipped), "notes": list(stream.notes)}


def _no_example(bag, frames: int, labels, skipped: dict, chunk_size: int) -> str:
    with_text = sum(1 for f in labels if f.instruction.strip())
    why = "".join(f"; {n} without an action: {reason}" for reason, n in skipped.items())
    return (f"{bag}: no training example ({frames} frames with an action, {with_text} with "
            f"an instruction{why}; an example needs {chunk_size} consecutive frames under one "
            "instruction, without a gap). Give --instruction if the bag has none, or record "
            "a longer episode")


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


def write_dataset_info(directory, unnorm_key: str, actions: np.ndarray,
                       control_hz: Optional[float], transitions: int,
                       trajectories: int) -> Path:
    """Add the control rate, counts and moments of ``actions`` (every training action, or
    BagExamples' uniform sample of them) to the checkpoint's statistics entry (written by
    ``ActionTokenizer.save_pretrained`` first)."""
    from .action_tokenizer import STATS_FILE

    path = Path(directory) / STATS_FILE
    table = json.loads(path.read_text(encoding="utf-8"))
    entry = table[unnorm_key]
    a = np.asarray(actions, dtype=np.float64)
    a = a.reshape(-1, a.shape[-1])
    entry["action"].update(mean=a.mean(0).tolist(), std=a.std(0).tolist(),
                           min=a.min(0).tolist(), max=a.max(0).tolist())
    entry.update(control_hz=None if not control_hz else float(control_hz),
                 num_transitions=int(transitions), num_trajectories=int(trajectories))
    path.write_text(json.dumps(table, indent=2), encoding="utf-8")
    return path
