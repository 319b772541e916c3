"""The paper's ablations at small scale, in the simulator (issue 12, item 4): the same
demonstrations and training budget for every variant, two or more training seeds each,
closed-loop success with 95 % Wilson intervals.

- Table 5: full-vocabulary classification + vanilla decoding (the baseline) -> + LSC ->
  + LSC + hierarchical decoding (HAD);
- Table 6: action chunk size 1, 3, 5, 8, 10 (HAD; K x 7 tokens per chunk, the whole chunk
  executed);
- decoding steps (HAD iterations per action, vanilla steps): success and latency;
- the prompt cache: full attention (the paper's) with the approximate cache vs exact
  decoding, and a model trained with ``prefix_attention_mask`` (the cache is exact);
- the autoregressive peer: the same network trained causally, 35 tokens left to right
  with a KV cache (OpenVLA-style, over the same 32 bins).

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/ablations.py --groups table5,ar
    python benchmarks/ablations.py --groups all --seeds 0,1       # everything (hours)
    python benchmarks/ablations.py --report                       # tables only
    python benchmarks/ablations.py --groups table6 --variants chunk3  # one model's rows

One task (default carrot; ``--task``), N demonstrations (``--demos``, default 50), scored
on the 24 grid episodes and ``--eval-episodes`` held-out random layouts. Resumable like
sim_success.py (same cache, ``out/sim_runs/``); results go to
``benchmarks/results/ablations.json`` and ``.md``, with the CPU time of all runs.
"""
from __future__ import annotations

import argparse
import os
import shlex
import time

import sim_runs as R
from llada_vla_ros.sim.evaluate import wilson

RESULTS = R.ROOT / "benchmarks" / "results" / "ablations.json"
MARKDOWN = R.ROOT / "benchmarks" / "results" / "ablations.md"

# training variants: name -> llada-vla-train options (beside --init small, steps, seed)
TRAINING = {
    "lsc": [],
    "full_vocab": ["--loss", "full_vocab"],
    "prefix_mask": ["--config", "prefix_attention_mask=true"],
    "autoregressive": ["--config", "autoregressive=true"],
    **{f"chunk{k}": ["--chunk-size", str(k)] for k in (1, 3, 8, 10)},
}
HAD = ("strategy=hierarchical",)
VANILLA = ("strategy=vanilla", "steps=10")
# decoding variants: name -> (training variant, decoding options, actions executed per chunk)
EVALS = {
    "table5": {"full_vocab + vanilla": ("full_vocab", VANILLA, 5),
               "lsc + vanilla": ("lsc", VANILLA, 5),
               "lsc + HAD": ("lsc", HAD, 5)},
    "ar": {"LLaDA-VLA (lsc + HAD)": ("lsc", HAD, 5),
           "autoregressive peer (KV cache)": ("autoregressive", (), 5)},
    "table6": {f"chunk {k}": ("lsc" if k == 5 else f"chunk{k}", HAD, k)
               for k in (1, 3, 5, 8, 10)},
    "steps": {**{f"HAD, {i} iteration(s) per action ({5 * i} steps)":
                 ("lsc", ("strategy=hierarchical", f"iterations_per_action={i}"), 5)
                 for i in (1, 2, 7)},
              **{f"vanilla, {s} steps": ("lsc", ("strategy=vanilla", f"steps={s}"), 5)
                 for s in (5, 10, 35)}},
    "cache": {"full attention, prefix cache (approximate)": ("lsc", HAD, 5),
              "full attention, exact (no cache)": (
                  "lsc", HAD + ("prompt_refresh_interval=1",), 5),
              "prefix_attention_mask, prefix cache (exact)": ("prefix_mask", HAD, 5),
              "prefix_attention_mask, no cache": (
                  "prefix_mask", HAD + ("prompt_refresh_interval=1",), 5)},
}
ORDER = ("table5", "ar", "table6", "steps", "cache")


