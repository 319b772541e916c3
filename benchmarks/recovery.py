"""Recovery demonstrations against compounding errors (issue 12, section 5 of results.md):
DAgger-style rounds in the simulator, with a control that trains as long without them.

Round r: the policy of round r-1 (round 0: ``--base``, a trained checkpoint) drives
``--episodes`` held-out random layouts of the task for a random 5..40 steps, the scripted
expert takes over and finishes (``llada-vla-sim-collect --takeover``; only the expert's part
is recorded); the policy is then fine-tuned ``--steps`` more on the expert demonstrations plus
every recovery recorded so far (DAgger's aggregation). The control fine-tunes the base as
many steps on the demonstrations alone, so that what the recoveries add is told apart from
what more training adds. Every checkpoint is scored closed loop on the 24 grid episodes and
``--eval-episodes`` held-out random layouts (seeds 1000+).

    OMP_NUM_THREADS=1 python benchmarks/recovery.py --base out/sim_runs/runs/F --rounds 2 \\
        --train-options='--lr 3e-4 --loss-weight mean --random-shift 4 --eval-every 2000'

``--intervene-mm 5``: the expert also takes over as soon as the policy stalls (HG-DAgger's
gated intervention; run with ``--control-rounds 0`` beside a sweep without it,
whose controls are the same runs).

Resumable like the other sweeps (collections, runs and evaluations cached under
``out/sim_runs``); results in ``benchmarks/results/recovery.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import time
from pathlib import Path

import sim_runs as R

RESULTS = R.ROOT / "benchmarks" / "results" / "recovery.json"
MARKDOWN = R.ROOT / "benchmarks" / "results" / "recovery.md"
TAKEOVER_SEED = 5000  # round r collects from seed TAKEOVER_SEED + 1000 (r - 1)


def recoveries(policy: Path, task: str, episodes: int, seed: int, tag: str,
               intervene_mm: float = 0.0, log=print) -> list:
    """Bags of the expert taking over from ``policy`` (collected once)."""
    from llada_vla_ros.sim import collect

    out = R.WORK / "demos" / f"{task}_takeover_{tag}_s{seed}_{R.IMAGE_SIZE}_noise{R.NOISE:g}"
    if not (out / "collect_log.json").is_file():
        log(f"collecting recoveries from {policy.name}: seeds {seed}..{seed + episodes - 1}")
        code = collect.main(["--task", task, "--episodes", str(episodes), "--seed", str(seed),
                             "--out", str(out), "--overwrite", "--image-size", R.IMAGE_SIZE,
                             "--noise", str(R.NOISE), "--takeover", str(policy),
                             "--intervene-mm", str(intervene_mm), "--quiet"])
        if code != 0:
            raise RuntimeError(f"llada-vla-sim-collect --takeover failed ({code})")
    return sorted(str(p) for p in out.glob(f"{task}_seed*") if (p / "metadata.yaml").is_file())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", type=Path, required=True, help="the trained checkpoint to improve")
    p.add_argument("--task", default="carrot")
    p.add_argument("--demos", type=int, default=500, help="expert demonstrations kept in "
                   "every fine-tune (the base's own, seeds 0..N-1)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--episodes", type=int, default=500, help="takeover episodes per round")
    p.add_argument("--steps", type=int, default=8000, help="fine-tuning steps per round")
    p.add_argument("--control-rounds", type=int, default=None,
                   help="rounds that get a control (default: all)")
    p.add_argument("--intervene-mm", type=float, default=0.0,
                   help="llada-vla-sim-collect --intervene-mm: the expert also takes over "
                        "when the policy stalls (part of the run names)")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--train-options", default="", type=shlex.split,
                   help="llada-vla-train options of every fine-tune (part of the run names)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    base = args.base.resolve()
    doc = R.load_results(RESULTS, "runs")
    start = R._cpu()
    demos = R.demos(args.task, args.demos)
    val = R.demos(args.task, 5, seed=R.VAL_SEED)
    stem = f"recovery-{args.task}-{base.name}-n{args.demos}-steps{args.steps}" \
           f"{R.recipe_tag(args.train_options)}" \
           f"{f'-intervene{args.intervene_mm:g}mm' if args.intervene_mm else ''}"
    rows = {"base": {"round": 0, "data": f"{args.demos} demonstrations (the base's)",
                     "steps": 0, "run": base.name,
                     **R.score(base, args.task, args.eval_episodes)}}
    policy, gathered = base, []
    for r in range(1, args.rounds + 1):
        seed = TAKEOVER_SEED + 1000 * (r - 1)
        gathered += recoveries(policy, args.task, args.episodes, seed, f"{stem}-r{r - 1}",
                               args.intervene_mm)
        runs = [(f"{stem}-r{r}", demos + gathered, policy,
                 f"{args.demos} demonstrations + {len(gathered)} recoveries")]
        if args.control_rounds is None or r <= args.control_rounds:
            runs.append((f"{stem}-control{r}", demos, base if r == 1 else
                         R.WORK / "runs" / f"{stem}-control{r - 1}",
                         f"{args.demos} demonstrations"))
        for name, bags, init, what in runs:
            ckpt, log = R.train(name, bags, val, ["--init", str(init), "--steps",
                                                  str(args.steps), *args.train_options])
            rows[name] = {"round": r, "data": what, "steps": r * args.steps, "run": name,
                          "training_seconds": log["training_seconds"],
                          "final_val": R.final_val(log),
                          **R.score(ckpt, args.task, args.eval_episodes)}
        policy = R.WORK / "runs" / f"{stem}-r{r}"
    doc.setdefault("runs", {})[stem] = {
        "base": str(base), "task": args.task, "rows": rows, "date": time.strftime("%Y-%m-%d"),
        "train_options": args.train_options}
    R.record(RESULTS, doc, start)
    MARKDOWN.write_text(markdown(doc), encoding="utf-8")
    print(markdown(doc))
    return 0


def markdown(doc: dict) -> str:
    out = []
    for stem, sweep in doc["runs"].items():
        out += [f"### {stem}", "", f"Base: `{Path(sweep['base']).name}`; fine-tuning options "
                f"`{' '.join(sweep['train_options'])}`; run directories `<stem>-r<round>` and "
                "`<stem>-control<round>`.", "", "| policy | round | trained on | fine-tuning steps | "
                "grid success % (95 % CI) | random success % (95 % CI) | both layouts | grasp % "
                "(grid / random) | held-out val loss / token acc. % |",
                "|---|---:|---|---:|---|---|---|---|---|"]
        for name, row in sweep["rows"].items():
            label = ("base" if row["round"] == 0 else "control (demonstrations only)"
                     if "-control" in name else "with recoveries (DAgger-style)")
            out.append(f"| {label} | {row['round']} | {row['data']} | {row['steps']} | "
                       f"{R.pct(row['grid'])} | {R.pct(row['random'])} | "
                       f"{row['grid']['successes'] + row['random']['successes']}/"
                       f"{row['grid']['episodes'] + row['random']['episodes']} | "
                       f"{100 * row['grid']['grasp_rate']:.0f} / "
                       f"{100 * row['random']['grasp_rate']:.0f} | "
                       f"{R.val_cell(row.get('final_val'))} |")
        out.append("")
    out.append(R.cpu_line(doc))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
