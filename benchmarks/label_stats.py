"""How predictable are the training labels? For each action dimension of a set of expert
demonstrations: the range the 32 bins span (q01..q99, as ``llada-vla-train`` computes it),
the standard deviation, and the entropy of the bin classes in nats (log 32 = 3.47 for a
dimension spread evenly over all bins; a dimension near that which the image cannot explain
teaches the model to guess). Compares the expert's default action noise with other
``--rotation-noise`` settings on the same seeds.

    python benchmarks/label_stats.py --task carrot --demos 100 --rotation-noise default 0,0,0.004

Demonstrations come from (and are cached in) ``sim_runs.demos``; writes
``benchmarks/results/label_stats.json`` (entries keyed by demonstration set) and prints a
markdown table.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import sim_runs as R

from llada_vla_ros.action_tokenizer import ActionTokenizer, NormStats
from llada_vla_ros.data.episode import load_episode
from llada_vla_ros.sim.collect import parse_stds

RESULTS = R.ROOT / "benchmarks" / "results" / "label_stats.json"
DIMS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")


def label_stats(bags: list) -> dict:
    """Per-dimension q01, q99, std and bin entropy (nats) of the bags' action labels."""
    actions = np.concatenate([load_episode(b).actions for b in bags])
    stats = NormStats.from_actions(actions)
    classes = ActionTokenizer(stats).encode(actions)
    entropy = []
    for d in range(classes.shape[1]):
        p = np.bincount(classes[:, d]) / len(classes)
        p = p[p > 0]
        entropy.append(float(-(p * np.log(p)).sum()))
    return {"frames": int(len(actions)), "q01": stats.q01.tolist(), "q99": stats.q99.tolist(),
            "std": actions.std(axis=0).astype(float).tolist(), "entropy_nats": entropy}


def markdown(doc: dict) -> str:
    lines = ["| demonstrations | frames | " + " | ".join(f"{d} entropy (range)" for d in DIMS)
             + " |", "|" + "---|" * (2 + len(DIMS))]
    for key, e in sorted(doc["sets"].items()):
        cells = [f"{h:.2f} ({lo:.3g}..{hi:.3g})"
                 for h, lo, hi in zip(e["entropy_nats"], e["q01"], e["q99"])]
        lines.append(f"| {key} | {e['frames']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="carrot")
    p.add_argument("--demos", type=int, default=100)
    p.add_argument("--rotation-noise", nargs="+", default=["default", "0,0,0.004"],
                   help="'default' (twice the position noise on each axis) or R,P,Y rad")
    args = p.parse_args(argv)
    doc, start = R.load_results(RESULTS, "sets"), R._cpu()
    for rot in args.rotation_noise:
        stds = None if rot == "default" else parse_stds(rot)
        bags = R.demos(args.task, args.demos, rotation_noise=stds)
        key = f"{args.task} n{args.demos} noise {R.NOISE:g} m, rotation {rot}"
        doc["sets"][key] = {**label_stats(bags), "date": time.strftime("%Y-%m-%d")}
    R.record(RESULTS, doc, start)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
