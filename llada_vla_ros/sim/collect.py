"""Demonstrations as bags (console script ``llada-vla-sim-collect``).

    llada-vla-sim-collect --task all --episodes 50 --out demos/ [--noise 0.003]
    llada-vla-sim-collect --task carrot --episodes 200 --takeover CKPT --out recoveries/

Runs the scripted expert in the simulated world and writes one rosbag2 bag per episode with
the topics, types and QoS of a real ``widowx.launch.py policy:=false record:=true``
recording: the RealSense color image, the instruction (latched), the driver's joint states,
and the arm and gripper commands (what a teleoperation program publishes), stamped with the
simulated time since the collection started. ``llada-vla-train`` reads them unchanged.
Joint states at 100 Hz like xs_sdk; camera frames at ``--fps`` (default 5, the control rate:
a 640x480 frame is 0.9 MB); an episode ends ``--after-success`` steps after the task first
succeeds (default 5: the expert finishes letting go and moves away, as a teleoperator's
recording does, so the release is in more than the last labelled frame) or at the task's
step limit.

``--takeover POLICY``: recovery demonstrations from the states a learned policy reaches
(the remedy for behaviour cloning's compounding errors, as in DAgger and HG-DAgger, where an
expert takes over from the learner): the policy drives for a random number of steps
(``--handover-steps MIN:MAX``), then the expert takes over and finishes the task; only the
expert's part is recorded, so the bag is an ordinary demonstration that starts where the
policy left the arm and the object. ``--intervene-mm D``: the expert also takes over as soon
as the policy stalls (HG-DAgger's gated intervention): the gripper moved less than D mm in
all over the last ``STALL_WINDOW`` steps. The expert itself never moves less than ~12 mm
over 5 steps (its longest pause, closing the fingers, lasts 3), so D = 5 judges only the
policy.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .. import topics as T
from .evaluate import parse_size
from .tasks import LAYOUTS, TASKS, task_names

FRAME_ID = "camera_color_optical_frame"  # realsense2_camera's color optical frame
STALL_WINDOW = 5  # policy steps over which --intervene-mm judges a stall
AFTER_SUCCESS = 5  # steps recorded after the first success (the release, moving away)


def bag_topics(robot_name: str = T.ROBOT_NAME) -> dict:
    """Topic -> type of a recording without the policy node: the recorded topics minus the
    node's outputs (nothing publishes them)."""
    return {t: ty for t, ty in T.recorded_topics(robot_name).items()
            if t not in T.OUTPUT_TOPICS}


def _stamp(ns: int) -> dict:
    return {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}


class EpisodeRecorder:
    """Collects one episode's messages (time-ordered on write)."""

    def __init__(self, t0_ns: int, fps: float, image_size: tuple, robot_name: str,
                 start: float = 0.0):
        """Records from simulated time ``start`` on (``t0_ns`` is simulated time 0)."""
        self.t0_ns, self.fps, self.image_size = t0_ns, fps, image_size
        self.js_topic = T.robot_topic(robot_name, T.JOINT_STATES)
        self.group_topic = T.robot_topic(robot_name, T.JOINT_GROUP_COMMAND)
        self.single_topic = T.robot_topic(robot_name, T.JOINT_SINGLE_COMMAND)
        self.messages: list = []
        self.start = float(start)
        self._next_frame = self.start
        self._next_js = self.start

    def ns(self, t: float) -> int:
        return self.t0_ns + int(round(t * 1e9))

    def instruction(self, text: str) -> None:
        self.messages.append((self.ns(self.start), T.INSTRUCTION, {"data": text}))

    def command(self, t: float, q_cmd, effort) -> None:
        self.messages.append((self.ns(t), self.group_topic,
                              {"name": "arm", "cmd": np.asarray(q_cmd, np.float32)}))
        self.messages.append((self.ns(t), self.single_topic,
                              {"name": "gripper", "cmd": float(effort)}))

    def __call__(self, world) -> None:
        """The world's observer: joint states at 100 Hz, frames at fps."""
        t = world.time
        if t + 1e-9 >= self._next_js:
            self._next_js += 0.01
            names, pos, vel, eff = world.joint_state()
            self.messages.append((self.ns(t), self.js_topic, {
                "header": {"stamp": _stamp(self.ns(t))}, "name": names,
                "position": np.asarray(pos), "velocity": np.asarray(vel),
                "effort": np.asarray(eff)}))
        if t + 1e-9 >= self._next_frame:
            self._next_frame += 1.0 / self.fps
            self.frame(world, t)

    def frame(self, world, t: float) -> None:
        w, h = self.image_size
        rgb = world.render(w, h)
        self.messages.append((self.ns(t), T.IMAGE, {
            "header": {"stamp": _stamp(self.ns(t)), "frame_id": FRAME_ID},
            "height": h, "width": w, "encoding": "rgb8", "is_bigendian": 0, "step": 3 * w,
            "data": rgb.reshape(-1)}))

    def write(self, path, storage: str, robot_name: str) -> None:
        from ..bag import BagWriter

        with BagWriter(path, storage) as bag:
            for topic, msgtype in bag_topics(robot_name).items():
                bag.add_topic(topic, msgtype, latched=(topic == T.INSTRUCTION))
            for ns, topic, msg in sorted(self.messages, key=lambda m: m[0]):
                bag.write_message(topic, ns, msg)


