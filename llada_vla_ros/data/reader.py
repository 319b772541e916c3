"""Opening a recording as ``ros2 bag`` leaves it, and reading its messages.

A bag is any of:

- a directory with metadata.yaml and the storage files it lists (a split bag's files are
  read in order as one recording);
- a directory without metadata.yaml (the recorder did not finish, or the files were copied
  without it): its .db3/.mcap files, merged in time order; an .mcap without its footer (the
  recorder was killed) is read up to its last complete record;
- a directory whose metadata.yaml lists fewer storage files than it holds (the recording
  stopped after a split): all of them;
- one .db3/.mcap file (the whole bag when the file lies in a bag directory).

``BagReader.notes`` says what was done whenever it was not the plain case.
"""
from __future__ import annotations

import heapq
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import yaml
from rosbags.rosbag2 import Reader, ReaderError

from . import BagError
from .messages import make_typestore, register_types

STORAGE_SUFFIXES = (".db3", ".mcap")
MCAP_MAGIC = b"\x89MCAP0\r\n"


class TopicSummary(NamedTuple):
    msgtype: Optional[str]
    count: int


class BagReader:
    """One recording, possibly in several storage files; use as a context manager.

    ``topics``: name -> TopicSummary(msgtype, count); ``messages(topics)``: raw messages of
    every storage file in time order; ``notes``: how the bag was opened when not plainly.
    """

    def __init__(self, path):
        self.path = Path(path).expanduser()
        self.notes: list = []
        self._tmp: Optional[str] = None
        self._readers: list = []
        try:
            for target in self._locate():
                self._readers.append(self._open(target))
        except BaseException:
            self.close()
            raise
        self._readers.sort(key=lambda r: r.start_time)  # split files: in time order

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for reader in self._readers:
            reader.close()
        self._readers = []
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # --- what to open --------------------------------------------------------------------
    def _locate(self) -> list:
        path = self.path
        if not path.exists():
            raise BagError(f"{path}: bag not found")
        if path.is_file():
            if (path.parent / "metadata.yaml").is_file():
                return self._directory(path.parent)  # a storage file of a complete bag
            if path.suffix not in STORAGE_SUFFIXES:
                raise BagError(f"{path}: not a rosbag2 bag directory or storage file "
                               f"({', '.join(STORAGE_SUFFIXES)})")
            return [path]
        return self._directory(path)

    def _directory(self, directory: Path) -> list:
        files = storage_files(directory)
        meta = directory / "metadata.yaml"
        if meta.is_file():
            listed = _listed_files(meta)
            extra = [f for f in files if f.name not in listed]
            if listed is None or not extra:
                return [directory]
            self.notes.append(
                f"{meta} lists {len(listed)} storage file(s) but {directory} holds "
                f"{len(files)} (the recording stopped after a split?): read all of them: "
                f"{', '.join(f.name for f in files)}")
            return files
        if not files:
            raise BagError(f"{directory}: not a rosbag2 bag: no metadata.yaml and no storage "
                           f"file ({', '.join(STORAGE_SUFFIXES)})")
        self.notes.append(
            f"{directory} has no metadata.yaml (a recording that did not finish?): read its "
            f"storage file(s) {', '.join(f.name for f in files)} directly")
        return files

    def _open(self, target: Path) -> Reader:
        if target.suffix == ".mcap" and not _mcap_has_footer(target):
            target = self._repaired_mcap(target)
        try:
            reader = Reader(target)
            reader.open()
        except (ReaderError, OSError) as exc:
            raise BagError(f"{self.path}: not a readable rosbag2 bag: {exc}") from exc
        return reader

    def _repaired_mcap(self, path: Path) -> Path:
        self._tmp = self._tmp or tempfile.mkdtemp(prefix="llada_vla_bag_")
        out = Path(self._tmp) / path.name
        kept, size = _complete_mcap(path, out)
        self.notes.append(
            f"{path.name} has no MCAP footer (the recorder was killed?): read its complete "
            f"records, {kept} of {size} bytes, through a repaired copy in {self._tmp}")
        return out

    # --- reading ---------------------------------------------------------------------------
    @property
    def message_count(self) -> int:
        return sum(r.message_count for r in self._readers)

    @property
    def topics(self) -> dict:
        """Topic name -> TopicSummary(msgtype, message count), over every storage file."""
        out: dict = {}
        for reader in self._readers:
            for name, info in reader.topics.items():
                old = out.get(name, TopicSummary(None, 0))
                out[name] = TopicSummary(old.msgtype or info.msgtype, old.count + info.msgcount)
        return dict(sorted(out.items()))

    def connections(self, topics=None) -> list:
        """rosbags connections of ``topics`` (all when None), in every storage file."""
        return [c for r in self._readers for c in r.connections
                if topics is None or c.topic in topics]

    def messages(self, topics=None) -> Iterator[tuple]:
        """Yield ``(topic, msgtype, timestamp_ns, raw CDR)`` in time order."""
        streams = []
        for reader in self._readers:
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            if conns:  # rosbags reads every connection when given none
                streams.append((c.topic, c.msgtype, t, raw)
                               for c, t, raw in reader.messages(connections=conns))
        if len(streams) == 1:
            yield from streams[0]
        else:
            yield from heapq.merge(*streams, key=lambda m: m[2])

    def describe_topics(self) -> str:
        """``/a (pkg/msg/A, 3 msgs), ...`` for error messages."""
        items = [f"{name} ({info.msgtype}, {info.count} msgs)"
                 for name, info in self.topics.items()]
        return ", ".join(items) if items else "none"