def run(args, variant: str, seed: int, log=print):
    name = (f"ablation-{args.task}-n{args.demos}-steps{args.steps}"
            f"{R.recipe_tag(args.train_options)}-{variant}-seed{seed}")
    bags = R.demos(args.task, args.demos, log=log)
    val = R.demos(args.task, 5, seed=R.VAL_SEED, log=log)
    options = ["--init", "small", "--steps", str(args.steps), "--seed", str(seed),
               *args.train_options, *TRAINING[variant]]
    return name, options, R.train(name, bags, val, options, log=log)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--groups", default="table5,ar",
                   help=f"comma-separated from {', '.join(ORDER)}, or all")
    p.add_argument("--task", default="carrot")
    p.add_argument("--demos", type=int, default=50)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--variants", default=None,
                   help=f"only the rows of these trained models, comma-separated from "
                        f"{', '.join(TRAINING)} (e.g. two sweeps on two cores)")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--train-options", default="", type=shlex.split,
                   help="llada-vla-train options for every run (the recipe; part of "
                        "the run names), e.g. --train-options='--lr 1e-3'")
    p.add_argument("--report", action="store_true")
    args = p.parse_args(argv)
    groups = ORDER if args.groups == "all" else [g for g in args.groups.split(",") if g]
    bad = [g for g in groups if g not in EVALS]
    if bad:
        p.error(f"unknown group(s) {bad}; known: {', '.join(ORDER)}")
    models = set(TRAINING) if args.variants is None else set(args.variants.split(","))
    if models - set(TRAINING):
        p.error(f"unknown variant(s) {sorted(models - set(TRAINING))}; known: "
                f"{', '.join(TRAINING)}")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    doc = R.load_results(RESULTS, "rows")
    if not args.report:
        for group in groups:
            for label, (variant, decoding, per_chunk) in EVALS[group].items():
                if variant not in models:
                    continue
                for seed in (int(s) for s in args.seeds.split(",")):
                    key = (f"{group}|{label}|{args.task}|n{args.demos}|{args.steps}"
                           f"{R.recipe_tag(args.train_options)}|{seed}")
                    if key in doc["rows"]:
                        continue
                    start = R._cpu()
                    name, options, (ckpt, train_log) = run(args, variant, seed)
                    row = {"group": group, "label": label, "task": args.task,
                           "demos": args.demos, "steps": args.steps, "train_seed": seed,
                           "run": name, "train_options": options,
                           "decoding": list(decoding), "actions_per_chunk": per_chunk,
                           "training_seconds": train_log["training_seconds"],
                           "final_val": R.final_val(train_log),
                           "date": time.strftime("%Y-%m-%d"),
                           **R.score(ckpt, args.task, args.eval_episodes, decoding=decoding,
                                     actions_per_chunk=per_chunk)}
                    doc["rows"][key] = row
                    R.record(RESULTS, doc, start)
                    MARKDOWN.write_text(markdown(doc), encoding="utf-8")
    MARKDOWN.write_text(markdown(doc), encoding="utf-8")
    print(markdown(doc))
    return 0


def budget(key: str) -> tuple:
    """A row's training budget from its key: task, demonstrations, steps + recipe."""
    return tuple(key.split("|")[2:5])


def markdown(doc: dict) -> str:
    """One table per group: success (grid, random) per training seed and pooled, latency."""
    out = []
    for group in ORDER:
        rows = [dict(r, budget=budget(k)) for k, r in doc["rows"].items()
                if r["group"] == group]
        if not rows:
            continue
        out += [f"### {group}", "", "| variant | task | demos | steps | seeds | grid success % "
                "(95 % CI) | random success % (95 % CI) | per seed (grid / random) | "
                "grasp % (grid / random) | latency ms median | held-out val loss / token acc. % |",
                "|---|---|---:|---:|---|---|---|---|---|---:|---|"]
        budgets = sorted({r["budget"] for r in rows})  # never pool different budgets
        for label, b in ((label, b) for b in budgets for label in EVALS[group]):
            mine = sorted((r for r in rows if r["label"] == label and r["budget"] == b),
                          key=lambda r: r["train_seed"])
            if not mine:
                out.append(f"| {label} | {b[0]} | {b[1][1:]} | {b[2].split('-')[0]}"
                           f"{R.data_note(R.data_version(b[2]))} | not yet run | | | | | | |")
                continue
            pooled = {}
            for layout in ("grid", "random"):
                wins = sum(r[layout]["successes"] for r in mine)
                n = sum(r[layout]["episodes"] for r in mine)
                lo, hi = wilson(wins, n)
                pooled[layout] = f"{100 * wins / n:.1f} ({100 * lo:.0f}-{100 * hi:.0f})"
            seeds = "; ".join(f"{r['train_seed']}: {100 * r['grid']['success_rate']:.0f} / "
                              f"{100 * r['random']['success_rate']:.0f}" for r in mine)
            lat = [r["random"]["latency_ms"]["median"] for r in mine if r["random"]["latency_ms"]]
            latency = f"{sum(lat) / len(lat):.1f}" if lat else "-"
            grasp = " / ".join(
                "{:.0f}".format(100 * sum(r[lay]["grasp_rate"] * r[lay]["episodes"] for r in mine)
                                / sum(r[lay]["episodes"] for r in mine))
                for lay in ("grid", "random"))
            r0 = mine[0]
            val = "; ".join(R.val_cell(v) for v in (r.get("final_val") for r in mine)
                            if v) or "-"
            out.append(f"| {label} | {r0['task']} | {r0['demos']} | "
                       f"{r0['steps']}{R.data_note(R.data_version(b[2]))} | "
                       f"{','.join(str(r['train_seed']) for r in mine)} | {pooled['grid']} | "
                       f"{pooled['random']} | {seeds} | {grasp} | {latency} | {val} |")
        out.append("")
    out.append(R.cpu_line(doc))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
