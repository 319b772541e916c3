"""Open loop on recorded episodes: does a checkpoint's first action point where the
demonstrator's went? For each example of the bags (the frame, the next 5 recorded actions),
the policy's chunk is compared with the recorded one: the angle between the first actions'
translations (frames where the demonstrator moved more than 5 mm), their lengths, whether
the gripper command agrees, and how the chunk turns the wrist: each chunk's yaw summed over
its 5 actions, sorted into turning one way, the other way or not at all (``--turn-deg``;
``yaw_turn``: the counts, recorded by rows, policy by columns, the fraction that agree, the
correlation of the two sums, and where the demonstrator turns, the fractions the policy turns
the same way, the other way and not at all).

    OMP_NUM_THREADS=1 python benchmarks/open_loop.py CKPT BAG [BAG ...] --name held_out_carrot

Writes ``benchmarks/results/open_loop_<checkpoint name>_<name>.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from llada_vla_ros.data.labels import GRIPPER_LABELS

ROOT = Path(__file__).resolve().parents[1]
MOVING_M = 0.005


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("bags", nargs="+")
    p.add_argument("--name", required=True, help="what the bags are (part of the file name)")
    p.add_argument("--hz", type=float, default=5.0)
    p.add_argument("--turn-deg", type=float, default=5.0,
                   help="a chunk's summed yaw beyond this turns the wrist")
    p.add_argument("--gripper-label", choices=tuple(GRIPPER_LABELS), default=None,
                   help="how the bags' gripper labels are read (default: as the checkpoint "
                        "was trained, from its train_log.json; step without one)")
    args = p.parse_args(argv)
    gripper_label = args.gripper_label or trained_gripper_label(args.checkpoint)
    import torch

    from llada_vla_ros.dataset import load_examples
    from llada_vla_ros.policy import load_policy, wants_state

    torch.set_num_threads(1)
    examples, _ = load_examples(args.bags, 5, progress=False, hz=args.hz,
                                action_source="joint_states", gripper_label=gripper_label)
    policy = load_policy(args.checkpoint)
    cosines, lengths, gripper, yaws = [], [], [], []
    for e in examples:
        chunk = policy.predict(e.image, e.instruction,
                               **({"state": e.state} if wants_state(policy) else {})).actions
        pred, true = chunk[0], e.actions[0]
        yaws.append([float(e.actions[:, 5].sum()), float(chunk[:, 5].sum())])
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
              "gripper_agrees": float(np.mean(gripper)), "gripper_label": gripper_label,
              "yaw_turn": yaw_turn(np.degrees(yaws), args.turn_deg),
              "date": time.strftime("%Y-%m-%d")}
    out = ROOT / "benchmarks" / "results" / (
        f"open_loop_{Path(args.checkpoint).name}_{args.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("examples", "within_30_deg", "median_cosine",
                                             "gripper_agrees", "yaw_turn")}), f"-> {out}")
    return 0


def trained_gripper_label(checkpoint) -> str:
    """The ``--gripper-label`` the checkpoint's training read its bags with (``step``, the
    default, when its train_log.json is missing or older than the option)."""
    log = Path(checkpoint) / "train_log.json"
    if not log.is_file():
        return "step"
    return json.loads(log.read_text()).get("args", {}).get("gripper_label") or "step"


TURNS = ("negative", "none", "positive")


def yaw_turn(yaws_deg, turn_deg: float) -> dict:
    """``yaws_deg``: (recorded, policy) summed yaw of each chunk, degrees -> the 3x3 counts of
    turn classes (recorded rows, policy columns, in ``TURNS`` order), the fraction on the
    diagonal, the correlation of the sums, and ``of_turning``: of the chunks where the
    recording turns, the fractions the policy turns the same way, the other way, not at all."""
    y = np.asarray(yaws_deg, float).reshape(-1, 2)
    cls = np.digitize(y, [-turn_deg, turn_deg])  # 0: negative, 1: none, 2: positive
    counts = np.zeros((3, 3), int)
    np.add.at(counts, (cls[:, 0], cls[:, 1]), 1)
    corr = float(np.corrcoef(y.T)[0, 1]) if len(y) > 1 and y.std(0).min() > 0 else None
    turning = max(int(counts[[0, 2]].sum()), 1)  # chunks where the recording turns
    return {"classes": list(TURNS), "counts": counts.tolist(),
            "agrees": float(np.trace(counts) / max(len(y), 1)), "correlation": corr,
            "of_turning": {"right": float(counts[0, 0] + counts[2, 2]) / turning,
                           "wrong": float(counts[0, 2] + counts[2, 0]) / turning,
                           "none": float(counts[0, 1] + counts[2, 1]) / turning}}


if __name__ == "__main__":
    raise SystemExit(main())