def stalled(positions: list, window: int, metres: float) -> bool:
    """Whether the end effector (``positions``, one per step) moved less than ``metres``
    in all over the last ``window`` steps."""
    if len(positions) <= window:
        return False
    p = np.asarray(positions[-1 - window:])
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) < metres


def collect_episode(env, expert, seed: int, path, t0_ns: int, fps: float,
                    storage: str = "sqlite3", robot_name: str = T.ROBOT_NAME,
                    takeover=None, handover: int = 0, intervene_m: float = 0.0,
                    min_handover: int = 0, after_success: int = AFTER_SUCCESS) -> dict:
    """One expert episode into a bag at ``path``; returns its outcome. With a ``takeover``
    policy, that policy acts for ``handover`` steps first (not recorded: the bag starts
    where the expert takes over); ``recorded`` is False when the episode ended before.
    ``intervene_m`` > 0: the expert takes over earlier (but not before ``min_handover``
    steps) once the gripper moved less than that in all over the last ``STALL_WINDOW``
    steps (``handover_reason`` "stalled", else "steps"). The recording goes on for
    ``after_success`` steps after the first success (within the task's step limit); the
    outcome's ``steps`` counts the steps to that success, ``recorded_steps`` all of them, and
    ``success`` needs the task still done at the end (moving away did not undo it)."""
    from .evaluate import closed_loop
    from .expert import world_state

    env.observer = None
    obs, info = env.reset(seed=seed)
    done, reason = False, "steps"
    positions = [env.world.ee_pose()[:3, 3].copy()]
    if takeover is not None and handover > 0:
        for step in closed_loop(env, takeover, obs):  # whole chunks, as the node executes
            obs, info, done = step.obs, step.info, step.done
            positions.append(env.world.ee_pose()[:3, 3].copy())
            if (intervene_m > 0 and info["steps"] >= min_handover
                    and stalled(positions, STALL_WINDOW, intervene_m)):
                reason, handover = "stalled", info["steps"]
            if info["steps"] >= handover:
                break
    outcome = {"task": env.task.name, "seed": seed, "handover_steps": int(info["steps"]),
               "handover_reason": reason}
    if done:  # the policy succeeded or ran out of steps: nothing for the expert to do
        return {**outcome, "success": bool(info["success"]), "steps": int(info["steps"]),
                "bag": None, "recorded": False, "duration_s": round(env.world.time, 3)}
    rec = EpisodeRecorder(t0_ns, fps, env.image_size, robot_name, start=env.world.time)
    rec.instruction(env.instruction)
    rec(env.world)  # the first frame and joint state
    env.observer = rec
    expert.expert.resume(world_state(env.world, env.episode))
    succeeded = None  # the step of the first success
    while not done:
        for action in expert.predict(obs["image"], env.instruction).actions:
            t = env.world.time
            obs, _, terminated, _, info = env.step(action)
            if info["command"] is not None:
                rec.command(t, info["command"], info["gripper_effort"])
            if terminated and succeeded is None:
                succeeded = int(info["steps"])
            done = (info["steps"] >= env.task.max_steps  # the env's truncation, past success
                    or (succeeded is not None and info["steps"] >= succeeded + after_success))
            if done:
                break
    env.observer = None
    rec.write(path, storage, robot_name)
    return {**outcome, "success": succeeded is not None and bool(info["success"]),
            "steps": succeeded if succeeded is not None else int(info["steps"]),
            "recorded_steps": int(info["steps"]), "bag": str(path), "recorded": True,
            "duration_s": round(env.world.time, 3)}


def parse_range(text: str) -> tuple:
    """'MIN:MAX' (steps) -> (MIN, MAX), 0 <= MIN <= MAX."""
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX steps, got {text!r}") from None
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"need 0 <= MIN <= MAX, got {text!r}")
    return lo, hi


