"""Closed-loop evaluation in the simulated world: success rates of a policy on the tasks.

In this process (``run_in_process``): for each task and seed, reset the environment, ask the
policy for a chunk on the camera frame and the task's instruction, execute its first
``actions_per_chunk`` actions (receding horizon, as the node does), until success or the
step limit; or, with ``--execution-mode temporal_ensemble``, re-plan every step and execute
the weighted mean of every chunk's prediction for that step (ACT's temporal ensembling). Both
go through the node's ``ChunkExecutor``. ``llada-vla-sim-eval --through-ros``
(``ros/sim_eval.py``) runs the same episodes through the real ``policy_node`` and
``sim_world`` processes (the same execution options as its parameters) and reports the same
way.

Report (``report.json``/``.md``/``.html``, in the style of ``llada-vla-eval``): per task the
success rate with its 95 % Wilson interval, grasp rate (the source was held at some point),
mean steps to success, inference latency (median, p90), per-episode outcomes; MP4 videos of
the first episodes of each task and one contact-sheet PNG.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import time
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from ..execution import MODES, ChunkExecutor
from ..kinematics import robot_state
from ..policy import wants_state
from .tasks import LAYOUTS, TASKS, task_names

CONTACT_SHEET = "contact_sheet.png"


def wilson(successes: int, n: int, z: float = 1.96) -> tuple:
    """95 % Wilson score interval of a success rate (0, 0 for n = 0)."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def parse_size(text: str) -> tuple:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if not (16 <= w <= 1280 and 16 <= h <= 960):
        raise argparse.ArgumentTypeError(f"image size {w}x{h} outside 16x16 .. 1280x960")
    return w, h


BLANK = np.zeros((4, 4, 3), np.uint8)  # the frame of an environment without a camera


class Step(NamedTuple):
    """One step of ``closed_loop``: the action executed, what the environment returned, and
    the inference time of the chunk asked for before it (None when none was asked)."""

    action: np.ndarray
    obs: dict
    info: dict
    done: bool
    inference_ms: Optional[float]


def closed_loop(env, policy, obs: dict, executor: Optional[ChunkExecutor] = None):
    """The closed loop from ``obs`` (the environment just reset): the policy is asked for a
    chunk on the camera frame and the instruction whenever ``executor`` (the node's
    ``ChunkExecutor``; default: whole chunks, receding horizon) needs one, and its actions go
    to ``env.step`` one per step. Yields a ``Step`` after each step until the episode ends;
    the caller may stop earlier. Without a camera the policy sees a blank frame. A policy
    that takes the robot state gets it from the observation's joints and gripper opening
    (``kinematics.robot_state``, as the node computes it from the joint states)."""
    executor = executor or ChunkExecutor()
    with_state = wants_state(policy)
    step = 0
    while True:
        inference_ms = None
        if executor.needs_chunk():
            extra = ({"state": robot_state(obs["joints"], float(obs["gripper"][0]))}
                     if with_state else {})
            chunk = policy.predict(obs.get("image", BLANK), env.instruction, **extra)
            inference_ms = float(chunk.inference_ms)
            executor.add_chunk(chunk.actions, step)
        action = executor.pop(step)
        if action is None:  # an empty chunk: the node would hold; here nothing comes later
            raise RuntimeError(f"the policy gave no action for step {step}")
        obs, _, terminated, truncated, info = env.step(action)
        step += 1
        yield Step(action, obs, info, bool(terminated or truncated), inference_ms)
        if terminated or truncated:
            return


