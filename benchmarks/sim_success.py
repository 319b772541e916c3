"""Does a model trained with this package learn the simulated tasks? Success rate against
the number of expert demonstrations (issue 12, item 3).

For each demonstration count N: N expert episodes per task (random layouts, seeds 0..N-1,
``llada-vla-sim-collect``), one multi-task model trained on all of them from scratch
(``llada-vla-train --init small``; 5 held-out episodes per task for the validation log),
then closed-loop success per task on held-out random layouts (seeds 1000...) and on
SimplerEnv's 24 grid episodes, in process (``llada-vla-sim-eval``'s episodes).

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/sim_success.py --demos 50 --steps 6000
    python benchmarks/sim_success.py --demos 10,25,50,100 --steps 6000   # the sweep
    python benchmarks/sim_success.py --report                           # tables + plot only
    python benchmarks/sim_success.py --demos 500 --after-success 0 ...  # demos end at success

Resumable: bags, checkpoints and evaluations are cached under ``out/sim_runs/`` (or
``$LLADA_SIM_RUNS``); results are appended to ``benchmarks/results/sim_success.json``; the
markdown table goes to ``benchmarks/results/sim_success.md`` and the plot to
``docs/sim_success.png``. The CPU time of every stage is recorded.
"""
from __future__ import annotations

import argparse
import os
import shlex
import time
from pathlib import Path

import sim_runs as R
import torch

from llada_vla_ros.sim.collect import AFTER_SUCCESS, parse_stds

RESULTS = R.ROOT / "benchmarks" / "results" / "sim_success.json"
MARKDOWN = R.ROOT / "benchmarks" / "results" / "sim_success.md"
PLOT = R.ROOT / "docs" / "sim_success.png"
TASKS = ("spoon", "carrot", "stack", "eggplant")
VAL_EPISODES = 5


