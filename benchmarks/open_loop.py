"""Open loop on recorded episodes: does a checkpoint's first action point where the
demonstrator's went? For each example of the bags (the frame, the next 5 recorded actions),
the policy's chunk is compared with the recorded one: the angle between the first actions'
translations (frames where the demonstrator moved more than 5 mm), their lengths, and whether
the gripper command agrees.

    OMP_NUM_THREADS=1 python benchmarks/open_loop.py CKPT BAG [BAG ...] --name held_out_carrot

Writes ``benchmarks/results/open_loop_<checkpoint name>_<name>.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MOVING_M = 0.005


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("bags", nargs="+")
    p.add_argument("--name", required=True, help="what the bags are (part of the file name)")
    p.add_argument("--hz", type=float, default=5.0)
    args = p.parse_args(argv)
    import torch

    from llada_vla_ros.dataset import load_examples
    from llada_vla_ros.policy import load_policy, wants_state

    torch.set_num_threads(1)
    examples, _ = load_examples(args.bags, 5, progress=False, hz=args.hz,
                                action_source="joint_states")
    policy = load_policy(args.checkpoint)
    cosines, lengths, gripper = [], [], []
    for e in examples:
        pred = policy.predict(e.image, e.instruction,
                              **({"state": e.state} if wants_state(policy) else {})).actions[0]
        true = e.actions[0]
        if np.linalg.norm(true[:3]) > MOVING_M:
            cosines.append(float(pred[:3] @ true[:3] / (np.linalg.norm(pred[:3])
                                                         * np.linalg.norm(true[:3]) + 1e-12)))
        lengths.append([float(np.linalg.norm(pred[:3])), float(np.linalg.norm(true[:3]))])
        gripper.append(bool((pred[6] > 0.5) == (true[6] > 0.5)))
    c = np.asarray(cosines)
    report = {"checkpoint": str(args.checkpoint), "bags": [str(b) for b in args.bags],
              "examples": len(examples), "moving_examples": len(c),
              "within_30_deg": float(np.mean(c > np.cos(np.radians(30)))),
              "same_half_space": float(np.mean(c > 0)), "median_cosine": float(np.median(c)),
              "mean_length_m": {"policy": float(np.mean([a for a, _ in lengths])),
                                "recorded": float(np.mean([b for _, b in lengths]))},
              "gripper_agrees": float(np.mean(gripper)), "date": time.strftime("%Y-%m-%d")}
    out = ROOT / "benchmarks" / "results" / (
        f"open_loop_{Path(args.checkpoint).name}_{args.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("examples", "within_30_deg", "median_cosine",
                                             "gripper_agrees")}), f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
