"""How to execute a policy's action chunks, measured closed loop in the simulator: the
receding horizon (execute the first k of the K predicted actions, then re-plan; the node's
default is the whole chunk) against ACT's temporal ensembling (re-plan every step, execute
the weighted mean of every chunk's prediction for that step, weight exp(-decay * age)).
The node's ``execution_mode`` / ``actions_per_chunk`` / ``ensemble_decay`` parameters, run
through the same ``ChunkExecutor`` by ``llada-vla-sim-eval``.

    OMP_NUM_THREADS=1 python benchmarks/execution.py out/sim_runs/runs/<run> --task carrot

One trained checkpoint, no training: each variant is scored on the 24 grid episodes and
``--eval-episodes`` held-out random layouts (seeds 1000+), cached beside the checkpoint.
Results in ``benchmarks/results/execution.json`` and ``.md`` (rows of every checkpoint run).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import sim_runs as R

RESULTS = R.ROOT / "benchmarks" / "results" / "execution.json"
MARKDOWN = R.ROOT / "benchmarks" / "results" / "execution.md"


def variants(horizons: list, decays: list) -> dict:
    """label -> evaluate() options."""
    out = {f"receding horizon, {k} action(s) per chunk": {"actions_per_chunk": k}
           for k in horizons}
    out.update({f"temporal ensemble, decay {d:g}": {"ensemble_decay": d} for d in decays})
    return out


def markdown(doc: dict) -> str:
    out = []
    for ckpt, rows in doc["checkpoints"].items():
        out += [f"### {ckpt} ({rows[0]['task']})", "",
                "| execution | grid success % (95 % CI) | random success % (95 % CI) | both "
                "layouts | grasp % (grid / random) | steps to success (mean) | latency ms "
                "median |", "|---|---|---|---|---|---:|---:|"]
        for r in rows:
            g, rnd = r["grid"], r["random"]
            both = f"{g['successes'] + rnd['successes']}/{g['episodes'] + rnd['episodes']}"
            lat = rnd["latency_ms"]["median"] if rnd["latency_ms"] else float("nan")
            steps = [s["mean_steps_to_success"] * s["successes"] for s in (g, rnd)
                     if s["successes"]]
            mean_steps = (f"{sum(steps) / (g['successes'] + rnd['successes']):.1f}"
                          if steps else "-")
            out.append(f"| {r['label']} | {R.pct(g)} | {R.pct(rnd)} | {both} | "
                       f"{100 * g['grasp_rate']:.0f} / {100 * rnd['grasp_rate']:.0f} | "
                       f"{mean_steps} | {lat:.1f} |")
        out.append("")
    out.append(R.cpu_line(doc))
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--task", default="carrot")
    p.add_argument("--horizons", default="1,2,3,5",
                   help="receding horizon: actions executed per chunk, comma-separated")
    p.add_argument("--decays", default="0,0.5",
                   help="temporal ensembling decays, comma-separated ('' for none)")
    p.add_argument("--eval-episodes", type=int, default=50)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    doc = R.load_results(RESULTS, "checkpoints")
    rows = []
    start = R._cpu()
    todo = variants([int(k) for k in args.horizons.split(",") if k],
                    [float(d) for d in args.decays.split(",") if d])
    for label, options in todo.items():
        score = R.score(args.checkpoint, args.task, args.eval_episodes, **options)
        rows.append({"label": label, "task": args.task, **options, **score,
                     "date": time.strftime("%Y-%m-%d")})
    doc["checkpoints"][args.checkpoint.name] = rows
    R.record(RESULTS, doc, start)
    MARKDOWN.write_text(markdown(doc), encoding="utf-8")
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
