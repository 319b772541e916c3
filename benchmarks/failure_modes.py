"""How does a checkpoint fail closed loop? Runs it on a task's episodes in the simulator and
sorts each episode by how it ended: success, still moving, stalled (the predicted motion is
under ``--still-mm`` per step for most of the last ``--tail`` steps) or held by the safety
layer (most of the last steps refused: IK, joint limits; the first refusal's reasons are
kept). Every time the fingers lose the object it also notes whether the gripper was
commanded open (a release) or closed (the object slipped out of a grasp), and where the
object was then (horizontal distance to the target's origin and height, mm); each failed
episode gets one cause (``cause``: never grasped, slipped from closed fingers, released off
target, held at the end) and a markdown row of the counts is printed. Where the gripper
first closes, against where the object is (``first_close``: step, horizontal distance and
height of the gripper above the object's origin, mm; the median distance is printed), tells
a policy that aims at the object from one that replays an average path; so does the
gripper's yaw then against the yaw that closes the fingers across the object (the expert's,
``grasp_yaw``; degrees, the median of its size is printed). ``pressed`` is where a finger
first pushed the object into the table before any grasp (step, and the gripper's distance
and height as for the close): the fingers came down on it instead of beside it.

    OMP_NUM_THREADS=1 python benchmarks/failure_modes.py CKPT --task carrot --episodes 24

Writes ``benchmarks/results/failure_modes_<checkpoint name>_<task>.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from llada_vla_ros.sim.evaluate import closed_loop, parse_size

ROOT = Path(__file__).resolve().parents[1]


def episode(env, policy, seed: int, tail: int, still_m: float) -> dict:
    obs, info = env.reset(seed=seed)
    refused, still, first_refusal, grasped = [], [], None, False
    losses = {"released": [], "slipped": []}
    first_close = pressed = None
    rest_z = env.world.scene_state().source_pos[2]
    for step in closed_loop(env, policy, obs):  # whole chunks, as the node executes them
        was_held, info = info["grasped"], step.info
        if first_close is None and step.action[6] < 0.5:
            first_close = [info["steps"], *gripper_to_object(env), yaw_error_deg(env)]
        if (pressed is None and not grasped and not info["grasped"]
                and env.world.scene_state().source_pos[2] < rest_z - PRESSED_M):
            pressed = [info["steps"], *gripper_to_object(env)]
        if was_held and not info["grasped"]:
            opened = (info["gripper_effort"] or 0.0) > 0  # None: the step was held
            losses["released" if opened else "slipped"].append([info["steps"], *where(env)])
        held = info["command"] is None
        refused.append(held)
        still.append(float(np.linalg.norm(step.action[:3])) < still_m)
        if held and first_refusal is None:
            first_refusal = [len(refused) - 1, "; ".join(info["reasons"]) or "?"]
        grasped |= bool(info.get("ever_grasped"))
    if info["success"]:
        ending = "success"
    elif np.mean(refused[-tail:]) > 0.5:
        ending = "held by the safety layer"
    elif np.mean(still[-tail:]) > 0.5:
        ending = "stalled"
    else:
        ending = "still moving"
    return {"seed": seed, "ending": ending, "grasped": grasped, "steps": len(refused),
            "first_refusal": first_refusal, "first_close": first_close, "pressed": pressed,
            **losses}


def gripper_to_object(env) -> list:
    """The gripper's horizontal distance to the source object's origin and its height above
    it, mm."""
    d = env.world.ee_pose()[:3, 3] - env.world.scene_state().source_pos
    return horizontal_and_height_mm(d, d[2])


def yaw_error_deg(env) -> float:
    """The yaw that would close the fingers across the source object (``grasp_yaw``, the
    nearest of its equivalent yaws) minus the gripper's, degrees (0.1)."""
    from llada_vla_ros.sim.expert import DOWN, grasp_yaw, yaw_of

    now = yaw_of(env.world.ee_pose()[:3, :3] @ DOWN.T)
    wanted = grasp_yaw(env.world.task, env.world.scene_state().source_R, now)
    return round(float(np.degrees(wanted - now)), 1)


