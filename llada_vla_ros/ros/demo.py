"""The demo behind `make demo`: a task in the simulated world, through the real policy node.

    python -m llada_vla_ros.ros.demo [--model-path DIR|expert|scripted] [--task stack]
                                     [--episodes 3] [--out DIR]

Without --model-path it first trains (once; cached in .ws/demo-sim-model) a tiny LLaDA-VLA
on scripted-expert demonstrations of the task (llada-vla-sim-collect -> llada-vla-train),
then runs a few episodes with ``sim_world`` and ``policy_node`` as separate processes over
DDS (``llada-vla-sim-eval --through-ros``): the rendered camera in, joint commands out, the
episode judged by the task's success rule. It waits for the node to report the policy
loaded before the first episode, and prints the success rate, the grasp rate, the inference
latency and where the video and the report are (out/demo-<time>/).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime
from pathlib import Path

# The demo model: expert demonstrations of the 24 grid episodes, a short CPU training.
DEMO = {"version": 2, "episodes": 24, "layout": "grid", "image_size": "160x120",
        "noise": 0.002, "steps": 600, "lr": 1e-3, "batch_size": 16}


def demo_checkpoint(cache: Path, task: str) -> Path:
    """A tiny LLaDA-VLA trained on expert demonstrations of ``task`` (cached)."""
    from llada_vla_ros import finetune
    from llada_vla_ros.sim import collect

    stamp = dict(DEMO, task=task)
    model = cache / "model"
    if (model / "config.json").is_file() and (cache / "stamp.json").is_file() and \
            json.loads((cache / "stamp.json").read_text()) == stamp:
        return model
    start = time.perf_counter()
    print(f"demo: collecting {DEMO['episodes']} expert demonstrations of '{task}' -> "
          f"{cache / 'bags'}", flush=True)
    if collect.main(["--task", task, "--episodes", str(DEMO["episodes"]), "--layout",
                     DEMO["layout"], "--image-size", DEMO["image_size"], "--noise",
                     str(DEMO["noise"]), "--out", str(cache / "bags"), "--overwrite"]) != 0:
        raise RuntimeError("collecting the demonstrations failed")
    bags = sorted(str(p) for p in (cache / "bags").iterdir() if p.is_dir())
    import torch
    torch.set_num_threads(1)  # tiny ops: one thread is as fast, and immune to busy cores
    print(f"demo: training a tiny LLaDA-VLA on them ({DEMO['steps']} steps, CPU) -> {model}",
          flush=True)
    if finetune.main(bags + ["--init", "tiny", "--out", str(model), "--overwrite",
                             "--steps", str(DEMO["steps"]), "--lr", str(DEMO["lr"]),
                             "--batch-size", str(DEMO["batch_size"])]) != 0:
        raise RuntimeError("training the demo model failed")
    (cache / "stamp.json").write_text(json.dumps(stamp), encoding="utf-8")
    print(f"demo: model ready in {time.perf_counter() - start:.0f} s (cached)", flush=True)
    return model


def main(argv=None) -> int:
    from llada_vla_ros.ros import sim_eval
    from llada_vla_ros.sim import evaluate as E
    from llada_vla_ros.sim.tasks import get_task

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-path", default="",
                    help="checkpoint directory, 'expert' or 'scripted' (default: the tiny "
                         "demo model, trained on first use)")
    ap.add_argument("--task", default="stack", help="spoon, carrot, stack or eggplant")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--out", default="", help="output directory (default out/demo-<time>)")
    a = ap.parse_args(argv)
    # the tiny model in the node: one thread is as fast, and immune to busy cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = Path.cwd()
    out = Path(a.out or root / "out" / f"demo-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    spec = a.model_path or str(demo_checkpoint(root / ".ws" / "demo-sim-model", a.task))
    # the demo model's training layout and camera size; its first seeds were trained on
    args = sim_eval.build_parser().parse_args(
        ["--policy", spec, "--task", a.task, "--episodes", str(a.episodes), "--layout",
         DEMO["layout"], "--image-size", DEMO["image_size"], "--videos", str(a.episodes),
         "--through-ros", "--out", str(out)])
    E.check_args(args)
    print(f"demo: sim_world + policy_node ({spec}) over DDS, {a.episodes} episode(s) of "
          f"'{a.task}'", flush=True)
    start = time.perf_counter()
    episodes, videos = sim_eval.run_task_through_ros(args, a.task, out)
    report = E.build_report(args, episodes, time.perf_counter() - start, "through ROS")
    paths = E.write_reports(out, report, videos)
    s = report["summary"][a.task]
    lat = s["latency_ms"]
    lo, hi = s["wilson_95"]
    print("\n=== demo summary ===")
    print(f"policy:              {spec}")
    print(f"task:                {a.task} ('{get_task(a.task).instruction}')")
    print(f"success rate:        {s['successes']}/{s['episodes']} "
          f"({100 * s['success_rate']:.0f} %, 95 % CI {100 * lo:.0f}-{100 * hi:.0f} %)")
    print(f"grasp rate:          {100 * s['grasp_rate']:.0f} %")
    print("inference latency:   " + ("no chunk decoded" if lat is None else
                                     f"median {lat['median']:.1f} ms, p90 {lat['p90']:.1f} ms"))
    print("video:               " + (str(out / next(iter(paths["videos"].values())))
                                     if paths["videos"] else "(none)"))
    print(f"report:              {paths['html']} (and report.md, report.json)")
    print(f"logs:                {out / 'logs'}")
    if lat is None:
        print("demo: FAILED (the policy produced no action chunk); see the logs")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