def run_episode(env, policy, seed: int, actions_per_chunk: int = 5,
                keep_frames: bool = False, execution_mode: str = "receding_horizon",
                ensemble_decay: float = 0.0) -> dict:
    """One closed-loop episode (``closed_loop``; ``execution_mode``, ``actions_per_chunk``,
    ``ensemble_decay`` as the node's parameters); returns its outcome (and frames when
    asked). Without a camera (``image_size=None``) the policy sees a blank frame: for the
    privileged expert."""
    obs, info = env.reset(seed=seed)
    frames = [obs["image"]] if keep_frames else None
    latencies, held = [], 0
    executor = ChunkExecutor(execution_mode, actions_per_chunk, ensemble_decay)
    for step in closed_loop(env, policy, obs, executor):
        info = step.info
        if step.inference_ms is not None:
            latencies.append(step.inference_ms)
        held += int(info["held"])
        if keep_frames:
            frames.append(step.obs["image"])
    return {"task": env.task.name, "seed": int(seed), "success": bool(info["success"]),
            "steps": int(info["steps"]),
            "steps_to_success": int(info["steps"]) if info["success"] else None,
            "grasped": bool(info["ever_grasped"]), "held_steps": held,
            "latency_ms": latencies, "frames": frames}


def summarize(episodes: list) -> dict:
    """Per task and overall: n, successes, rate, Wilson interval, grasp rate, mean steps to
    success, latency median / p90."""
    out = {}
    groups = {name: [e for e in episodes if e["task"] == name]
              for name in dict.fromkeys(e["task"] for e in episodes)}
    groups["all"] = episodes
    for name, eps in groups.items():
        n = len(eps)
        wins = sum(e["success"] for e in eps)
        lat = [ms for e in eps for ms in e["latency_ms"]]
        steps = [e["steps_to_success"] for e in eps if e["success"]]
        out[name] = {
            "episodes": n, "successes": wins, "success_rate": wins / n if n else 0.0,
            "wilson_95": list(wilson(wins, n)),
            "grasp_rate": sum(e["grasped"] for e in eps) / n if n else 0.0,
            "mean_steps_to_success": float(np.mean(steps)) if steps else None,
            "latency_ms": ({"median": float(np.median(lat)), "p90": float(np.percentile(lat, 90))}
                           if lat else None)}
    return out


def make_policy(spec: str, env, device: str = "cpu", dtype: Optional[str] = None,
                decode: Optional[dict] = None):
    """'expert' (privileged, this process), or anything ``load_policy`` takes (``decode``:
    the decoding options of a checkpoint, as the node's ``decoding.*`` parameters)."""
    if spec == "expert":
        from .expert import expert_for
        return expert_for(env)
    from ..policy import load_policy
    return load_policy(spec, device=device, dtype=dtype, decode=decode)


def run_in_process(args, progress: bool = True) -> tuple:
    """The episodes of ``args`` (see ``build_parser``); returns (episodes, frames by key)."""
    from tqdm import tqdm

    from .env import WidowXTabletopEnv

    episodes, videos = [], {}
    from ..decoding import parse_options  # torch: only with a checkpoint

    shared = None if args.policy == "expert" else make_policy(
        args.policy, None, args.device, args.dtype, parse_options(args.decoding) or None)
    names = task_names(args.task)
    bar = tqdm(total=len(names) * args.episodes, desc="episodes", disable=not progress)
    for name in names:
        env = WidowXTabletopEnv(name, args.layout, image_size=args.image_size)
        policy = shared or make_policy(args.policy, env)
        for k in range(args.episodes):
            keep = k < args.videos
            e = run_episode(env, policy, args.seed + k, args.actions_per_chunk, keep,
                            args.execution_mode, args.ensemble_decay)
            frames = e.pop("frames")
            if keep:
                videos[(name, e["seed"])] = frames
            episodes.append(e)
            bar.update(1)
            bar.set_postfix(task=name, success=f"{sum(x['success'] for x in episodes)}"
                                               f"/{len(episodes)}")
        env.close()
    bar.close()
    return episodes, videos


# --- reports -----------------------------------------------------------------------------------