def read_bag(path, topics=None) -> Iterator[tuple]:
    """Yield ``(topic, msgtype, timestamp_ns, msg)`` for every message (or only ``topics``).

    Messages are rosbags dataclasses (image data etc. as numpy arrays). An empty bag yields
    nothing; a selected topic of unknown type raises BagError.
    """
    with BagReader(path) as bag:
        wanted = None if topics is None else set(topics)
        conns = bag.connections(wanted)
        if not conns:
            return
        store = make_typestore(custom=False)
        register_types(store, conns, path)
        for topic, msgtype, stamp, raw in bag.messages(wanted):
            yield topic, msgtype, stamp, store.deserialize_cdr(raw, msgtype)


# --- bags on disk ---------------------------------------------------------------------------

def storage_files(directory: Path) -> list:
    """The .db3/.mcap files of a directory, split files in their numeric order."""
    def key(p: Path):
        m = re.search(r"_(\d+)$", p.stem)
        return (p.stem[: m.start()] if m else p.stem, int(m.group(1)) if m else -1, p.name)
    return sorted((p for p in directory.iterdir()
                   if p.is_file() and p.suffix in STORAGE_SUFFIXES), key=key)


def is_bag(path: Path) -> bool:
    """A storage file, or a directory with metadata.yaml or storage files."""
    if path.is_file():
        return path.suffix in STORAGE_SUFFIXES
    return path.is_dir() and ((path / "metadata.yaml").is_file() or bool(storage_files(path)))


def find_bags(paths) -> list:
    """The bags named on a command line: each path is a bag (see the module docstring) or a
    directory holding bags (searched recursively, in name order). Raises BagError for a
    path that does not exist or holds no bag; a bag named twice is used once."""
    found = []
    for path in map(lambda p: Path(p).expanduser(), paths):
        if not path.exists():
            raise BagError(f"{path}: bag not found")
        if is_bag(path):
            found.append(path)
            continue
        inside = []
        for root, dirs, _ in os.walk(path):
            dirs.sort()
            for name in list(dirs):
                if is_bag(Path(root) / name):
                    inside.append(Path(root) / name)
                    dirs.remove(name)  # never look inside a bag
        if not inside:
            raise BagError(f"{path}: no rosbag2 bag in this directory (a bag is a directory "
                           f"with metadata.yaml or {'/'.join(STORAGE_SUFFIXES)} files)")
        found += inside
    return list(dict.fromkeys(found))


def _listed_files(meta: Path) -> Optional[set]:
    """Names of the storage files metadata.yaml lists (None when it cannot be read: the
    rosbags reader then reports the problem)."""
    try:
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
        return {Path(p).name for p in info["relative_file_paths"]}
    except Exception:
        return None


def _mcap_has_footer(path: Path) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) < 2 * len(MCAP_MAGIC):
            return False
        f.seek(-len(MCAP_MAGIC), os.SEEK_END)
        return f.read() == MCAP_MAGIC


def _complete_mcap(src: Path, dst: Path) -> tuple:
    """Copy the complete records of an MCAP file that lacks its footer (header, then records
    of 1 opcode byte + 8-byte little-endian length + content) and close it with an empty
    DataEnd and a Footer without summary, as MCAP readers expect. Returns (bytes kept,
    size)."""
    size = src.stat().st_size
    with open(src, "rb") as f, open(dst, "wb") as out:
        if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise BagError(f"{src}: not an MCAP file (bad magic)")
        out.write(MCAP_MAGIC)
        kept = len(MCAP_MAGIC)
        while True:
            head = f.read(9)
            if len(head) < 9 or head[0] in (0x0F, 0x02):  # end, DataEnd or Footer
                break
            length = int.from_bytes(head[1:], "little")
            if kept + 9 + length > size:
                break  # the record being written when the recorder died
            out.write(head)
            remaining = length
            while remaining:
                block = f.read(min(1 << 20, remaining))
                out.write(block)
                remaining -= len(block)
            kept += 9 + length
        if kept <= len(MCAP_MAGIC):
            raise BagError(f"{src}: MCAP file holds no complete record")
        out.write(b"\x0f" + (4).to_bytes(8, "little") + bytes(4))    # DataEnd, no CRC
        out.write(b"\x02" + (20).to_bytes(8, "little") + bytes(20))  # Footer, no summary
        out.write(MCAP_MAGIC)
    return kept, size