def parse_stds(text: str) -> tuple:
    """'R,P,Y' (rad) -> three floats >= 0."""
    try:
        stds = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected R,P,Y in rad, got {text!r}") from None
    if len(stds) != 3 or not all(s >= 0 for s in stds):  # NaN fails s >= 0
        raise argparse.ArgumentTypeError(f"need three stds >= 0 (roll,pitch,yaw), got {text!r}")
    return stds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llada-vla-sim-collect", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="all", help=f"all, or comma-separated: {', '.join(TASKS)}")
    p.add_argument("--episodes", type=int, default=10, help="episodes per task")
    p.add_argument("--out", required=True, help="directory receiving one bag per episode")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.add_argument("--seed", type=int, default=0, help="first seed (episode k uses seed + k)")
    p.add_argument("--layout", choices=LAYOUTS, default="random")
    p.add_argument("--noise", type=float, default=0.0,
                   help="std of the expert's action noise, m (rotation: twice that in rad)")
    p.add_argument("--rotation-noise", type=parse_stds, default=None, metavar="R,P,Y",
                   help="std of the expert's roll, pitch and yaw noise, rad (default: twice "
                        "--noise each); e.g. 0,0,0.004 keeps the gripper pointing down")
    p.add_argument("--image-size", type=parse_size, default=(640, 480), metavar="WxH")
    p.add_argument("--fps", type=float, default=5.0, help="camera frames per second")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--keep-failures", action="store_true",
                   help="keep the bags of episodes the expert failed (default: delete them)")
    p.add_argument("--takeover", default=None, metavar="POLICY",
                   help="recovery demonstrations: this policy (a checkpoint) acts first, "
                        "then the expert takes over; only the expert's part is recorded")
    p.add_argument("--handover-steps", type=parse_range, default=(5, 40), metavar="MIN:MAX",
                   help="with --takeover: the policy's steps before the expert takes over, "
                        "uniform in MIN..MAX (seeded by --seed)")
    p.add_argument("--intervene-mm", type=float, default=0.0, metavar="D",
                   help="with --takeover: the expert also takes over (after MIN steps) once "
                        f"the gripper moved less than D mm over the last {STALL_WINDOW} "
                        "steps: the policy stalls (0: off)")
    p.add_argument("--after-success", type=int, default=AFTER_SUCCESS, metavar="STEPS",
                   help="steps recorded after the task first succeeds (the expert lets go "
                        "and moves away; within the task's step limit)")
    p.add_argument("--min-steps", type=int, default=5,
                   help="with --takeover: drop recordings of fewer expert steps (one training "
                        "example needs a chunk of 5 recorded actions)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def check_args(args) -> None:
    task_names(args.task)
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if not 0 < args.fps <= 30:
        raise ValueError(f"--fps must be in (0, 30], got {args.fps}")
    if args.noise < 0:
        raise ValueError(f"--noise must be >= 0, got {args.noise}")
    if not args.intervene_mm >= 0:
        raise ValueError(f"--intervene-mm must be >= 0, got {args.intervene_mm}")
    if args.after_success < 0:
        raise ValueError(f"--after-success must be >= 0, got {args.after_success}")
    if args.min_steps < 1:
        raise ValueError(f"--min-steps must be >= 1, got {args.min_steps}")
    if args.takeover == "expert":
        raise ValueError("--takeover takes a learned policy (a checkpoint): the expert "
                         "taking over from itself records ordinary demonstrations")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise ValueError(f"--out {out} exists and is not an empty directory "
                         "(give --overwrite to write into it)")


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as exc:
        print(f"llada-vla-sim-collect: error: {exc}", file=sys.stderr)
        return 2
    import shutil

    from tqdm import tqdm

    from .env import WidowXTabletopEnv
    from .expert import expert_for

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = task_names(args.task)
    t0_ns = time.time_ns()
    outcomes = []
    bar = tqdm(total=len(names) * args.episodes, desc="episodes", disable=args.quiet)
    rng = np.random.default_rng(args.seed)
    takeover = None
    if args.takeover:
        from .evaluate import make_policy
        try:
            takeover = make_policy(args.takeover, None)
        except (OSError, ValueError) as exc:  # missing or malformed checkpoint
            print(f"llada-vla-sim-collect: error: --takeover {args.takeover}: {exc}",
                  file=sys.stderr)
            return 2
    for name in names:
        env = WidowXTabletopEnv(name, args.layout, image_size=args.image_size)
        expert = expert_for(env, noise=args.noise, seed=args.seed,
                            rotation_noise=args.rotation_noise)
        for k in range(args.episodes):
            seed = args.seed + k
            path = out / f"{name}_seed{seed:04d}"
            if path.exists():  # --overwrite
                shutil.rmtree(path)
            handover = int(rng.integers(args.handover_steps[0], args.handover_steps[1] + 1))
            o = collect_episode(env, expert, seed, path, t0_ns, args.fps, args.storage,
                                takeover=takeover, handover=handover,
                                intervene_m=args.intervene_mm / 1000.0,
                                min_handover=args.handover_steps[0],
                                after_success=args.after_success)
            t0_ns += int((o["duration_s"] + 1.0) * 1e9)  # episodes one after the other
            short = (takeover is not None and o.get("recorded_steps", o["steps"])
                     - o["handover_steps"] < args.min_steps)
            if o["bag"] and (short or (not o["success"] and not args.keep_failures)):
                shutil.rmtree(path)
                o["bag"] = None
            outcomes.append(o)
            bar.update(1)
            bar.set_postfix(task=name, success=f"{sum(x['success'] for x in outcomes)}"
                                               f"/{len(outcomes)}")
        env.close()
    bar.close()
    (out / "collect_log.json").write_text(json.dumps(
        {"args": {k: v for k, v in vars(args).items()}, "episodes": outcomes}, indent=2),
        encoding="utf-8")
    kept = sum(o["bag"] is not None for o in outcomes)
    recorded = [o for o in outcomes if o.get("recorded", True)]
    wins = sum(o["success"] for o in recorded)
    print(f"{kept} bags in {out} ({wins}/{len(recorded)} expert successes"
          + (f"; {len(outcomes) - len(recorded)} episodes ended before the handover"
             if takeover is not None else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