def _rows(summary: dict) -> list:
    rows = []
    for name, s in summary.items():
        lat = s["latency_ms"]
        steps = s["mean_steps_to_success"]
        rows.append((name, f"{s['successes']}/{s['episodes']}", f"{100 * s['success_rate']:.1f}",
                     f"{100 * s['wilson_95'][0]:.1f} - {100 * s['wilson_95'][1]:.1f}",
                     f"{100 * s['grasp_rate']:.1f}", "-" if steps is None else f"{steps:.1f}",
                     "-" if lat is None else f"{lat['median']:.1f} / {lat['p90']:.1f}"))
    return rows


HEADER = ("task", "successes", "success %", "95 % Wilson %", "grasp %", "steps to success",
          "latency ms (median / p90)")


def write_reports(out_dir, report: dict, videos: dict, fps: float = 5.0) -> dict:
    """report.json/.md/.html, videos/<task>_seed<N>.mp4 and contact_sheet.png in out_dir."""
    from .video import contact_sheet, write_mp4

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    video_files = {}
    for (task, seed), frames in videos.items():
        if frames:
            video_files[f"{task}/{seed}"] = str(
                write_mp4(out / "videos" / f"{task}_seed{seed}.mp4", frames, fps).relative_to(out))
    sheet_rows = []
    for (task, seed), frames in videos.items():
        ep = next((e for e in report["episodes"] if e["task"] == task and e["seed"] == seed), None)
        verdict = "" if ep is None else ("success" if ep["success"] else "failure")
        sheet_rows.append((f"{task} seed {seed}: {verdict}", frames))
    if sheet_rows:
        paths["contact_sheet"] = contact_sheet(out / CONTACT_SHEET, sheet_rows)
    paths["videos"] = video_files
    report = dict(report, videos=video_files)
    paths["json"].write_text(json.dumps(report, indent=2), encoding="utf-8")
    rows = _rows(report["summary"])
    lines = [f"# Simulated evaluation: {report['policy']}", "",
             f"- **mode**: {report['mode']}", f"- **layout**: {report['layout']}",
             f"- **seeds**: {report['seeds']}", f"- **image**: {report['image_size']}",
             f"- **wall time**: {report['seconds']:.0f} s", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "| task | seed | success | steps | grasped | held steps |", "|---|---|---|---|---|---|"]
    lines += [f"| {e['task']} | {e['seed']} | {'yes' if e['success'] else 'no'} | {e['steps']} | "
              f"{'yes' if e['grasped'] else 'no'} | {e['held_steps']} |" for e in report["episodes"]]
    if "contact_sheet" in paths:
        lines += ["", f"![first episodes]({CONTACT_SHEET})"]
    lines += ["", "Videos: " + (", ".join(f"[{k}]({v})" for k, v in video_files.items()) or "none"),
              ""]
    paths["md"].write_text("\n".join(lines), encoding="utf-8")
    e = html.escape
    table = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    img = ""
    if "contact_sheet" in paths:
        png = base64.b64encode(Path(paths["contact_sheet"]).read_bytes()).decode("ascii")
        img = f"<h2>First episodes</h2><img alt='contact sheet' src='data:image/png;base64,{png}'>"
    links = "".join(f"<li><a href='{e(v)}'>{e(k)}</a></li>" for k, v in video_files.items())
    episodes = "".join(
        f"<tr><td>{e(x['task'])}</td><td>{x['seed']}</td><td>{'yes' if x['success'] else 'no'}</td>"
        f"<td>{x['steps']}</td><td>{'yes' if x['grasped'] else 'no'}</td></tr>"
        for x in report["episodes"])
    paths["html"].write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Simulated evaluation</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style></head><body>"
        f"<h1>Simulated evaluation: {e(report['policy'])}</h1>"
        f"<p>{e(report['mode'])}, layout {e(report['layout'])}, seeds {e(report['seeds'])}</p>"
        "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEADER) + f"</tr>{table}</table>"
        f"{img}<h2>Videos</h2><ul>{links}</ul><h2>Episodes</h2><table><tr><th>task</th>"
        f"<th>seed</th><th>success</th><th>steps</th><th>grasped</th></tr>{episodes}</table>"
        "</body></html>", encoding="utf-8")
    return paths


