"""Simulation benchmarks: expert success rates, environment step and render cost, and the
rates sim_world holds while a policy runs through the real node.

    python benchmarks/sim_benchmark.py [--seeds 50] [--out-dir benchmarks/results]
        [--skip-ros] [--checkpoint DIR]

1. Expert: ``layout=random`` over ``--seeds`` seeds per task and the 24 ``layout=grid``
   episodes per task, in-process (no rendering: the expert reads privileged poses).
2. Speed, one thread: a 5 Hz environment step (ArmController IK + safety, 100 physics steps,
   one 224x224 frame) with expert actions; the step without the frame; one 640x480 render.
3. sim_world at 640x480 / 30 Hz while the policy node runs a task (the expert, or
   ``--checkpoint``): camera and joint-state rates as a subscriber in a third process sees
   them, per second over the episodes (median and worst second).

Writes ``sim_benchmark.json`` and ``sim_benchmark.md`` into ``--out-dir``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def expert_success(seeds: int) -> dict:
    from llada_vla_ros.sim.env import WidowXTabletopEnv
    from llada_vla_ros.sim.evaluate import run_episode
    from llada_vla_ros.sim.expert import expert_for
    from llada_vla_ros.sim.tasks import GRID_EPISODES, TASKS

    out = {}
    for name in TASKS:
        for layout, n in (("random", seeds), ("grid", GRID_EPISODES)):
            env = WidowXTabletopEnv(name, layout, image_size=None)
            expert = expert_for(env)
            eps = [run_episode(env, expert, seed) for seed in range(n)]
            wins = sum(e["success"] for e in eps)
            steps = [e["steps"] for e in eps if e["success"]]
            out[f"{name}/{layout}"] = {"episodes": n, "successes": int(wins),
                                       "success_rate": wins / n,
                                       "failed_seeds": [e["seed"] for e in eps if not e["success"]],
                                       "median_steps": float(np.median(steps)) if steps else None}
            print(f"expert {name:8s} {layout:6s} {wins}/{n}", flush=True)
            env.close()
    return out


def step_timing(steps: int = 120) -> dict:
    from llada_vla_ros.sim.env import WidowXTabletopEnv
    from llada_vla_ros.sim.expert import expert_for

    def run(image_size):
        env = WidowXTabletopEnv("carrot", "random", image_size=image_size)
        expert = expert_for(env, chunk_size=1)
        times, seed = [], 0
        obs, _ = env.reset(seed=seed)
        while len(times) < steps:
            a = expert.predict(np.zeros((4, 4, 3), np.uint8), env.instruction).actions[0]
            t = time.perf_counter()
            obs, _, terminated, truncated, _ = env.step(a)
            times.append((time.perf_counter() - t) * 1e3)
            if terminated or truncated:
                seed += 1
                env.reset(seed=seed)
        env.close()
        return times

    with_frame, no_frame = run((224, 224)), run(None)
    from llada_vla_ros.sim.world import World
    w = World("carrot")
    w.render(640, 480)
    render = []
    for _ in range(60):
        t = time.perf_counter()
        w.render(640, 480)
        render.append((time.perf_counter() - t) * 1e3)
    physics = []
    for _ in range(20):
        t = time.perf_counter()
        w.advance(0.2)
        physics.append((time.perf_counter() - t) * 1e3)
    w.close()
    stat = lambda v: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90))}  # noqa
    return {"step_224": stat(with_frame), "step_no_frame": stat(no_frame),
            "render_640x480": stat(render), "physics_0.2s": stat(physics)}


def ros_rates(policy: str, seconds_task: str = "stack", episodes: int = 3) -> dict:
    """Rates a third process receives while the node runs ``episodes`` of a task."""
    import random

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, JointState

    from llada_vla_ros import topics
    from llada_vla_ros.ros import qos, sim_eval

    domain = random.randint(120, 200)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("sim_benchmark_probe", context=ctx)
    stamps = {"image": [], "joint_states": []}
    node.create_subscription(Image, topics.IMAGE, lambda m: stamps["image"].append(
        time.monotonic()), qos.IMAGE_SUB)
    node.create_subscription(JointState, "/wx250s/joint_states", lambda m: stamps[
        "joint_states"].append(time.monotonic()), qos.JOINT_STATES)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    def spin_until_shutdown():
        while ctx.ok():
            try:
                ex.spin_once(timeout_sec=0.05)
            except Exception:  # shut down under us
                return
    spin = threading.Thread(target=spin_until_shutdown, daemon=True)
    spin.start()
    args = sim_eval.build_parser().parse_args(
        ["--policy", policy, "--task", seconds_task, "--episodes", str(episodes),
         "--through-ros", "--domain-id", str(domain), "--videos", "0", "--quiet"])
    t0 = time.monotonic()
    out_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"sim_benchmark_{os.getpid()}"
    eps, _ = sim_eval.run_task_through_ros(args, seconds_task, out_dir, log=lambda *a: None)
    t1 = time.monotonic()
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)
    result = {"policy": policy, "task": seconds_task, "episodes": len(eps),
              "successes": sum(e["success"] for e in eps)}
    for key, ts in stamps.items():
        ts = np.array([t for t in ts if t0 + 5 <= t <= t1 - 1])  # after start-up
        if len(ts) < 2:
            result[key] = None
            continue
        per_s = np.histogram(ts, bins=np.arange(ts[0], ts[-1], 1.0))[0]
        result[key] = {"median_hz": float(np.median(per_s)), "worst_second_hz": int(per_s.min()),
                       "seconds": int(len(per_s))}
    return result


def markdown(report: dict) -> str:
    lines = [f"Device: {report['meta']['device']}; date {report['meta']['date']}.", "",
             "| task | layout | episodes | expert success | median steps |", "|---|---|---:|---:|---:|"]
    for key, r in report["expert"].items():
        task, layout = key.split("/")
        lines.append(f"| {task} | {layout} | {r['episodes']} | {100 * r['success_rate']:.1f} % "
                     f"| {r['median_steps']} |")
    t = report["timing"]
    lines += ["", "| one thread | median ms | p90 ms |", "|---|---:|---:|"]
    names = {"step_224": "5 Hz env step (IK + physics + one 224x224 frame)",
             "step_no_frame": "5 Hz env step without a frame", "render_640x480": "640x480 render",
             "physics_0.2s": "0.2 s of physics (100 steps)"}
    lines += [f"| {names[k]} | {v['median_ms']:.2f} | {v['p90_ms']:.2f} |" for k, v in t.items()]
    r = report.get("ros")
    if r:
        lines += ["", f"sim_world 640x480 @ 30 Hz while policy_node runs `{r['policy']}` on "
                      f"{r['task']} ({r['successes']}/{r['episodes']} episodes succeeded):", "",
                  "| topic | median Hz | worst second |", "|---|---:|---:|"]
        for key in ("image", "joint_states"):
            v = r[key]
            lines.append(f"| {key} | {v['median_hz']:.0f} | {v['worst_second_hz']} |" if v
                         else f"| {key} | - | - |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--skip-ros", action="store_true")
    p.add_argument("--checkpoint", default="", help="policy for the ROS rates (default expert)")
    p.add_argument("--ros-episodes", type=int, default=3)
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    report = {"meta": {"date": date.today().isoformat(),
                       "device": f"{platform.processor() or platform.machine()}, "
                                 f"{os.cpu_count()} CPU cores, {platform.python_version()}",
                       "seeds": args.seeds}}
    report["expert"] = expert_success(args.seeds)
    report["timing"] = step_timing()
    print(json.dumps(report["timing"], indent=1), flush=True)
    if not args.skip_ros:
        report["ros"] = ros_rates(args.checkpoint or "expert", episodes=args.ros_episodes)
        print(json.dumps(report["ros"], indent=1), flush=True)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sim_benchmark.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out / "sim_benchmark.md").write_text(markdown(report), encoding="utf-8")
    print(f"written: {out / 'sim_benchmark.json'}, {out / 'sim_benchmark.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
