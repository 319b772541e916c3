"""Shared by sim_success.py, ablations.py, recovery.py and execution.py: expert
demonstrations, training runs and closed-loop evaluations in the simulator, each cached on
disk so a sweep resumes where it stopped, with its CPU time counted.

- demonstrations: ``llada-vla-sim-collect`` bags under ``WORK/demos/<task>_<layout>_...``
  (collected once for the largest count asked; a run with N demonstrations uses the first N
  seeds);
- training: ``llada-vla-train`` (``finetune.main``, the command line's own code) into
  ``WORK/runs/<name>``; a run whose ``train_log.json`` exists is not trained again;
- evaluation: ``llada-vla-sim-eval``'s in-process episodes (``sim.evaluate.run_in_process``)
  of a checkpoint on held-out seeds, cached as ``eval_<key>.json`` beside the checkpoint.

Nothing here estimates a figure: a result exists only once its run and evaluation did.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("LLADA_SIM_RUNS", ROOT / "out" / "sim_runs"))
IMAGE_SIZE = "128x96"  # the camera's field of view at 1/5 of its size (the model sees 64x64)
NOISE = 0.002  # the expert's action noise while collecting (as in the README's example)
VAL_SEED = 900  # held-out bags for the training log's validation (never evaluated on)
EVAL_SEED = 1000  # held-out random layouts: seeds EVAL_SEED ...


class CpuClock:
    """CPU seconds of this process and its children, per stage and in all."""

    def __init__(self):
        self.total = 0.0

    def __enter__(self):
        self._start = _cpu()
        return self

    def __exit__(self, *exc):
        self.seconds = _cpu() - self._start
        self.total += self.seconds


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def demos(task: str, episodes: int, seed: int = 0, layout: str = "random",
          image_size: str = IMAGE_SIZE, noise: float = NOISE, rotation_noise=None,
          after_success=None, log=print) -> list:
    """Bags of ``episodes`` successful expert episodes of ``task`` from seed ``seed`` on
    (``rotation_noise``: roll, pitch, yaw stds in rad, None for the expert's default;
    ``after_success``: steps recorded past the first success, None for collect's default,
    ``collect.AFTER_SUCCESS``)."""
    from llada_vla_ros.sim import collect

    rot = rotation_text(rotation_noise)
    out = WORK / "demos" / (f"{task}_{layout}_s{seed}_{image_size}_noise{noise:g}"
                            + ("" if rot is None else f"_rot{rot}") + data_tag("_")
                            + ("" if after_success is None else f"_after{after_success}"))
    have = sorted(p for p in out.glob(f"{task}_seed*") if (p / "metadata.yaml").is_file())
    if len(have) < episodes:
        # collect the missing seeds (failed expert episodes are dropped, so ask a few more)
        tmp = WORK / "demos" / "_collecting"
        shutil.rmtree(tmp, ignore_errors=True)
        start = seed + len(have)
        log(f"collecting {task}: seeds {start}..{seed + episodes - 1} into {out}")
        code = collect.main(["--task", task, "--layout", layout, "--episodes",
                             str(episodes - len(have)), "--seed", str(start), "--out", str(tmp),
                             "--image-size", image_size, "--noise", str(noise), "--quiet",
                             *([] if rot is None else ["--rotation-noise", rot]),
                             *([] if after_success is None
                               else ["--after-success", str(after_success)])])
        if code != 0:
            raise RuntimeError(f"llada-vla-sim-collect failed ({code})")
        out.mkdir(parents=True, exist_ok=True)
        for bag in tmp.glob(f"{task}_seed*"):
            bag.rename(out / bag.name)
        shutil.rmtree(tmp, ignore_errors=True)
        have = sorted(p for p in out.glob(f"{task}_seed*") if (p / "metadata.yaml").is_file())
    return [str(p) for p in have[:episodes]]


def rotation_text(rotation_noise, sep: str = ",") -> str | None:
    """Roll, pitch, yaw stds as ``--rotation-noise`` takes them (None: the default)."""
    return None if rotation_noise is None else sep.join(f"{r:g}" for r in rotation_noise)


def train(name: str, bags: list, val_bags: list, options: list, log=print) -> tuple:
    """(checkpoint dir, train log) of run ``name``: ``llada-vla-train BAGS --val VAL
    OPTIONS --out WORK/runs/NAME``, unless that run finished before."""
    from llada_vla_ros import finetune

    out = WORK / "runs" / name
    done = out / "train_log.json"
    if not done.is_file():
        argv = [*bags, "--val", *val_bags, "--out", str(out), "--overwrite", *options,
                "--quiet"]
        log(f"training {name}: llada-vla-train <{len(bags)} bags> --val <{len(val_bags)} "
            f"bags> {' '.join(options)}")
        clock = CpuClock()
        with clock:
            code = finetune.main(argv)
        if code != 0:
            raise RuntimeError(f"llada-vla-train failed ({code}) for {name}")
        train_log = json.loads(done.read_text())
        train_log["cpu_seconds"] = clock.seconds
        done.write_text(json.dumps(train_log, indent=1))
    return out, json.loads(done.read_text())


def evaluate(ckpt: Path, task: str, layout: str, episodes: int, seed: int,
             image_size: str = IMAGE_SIZE, decoding: tuple = (), actions_per_chunk: int = 5,
             ensemble_decay=None, log=print) -> dict:
    """Closed-loop outcome of ``ckpt`` on ``episodes`` seeds of ``task`` (cached).
    ``ensemble_decay``: None for the receding horizon (the node's default), else temporal
    ensembling with that decay."""
    from llada_vla_ros.sim import evaluate as E

    execution = ([] if ensemble_decay is None else
                 ["--execution-mode", "temporal_ensemble", "--ensemble-decay", str(ensemble_decay)])
    key = hashlib.sha1(json.dumps([task, layout, episodes, seed, image_size, list(decoding),
                                   actions_per_chunk, *execution]).encode()).hexdigest()[:12]
    path = Path(ckpt) / f"eval_{key}.json"
    if not path.is_file():
        args = E.build_parser().parse_args(
            ["--policy", str(ckpt), "--task", task, "--layout", layout, "--episodes",
             str(episodes), "--seed", str(seed), "--image-size", image_size, "--videos", "0",
             "--actions-per-chunk", str(actions_per_chunk), "--quiet", *execution]
            + (["--decoding", *decoding] if decoding else []))
        E.check_args(args)
        clock = CpuClock()
        start = time.perf_counter()
        with clock:
            episodes_out, _ = E.run_in_process(args, progress=False)
        summary = E.summarize(episodes_out)
        record = {"task": task, "layout": layout, "seeds": [seed, seed + episodes - 1],
                  "image_size": image_size, "decoding": list(decoding),
                  "actions_per_chunk": actions_per_chunk, "ensemble_decay": ensemble_decay,
                  "summary": summary[task], "cpu_seconds": clock.seconds,
                  "wall_seconds": time.perf_counter() - start,
                  "outcomes": [e["success"] for e in episodes_out]}
        path.write_text(json.dumps(record, indent=1))
        s = summary[task]
        log(f"  {Path(ckpt).name} {task} {layout}: {s['successes']}/{s['episodes']} "
            f"({100 * s['success_rate']:.0f} %)")
    return json.loads(path.read_text())


# Version of the training data made from the same seeds (the expert's recordings and the
# labels llada-vla-train reads from them). Past 1 it is part of every demonstration and run
# name, so nothing made from older data is taken for new (cached or recorded). 1: until
# 2026-12-07 (each gripper command labelled one frame early, recordings ending at the first
# success; docs/results.md, section 5); 2: the gripper command given at the frame, 5 steps
# recorded after the success.
DATA = 2


def data_tag(sep: str = "-") -> str:
    return f"{sep}data{DATA}" if DATA > 1 else ""


def data_version(tag: str) -> int:
    """The data version in a run name or recipe tag (none: 1, from before versions)."""
    found = re.search(r"-data(\d+)", tag)
    return int(found.group(1)) if found else 1


def data_note(version: int) -> str:
    """A table's mark for a run trained on older data than ``DATA`` ('' for current)."""
    if version >= DATA:
        return ""
    return f", data {version}" + (" (early gripper labels)" if version == 1 else "")


def recipe_tag(train_options: list) -> str:
    """The run-name part of llada-vla-train options given beside the defaults, and of the
    data version: runs trained with other options or data never share a cache entry. Only
    letters, digits and ``_.,+-`` are kept (a JSON value's braces and quotes are dropped)."""
    tag = "".join("-" + o.lstrip("-") for o in train_options)
    return re.sub(r"[^\w.,+-]", "", tag) + data_tag()


def load_results(path: Path, table: str | None = None) -> dict:
    """A results file's document (empty when there is none yet), with ``table`` (the key
    its benchmark files its entries under) present."""
    doc = json.loads(path.read_text()) if path.is_file() else {}
    if table is not None:
        doc.setdefault(table, {})
    return doc


def record(path: Path, doc: dict, cpu_start: float) -> None:
    """Save ``doc`` after a finished run: merged into what ``path`` holds now (another sweep
    may have added runs since this one loaded it; this one's entries win), with the CPU
    time since ``cpu_start`` (``_cpu()``) added and the machine named. ``doc`` becomes the
    merged document."""
    merged = load_results(path)
    for key, value in doc.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        elif key != "cpu_seconds":
            merged[key] = value
    merged["cpu_seconds"] = merged.get("cpu_seconds", 0.0) + _cpu() - cpu_start
    merged["machine"] = machine()
    save_results(path, merged)
    doc.clear()
    doc.update(merged)


def save_results(path: Path, doc: dict) -> None:
    """Write ``doc`` at once (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def score(ckpt: Path, task: str, random_episodes: int, **options) -> dict:
    """Closed-loop summaries of ``ckpt`` on the 24 grid episodes and ``random_episodes``
    held-out random layouts (seeds EVAL_SEED...): {"grid": ..., "random": ...};
    ``options`` go to ``evaluate`` (decoding, actions_per_chunk, ensemble_decay)."""
    return {layout: evaluate(ckpt, task, layout, n, first, **options)["summary"]
            for layout, n, first in (("grid", 24, 0), ("random", random_episodes, EVAL_SEED))}


def final_val(train_log: dict):
    """The last held-out evaluation of a training log (None without one)."""
    return (train_log["evals"] or [None])[-1]


def val_cell(v) -> str:
    """'1.643 / 40.4': held-out loss / token accuracy %, '-' without an evaluation."""
    return f"{v['loss']:.3f} / {100 * v['token_accuracy']:.1f}" if v else "-"


def machine() -> str:
    """What the CPU times were measured on."""
    import platform

    import torch
    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s)")


def cpu_line(doc: dict) -> str:
    """The tables' footer: CPU time of every run so far, and the machine."""
    return (f"CPU time of all runs so far: {doc.get('cpu_seconds', 0) / 3600:.2f} h "
            f"({doc.get('machine', '')}).")


def pct(s: dict) -> str:
    """'55.0 (42.1-67.3)': success % with the 95 % Wilson interval."""
    lo, hi = s["wilson_95"]
    return f"{100 * s['success_rate']:.1f} ({100 * lo:.0f}-{100 * hi:.0f})"