def build_report(args, episodes: list, seconds: float, mode: str) -> dict:
    return {"policy": args.policy, "mode": mode, "layout": args.layout,
            "decoding": list(getattr(args, "decoding", None) or []),
            "tasks": task_names(args.task),
            "seeds": f"{args.seed}..{args.seed + args.episodes - 1}",
            "image_size": "x".join(map(str, args.image_size)), "seconds": seconds,
            "actions_per_chunk": args.actions_per_chunk,
            "execution_mode": args.execution_mode, "ensemble_decay": args.ensemble_decay,
            "summary": summarize(episodes), "episodes": episodes}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llada-vla-sim-eval",
        description="Closed-loop success rates of a policy on the simulated WidowX tasks.")
    p.add_argument("--policy", default="expert",
                   help="expert | scripted | scripted:<table.csv> | checkpoint directory")
    p.add_argument("--task", default="all",
                   help=f"all, or comma-separated: {', '.join(TASKS)}")
    p.add_argument("--episodes", type=int, default=10, help="episodes per task")
    p.add_argument("--seed", type=int, default=0, help="first seed (episode k uses seed + k)")
    p.add_argument("--layout", choices=LAYOUTS, default="random",
                   help="random placements, or SimplerEnv's 24 grid episodes (seed %% 24)")
    p.add_argument("--out", default="", help="report directory (default ./sim_eval)")
    p.add_argument("--image-size", type=parse_size, default=(640, 480), metavar="WxH",
                   help="camera frame size given to the policy (default 640x480)")
    p.add_argument("--actions-per-chunk", type=int, default=5,
                   help="actions executed per chunk before re-planning, or each chunk's "
                        "actions in the ensemble")
    p.add_argument("--execution-mode", choices=MODES, default="receding_horizon",
                   help="the node's execution_mode parameter")
    p.add_argument("--ensemble-decay", type=float, default=0.0,
                   help="temporal_ensemble: weight exp(-decay * age) (the node's parameter)")
    p.add_argument("--videos", type=int, default=1,
                   help="episodes per task recorded as MP4 and in the contact sheet")
    p.add_argument("--decoding", nargs="+", default=None, metavar="KEY=VALUE",
                   help="decoding options of a checkpoint (the node's decoding.* parameters), "
                        "e.g. strategy=vanilla steps=10 prompt_refresh_interval=1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--through-ros", action="store_true",
                   help="run the real policy_node and sim_world processes over DDS")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def check_args(args) -> None:
    task_names(args.task)  # ValueError naming an unknown task
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    ChunkExecutor(args.execution_mode, args.actions_per_chunk, args.ensemble_decay)  # named
    if args.videos < 0:
        raise ValueError(f"--videos must be >= 0, got {args.videos}")
    if args.decoding:
        from ..decoding import DecodeConfig, parse_options
        DecodeConfig.from_dict(parse_options(args.decoding))  # a bad option, named, now


def print_summary(report: dict, paths: dict) -> None:
    for name, s in report["summary"].items():
        lo, hi = s["wilson_95"]
        lat = s["latency_ms"]
        print(f"{name:9s} success {s['successes']}/{s['episodes']} = "
              f"{100 * s['success_rate']:.1f} % (95 % CI {100 * lo:.1f}-{100 * hi:.1f}), "
              f"grasp {100 * s['grasp_rate']:.0f} %"
              + ("" if lat is None else f", latency median {lat['median']:.1f} ms"))
    print(f"report: {paths['html']}")


def main_in_process(args) -> int:
    start = time.perf_counter()
    episodes, videos = run_in_process(args, progress=not args.quiet)
    report = build_report(args, episodes, time.perf_counter() - start, "in-process")
    out = Path(args.out or Path.cwd() / "sim_eval")
    print_summary(report, write_reports(out, report, videos))
    return 0