def median_close_mm(rows: list):
    """Median horizontal distance from the gripper to the object where it first closed
    (None if no episode closed)."""
    return _median([r["first_close"][1] for r in rows if r.get("first_close")])


def median_close_yaw_deg(rows: list):
    """Median size of the yaw error where the gripper first closed (None if none closed)."""
    return _median([abs(r["first_close"][3]) for r in rows if r.get("first_close")])


def _median(values: list):
    return round(float(np.median(values)), 1) if values else None


def where(env) -> list:
    """The source object's horizontal distance to the target's origin and its height, mm."""
    s = env.world.scene_state()
    return horizontal_and_height_mm(s.source_pos - s.target_pos, s.source_pos[2])


def horizontal_and_height_mm(d, z) -> list:
    """[horizontal length of the offset ``d``, height ``z``], m -> mm (0.1 mm)."""
    return [round(1000 * float(np.hypot(d[0], d[1])), 1), round(1000 * float(z), 1)]


PRESSED_M = 0.0005  # the object pushed this far below its resting height: a finger on it
CAUSES = ("never grasped", "slipped from closed fingers", "released off target",
          "held at the end")


def cause(row: dict):
    """Why a failed episode failed, by its last grasp: never grasped; the object's last
    loss was a slip (fingers still closed) or a release (the gripper opened, the task not
    done); or the object was still held when the steps ran out. None for a success."""
    if row["ending"] == "success":
        return None
    if not row["grasped"]:
        return CAUSES[0]
    losses = sorted([(step, kind) for kind in ("slipped", "released") for step, *_ in row[kind]])
    if not losses:
        return CAUSES[3]
    return CAUSES[1] if losses[-1][1] == "slipped" else CAUSES[2]


def causes(rows: list) -> dict:
    """Failed episodes per cause."""
    found = [cause(r) for r in rows]
    return {c: found.count(c) for c in CAUSES}


def markdown_row(report: dict) -> str:
    """| task | episodes | successes | failed episodes per cause |"""
    n = len(report["episodes"])
    return (f"| {report['task']} ({report['layout']}) | {report['endings']['success']}/{n} | "
            + " | ".join(str(report["causes"][c]) for c in CAUSES) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--task", default="carrot")
    p.add_argument("--layout", default="grid", choices=("grid", "random"))
    p.add_argument("--episodes", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", default="128x96", type=parse_size)
    p.add_argument("--tail", type=int, default=20, help="last steps judged")
    p.add_argument("--still-mm", type=float, default=4.0)
    args = p.parse_args(argv)
    import torch

    from llada_vla_ros.policy import load_policy
    from llada_vla_ros.sim.env import WidowXTabletopEnv

    torch.set_num_threads(1)
    policy = load_policy(args.checkpoint)
    env = WidowXTabletopEnv(task=args.task, layout=args.layout, image_size=args.image_size)
    rows = [episode(env, policy, args.seed + i, args.tail, args.still_mm / 1000)
            for i in range(args.episodes)]
    endings = {e: sum(r["ending"] == e for r in rows)
               for e in ("success", "still moving", "stalled", "held by the safety layer")}
    report = {"checkpoint": str(args.checkpoint), "task": args.task, "layout": args.layout,
              "seeds": [args.seed, args.seed + args.episodes - 1], "endings": endings,
              "grasped": sum(r["grasped"] for r in rows), "causes": causes(rows),
              "median_first_close_mm": median_close_mm(rows),
              "median_first_close_yaw_deg": median_close_yaw_deg(rows),
              "pressed": sum(r["pressed"] is not None for r in rows),
              "episodes": rows,
              "date": time.strftime("%Y-%m-%d")}
    out = ROOT / "benchmarks" / "results" / (
        f"failure_modes_{Path(args.checkpoint).name}_{args.task}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("endings", "grasped", "causes", "pressed",
                                             "median_first_close_mm",
                                             "median_first_close_yaw_deg")}), f"-> {out}")
    print(markdown_row(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