def steps(text: str) -> int:
    """A non-negative step count."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"need >= 0 steps, got {value}")
    return value


def run_name(args, n: int, seed: int) -> str:
    rot = R.rotation_text(args.rotation_noise)
    rot = "" if rot is None else f"-rot{rot}"
    after = "" if args.after_success is None else f"-after{args.after_success}"
    return (f"{args.config}-{'+'.join(args.tasks)}-n{n}-steps{args.steps}"
            f"{R.recipe_tag(args.train_options)}{rot}{after}-seed{seed}")


def one_run(args, n: int, seed: int, doc: dict, log=print) -> dict:
    name = run_name(args, n, seed)
    clock = R.CpuClock()
    with clock:
        demo_options = dict(rotation_noise=args.rotation_noise,
                            after_success=args.after_success, log=log)
        bags = [b for t in args.tasks for b in R.demos(t, n, **demo_options)]
        val = [b for t in args.tasks
               for b in R.demos(t, VAL_EPISODES, seed=R.VAL_SEED, **demo_options)]
    options = ["--init", args.config, "--steps", str(args.steps), "--seed", str(seed),
               *args.train_options]
    ckpt, train_log = R.train(name, bags, val, options, log=log)
    evals = {}
    for task in args.tasks:
        with clock:
            evals[f"{task}/random"] = R.evaluate(ckpt, task, "random", args.eval_episodes,
                                                 R.EVAL_SEED, log=log)
            if args.grid:
                evals[f"{task}/grid"] = R.evaluate(ckpt, task, "grid", 24, 0, log=log)
    record = {
        "name": name, "config": args.config, "tasks": list(args.tasks), "demos_per_task": n,
        "train_seed": seed, "steps": args.steps, "train_options": options,
        "demo_rotation_noise": args.rotation_noise,
        "demo_after_success": args.after_success, "data": R.DATA,
        "command": "llada-vla-train <bags> --val <bags> " + " ".join(options),
        "examples": train_log["examples"], "training_seconds": train_log["training_seconds"],
        "lr": train_log["args"]["lr"], "random_shift": train_log["args"]["random_shift"],
        "train_cpu_seconds": train_log.get("cpu_seconds"),
        "final_val": R.final_val(train_log),
        "stopped": train_log.get("stopped"),
        "evaluations": {k: {"summary": v["summary"], "cpu_seconds": v["cpu_seconds"]}
                        for k, v in evals.items()},
        "other_cpu_seconds": clock.total, "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
    }
    doc["runs"][name] = record
    return record


def recipe(record: dict) -> str:
    """The learning rate and shift the run resolved to (defaults change between versions),
    the torch threads it trained with (runs before that was recorded used one), and any
    ``--config`` change of the model (e.g. the robot-state input, ``state_dim=10``), the
    ``--gripper-label`` the bags were read with, where the demonstrations ended if not at
    collect's default, and whether it learnt older data than ``R.DATA`` (version 1: gripper
    labels one frame early)."""
    options, changes = record.get("train_options", []), []
    for i, o in enumerate(options):
        if o == "--config":  # KEY=VALUE ... up to the next option
            after = options[i + 1:]
            changes = after[:next((j for j, a in enumerate(after) if a.startswith("--")),
                                  len(after))]
    if "--gripper-label" in options:  # how the bags' gripper labels were read
        changes = [*changes, "gripper_label=" + options[options.index("--gripper-label") + 1]]
    rot = R.rotation_text(record.get("demo_rotation_noise"), sep="/")
    return (f"lr {record['lr']:g}, shift {record['random_shift']} px, "
            f"{record.get('threads', 1)} thread(s)"
            + "".join(f", {c.replace('=', ' ')}" for c in changes)
            + ("" if rot is None else f", demos' roll/pitch/yaw noise {rot} rad")
            + ("" if record.get("demo_after_success") is None
               else f", demos end {record['demo_after_success']} steps past the success")
            + R.data_note(record.get("data", 1)))


def markdown(doc: dict) -> str:
    lines = ["| demos / task | train seed | steps | recipe | training min | held-out val loss / "
             "token acc. % | " + " | ".join(f"{t} random" for t in TASKS) + " | "
             + " | ".join(f"{t} grid" for t in TASKS)
             + " | average random | average grid | grasp % (random, grid) |",
             "|" + "---|" * (6 + 2 * len(TASKS) + 3)]
    for r in sorted(doc["runs"].values(), key=lambda r: (r["demos_per_task"], r["train_seed"])):
        ev = r["evaluations"]
        cells = []
        for layout in ("random", "grid"):
            for t in TASKS:
                s = ev.get(f"{t}/{layout}")
                cells.append(R.pct(s["summary"]) if s else "not run")
        avg, grasp = [], []
        for layout in ("random", "grid"):
            got = [ev[f"{t}/{layout}"]["summary"] for t in TASKS if f"{t}/{layout}" in ev]
            full = len(got) == len(TASKS)
            avg.append(f"{100 * sum(g['success_rate'] for g in got) / len(got):.1f}" if full
                       else "not run")
            grasp.append(f"{100 * sum(g['grasp_rate'] for g in got) / len(got):.0f}" if full
                         else "-")
        lines.append(f"| {r['demos_per_task']} | {r['train_seed']} | {r['steps']} | "
                     f"{recipe(r)} | {r['training_seconds'] / 60:.0f} | "
                     f"{R.val_cell(r.get('final_val'))} | "
                     + " | ".join(cells + avg) + f" | {', '.join(grasp)} |")
    lines += ["", R.cpu_line(doc)]
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    longest = {}  # demonstrations per task -> the run trained longest with them
    for r in doc["runs"].values():
        n = r["demos_per_task"]
        if n not in longest or r["steps"] > longest[n]["steps"]:
            longest[n] = r
    for layout, style in (("random", "o-"), ("grid", "s--")):
        for i, t in enumerate(TASKS):
            pts = [(n, r["evaluations"][f"{t}/{layout}"]["summary"])
                   for n, r in sorted(longest.items()) if f"{t}/{layout}" in r["evaluations"]]
            if pts:
                ax.plot([n for n, _ in pts], [100 * s["success_rate"] for _, s in pts], style,
                        color=f"C{i}", label=f"{t} ({layout})")
    ax.set(xlabel="expert demonstrations per task (the longest training of each)",
           ylabel="closed-loop success %", ylim=(-2, 102))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demos", default="50", help="demonstrations per task, comma-separated")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--config", default="small", help="--init of llada-vla-train")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--seeds", default="0", help="training seeds, comma-separated")
    p.add_argument("--eval-episodes", type=int, default=50, help="random layouts per task")
    p.add_argument("--no-grid", dest="grid", action="store_false",
                   help="skip the 24 grid episodes per task")
    p.add_argument("--train-options", default="", type=shlex.split,
                   help="llada-vla-train options for every run (the recipe; part of "
                        "the run names), e.g. --train-options='--lr 1e-3'")
    p.add_argument("--rotation-noise", type=parse_stds, default=None, metavar="R,P,Y",
                   help="the demonstrations' roll, pitch and yaw noise, rad (default: the "
                        "expert's, twice its position noise each; part of the run names)")
    p.add_argument("--after-success", type=steps, default=None, metavar="STEPS",
                   help="steps the demonstrations record past the first success (default: "
                        f"llada-vla-sim-collect's, {AFTER_SUCCESS}; part of the run names)")
    p.add_argument("--report", action="store_true", help="only rewrite the table and plot")
    args = p.parse_args(argv)
    args.tasks = [t for t in args.tasks.split(",") if t]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    doc = R.load_results(RESULTS, "runs")
    if not args.report:
        for n in (int(x) for x in args.demos.split(",")):
            for seed in (int(x) for x in args.seeds.split(",")):
                if run_name(args, n, seed) in doc["runs"]:
                    print(f"{run_name(args, n, seed)}: recorded already")
                    continue
                start = R._cpu()
                one_run(args, n, seed, doc)
                R.record(RESULTS, doc, start)
    if doc["runs"]:
        MARKDOWN.write_text(markdown(doc), encoding="utf-8")
        plot(doc, PLOT)
        print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
