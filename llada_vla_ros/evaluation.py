"""Offline evaluation of a policy on recorded bags (console script ``llada-vla-eval``).

For every frame of each bag the policy is run on the image with the instruction in force;
its first predicted action is compared with the recorded action (``bag.open_episode``).
Frames stream one decoded image at a time, so memory does not grow with the length of a
bag. Reports, over all bags and per bag: per-dimension MAE and RMSE in robot units, gripper
accuracy (threshold 0.5), token accuracy when the policy exposes action tokens and a
tokenizer, the inference latency, and the frames left out and why. Writes ``report.json``,
``report.md``, ``report.html`` (with the plot embedded) and ``actions.png``.

    llada-vla-eval BAG [BAG ...] [--policy scripted|scripted:<csv>|<checkpoint dir>] [--out DIR]
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np


DIM_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
DIM_UNITS = ("m", "m", "m", "rad", "rad", "rad", "0..1")
PLOT_FILE = "actions.png"


# --- metrics (pure) --------------------------------------------------------------------------

def compute_metrics(predicted, recorded, *, inference_ms=None, predicted_tokens=None,
                    recorded_tokens=None, gripper_threshold: float = 0.5) -> dict:
    """Metrics of N predicted vs recorded 7-dim actions (robot units).

    Returns ``frames``, ``mae`` and ``rmse`` (dicts by dimension name), ``gripper_accuracy``
    (both sides thresholded at ``gripper_threshold``), ``token_accuracy`` and
    ``token_accuracy_per_dim`` (None without tokens) and ``latency_ms`` (median, p90, max,
    mean; None without timings).
    """
    pred = np.asarray(predicted, dtype=np.float64)
    rec = np.asarray(recorded, dtype=np.float64)
    if pred.shape != rec.shape or pred.ndim != 2 or pred.shape[1] != len(DIM_NAMES):
        raise ValueError(f"predicted and recorded must both be N x {len(DIM_NAMES)}, got "
                         f"{pred.shape} and {rec.shape}")
    if len(pred) == 0:
        raise ValueError("no frames to evaluate")
    err = pred - rec
    metrics = {
        "frames": int(len(pred)),
        "mae": dict(zip(DIM_NAMES, np.abs(err).mean(axis=0).tolist())),
        "rmse": dict(zip(DIM_NAMES, np.sqrt((err ** 2).mean(axis=0)).tolist())),
        "gripper_accuracy": float(np.mean((pred[:, 6] >= gripper_threshold)
                                          == (rec[:, 6] >= gripper_threshold))),
        "token_accuracy": None,
        "token_accuracy_per_dim": None,
        "latency_ms": None,
    }
    if predicted_tokens is not None and recorded_tokens is not None:
        pt, rt = np.asarray(predicted_tokens), np.asarray(recorded_tokens)
        if pt.shape != rec.shape or rt.shape != rec.shape:
            raise ValueError(f"tokens must be N x {len(DIM_NAMES)}, got {pt.shape} and "
                             f"{rt.shape}")
        same = pt == rt
        metrics["token_accuracy"] = float(same.mean())
        metrics["token_accuracy_per_dim"] = dict(zip(DIM_NAMES, same.mean(axis=0).tolist()))
    if inference_ms is not None and len(inference_ms):
        ms = np.asarray(inference_ms, dtype=np.float64)
        metrics["latency_ms"] = {"median": float(np.median(ms)),
                                 "p90": float(np.percentile(ms, 90)),
                                 "max": float(ms.max()), "mean": float(ms.mean())}
    return metrics


# --- running a policy over an episode -------------------------------------------------------

def policy_tokenizer(policy):
    """The policy's ActionTokenizer, if it has one."""
    for name in ("tokenizer", "action_tokenizer"):
        tok = getattr(policy, name, None)
        if tok is not None and hasattr(tok, "encode"):
            return tok
    return None


def run_policy(episode, policy, progress: bool = True) -> dict:
    """Predict on every frame that has an instruction; arrays for ``compute_metrics``.
    ``episode``: an Episode or an EpisodeStream (frames decoded as they are used)."""
    from tqdm import tqdm

    from .policy import PolicyInputError, wants_state

    tokenizer = policy_tokenizer(policy)
    out = {"t_s": [], "predicted": [], "recorded": [], "inference_ms": [],
           "predicted_tokens": [], "recorded_tokens": [], "skipped": {}}
    t0 = None
    for frame in tqdm(episode, desc=Path(episode.bag).name, unit="frame", total=len(episode),
                      disable=not progress):
        t0 = frame.stamp_ns if t0 is None else t0
        if not frame.instruction.strip():
            _count(out["skipped"], "no instruction in force")
            continue
        try:
            if wants_state(policy) and frame.state is None:
                raise PolicyInputError("the policy takes the robot state; this recording "
                                       "has no joint states at the frame")
            chunk = policy.predict(frame.image, frame.instruction,
                                   **({"state": frame.state} if wants_state(policy) else {}))
        except PolicyInputError as exc:
            _count(out["skipped"], f"rejected by the policy: {exc}")
            continue
        out["t_s"].append((frame.stamp_ns - t0) / 1e9)
        out["predicted"].append(np.asarray(chunk.actions, dtype=np.float64)[0])
        out["recorded"].append(np.asarray(frame.action, dtype=np.float64))
        out["inference_ms"].append(float(chunk.inference_ms))
        if chunk.tokens is not None and tokenizer is not None:
            out["predicted_tokens"].append(np.asarray(chunk.tokens)[0])
            out["recorded_tokens"].append(tokenizer.encode(frame.action[None, :])[0])
    n = len(out["predicted"])
    for key in ("predicted", "recorded"):
        out[key] = np.array(out[key], dtype=np.float64).reshape(n, len(DIM_NAMES))
    if len(out["predicted_tokens"]) != n or n == 0:
        out["predicted_tokens"] = out["recorded_tokens"] = None
    else:
        out["predicted_tokens"] = np.array(out["predicted_tokens"])
        out["recorded_tokens"] = np.array(out["recorded_tokens"])
    return out


def _count(counter: dict, reason: str) -> None:
    counter[reason] = counter.get(reason, 0) + 1


# --- reports ----------------------------------------------------------------------------------

def plot_actions(path, t_s, predicted, recorded, title: str = "") -> Path:
    """One PNG, 7 subplots: predicted vs recorded action per dimension over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(DIM_NAMES), 1, figsize=(9, 13), sharex=True)
    for d, ax in enumerate(axes):
        ax.plot(t_s, recorded[:, d], "k.-", lw=1, ms=3, label="recorded")
        ax.plot(t_s, predicted[:, d], "C1.-", lw=1, ms=3, label="predicted")
        ax.set_ylabel(f"{DIM_NAMES[d]} [{DIM_UNITS[d]}]")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right")
    axes[-1].set_xlabel("time [s]")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def _metric_rows(metrics: dict) -> list:
    rows = []
    for name, unit in zip(DIM_NAMES, DIM_UNITS):
        tok = metrics["token_accuracy_per_dim"]
        rows.append((name, unit, f"{metrics['mae'][name]:.6g}", f"{metrics['rmse'][name]:.6g}",
                     "n/a" if tok is None else f"{tok[name]:.3f}"))
    return rows


def _summary_lines(report: dict) -> list:
    m = report["metrics"]
    lat = m["latency_ms"]
    tok = m["token_accuracy"]
    return [
        ("bag", report["bag"]),
        ("policy", f"{report['policy']} ({report['model_id']})"),
        ("action source", report["action_source"]),
        ("frames evaluated", f"{m['frames']} of {report['frames_in_episode']}"),
        ("skipped", ", ".join(f"{k}: {v}" for k, v in report["skipped"].items()) or "none"),
        ("frames without a recorded action", ", ".join(
            f"{k}: {v}" for k, v in report["frames_without_action"].items()) or "none"),
        ("gripper accuracy", f"{m['gripper_accuracy']:.3f}"),
        ("token accuracy", report["token_accuracy_note"] if tok is None else f"{tok:.3f}"),
        ("latency ms (median / p90 / max)",
         "n/a" if lat is None else f"{lat['median']:.1f} / {lat['p90']:.1f} / {lat['max']:.1f}"),
    ]


def _bag_rows(report: dict) -> list:
    """bag, action source, frames evaluated of frames with an action, mean MAE, gripper
    accuracy, frames skipped and why, frames without an action and why, how it was opened."""
    rows = []
    for b in report["bags"]:
        rows.append((b["bag"], b["action_source"], f"{b['frames']} of {b['frames_in_episode']}",
                     f"{b['mae_mean']:.4g}" if "mae_mean" in b else "n/a",
                     f"{b['gripper_accuracy']:.3f}" if "gripper_accuracy" in b else "n/a",
                     "; ".join(f"{k}: {v}" for k, v in b["skipped"].items()) or "none",
                     "; ".join(f"{k}: {v}" for k, v in b["frames_without_action"].items())
                     or "none",
                     " ".join(b["notes"])))
    return rows


BAG_COLUMNS = ("bag", "action source", "frames", "mean MAE", "gripper accuracy", "skipped",
               "without an action", "notes")


def write_markdown(path, report: dict) -> None:
    lines = ["# Offline evaluation", ""]
    lines += [f"- **{k}**: {v}" for k, v in _summary_lines(report)]
    lines += ["", "| dimension | unit | MAE | RMSE | token accuracy |",
              "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in _metric_rows(report["metrics"])]
    lines += ["", "## Per bag", "", "| " + " | ".join(BAG_COLUMNS) + " |",
              "|" + "---|" * len(BAG_COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |"
              for row in _bag_rows(report)]
    lines += ["", f"![predicted vs recorded actions]({PLOT_FILE})", ""]
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def write_html(path, report: dict, png_path) -> None:
    e = html.escape
    png = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
    summary = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>"
                      for k, v in _summary_lines(report))
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                   for row in _metric_rows(report["metrics"]))
    bag_rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                       for row in _bag_rows(report))
    Path(path).write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Offline evaluation</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style></head><body>"
        f"<h1>Offline evaluation</h1><table>{summary}</table><h2>Per dimension</h2>"
        "<table><tr><th>dimension</th><th>unit</th><th>MAE</th><th>RMSE</th>"
        f"<th>token accuracy</th></tr>{rows}</table><h2>Per bag</h2>"
        f"<table><tr>{''.join(f'<th>{e(c)}</th>' for c in BAG_COLUMNS)}</tr>{bag_rows}</table>"
        "<h2>Predicted vs recorded</h2>"
        f"<img alt='predicted vs recorded actions' src='data:image/png;base64,{png}'>"
        "</body></html>", encoding="utf-8")


def write_reports(out_dir, report: dict, run: dict) -> dict:
    """report.json, report.md, report.html and actions.png in ``out_dir``; returns paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md",
             "html": out / "report.html", "png": out / PLOT_FILE}
    plot_actions(paths["png"], run["t_s"], run["predicted"], run["recorded"],
                 title=f"{report['model_id']} on {Path(report['bag']).name}")
    full = dict(report, per_frame={"t_s": list(run["t_s"]),
                                   "bag_index": list(run["bag_index"]),
                                   "predicted": run["predicted"].tolist(),
                                   "recorded": run["recorded"].tolist(),
                                   "inference_ms": list(run["inference_ms"])})
    paths["json"].write_text(json.dumps(full, indent=2), encoding="utf-8")
    write_markdown(paths["md"], report)
    write_html(paths["html"], report, paths["png"])
    return paths


def evaluate(episode, policy, policy_spec: str = "", progress: bool = True) -> tuple:
    """Run ``policy`` on one episode; returns (report dict, per-frame arrays)."""
    return evaluate_bags([episode], policy, policy_spec, progress)


def evaluate_bags(episodes, policy, policy_spec: str = "", progress: bool = True) -> tuple:
    """Run ``policy`` on each episode (Episode or EpisodeStream) in turn; returns (report
    dict: metrics over every frame plus a summary per bag, per-frame arrays of all bags)."""
    runs, bags = [], []
    for episode in episodes:
        run = run_policy(episode, policy, progress=progress)
        summary = {"bag": episode.bag, "action_source": episode.action_source,
                   "frames_in_episode": len(episode), "frames": len(run["predicted"]),
                   "skipped": run["skipped"],
                   "frames_without_action": dict(episode.skipped),
                   "notes": list(episode.notes)}
        if len(run["predicted"]):
            m = compute_metrics(run["predicted"], run["recorded"])
            summary.update(mae_mean=float(np.mean(list(m["mae"].values()))),
                           gripper_accuracy=m["gripper_accuracy"])
        runs.append(run)
        bags.append(summary)
    run = _concatenate(runs)
    if len(run["predicted"]) == 0:
        skipped = _add_counts(b["skipped"] for b in bags)
        missing = _add_counts(b["frames_without_action"] for b in bags)
        raise ValueError(f"{', '.join(b['bag'] for b in bags)}: no frame could be evaluated "
                         f"(skipped: {skipped or 'no frames with a recorded action'}; frames "
                         f"without an action: {missing or 'none'}); give --instruction if "
                         "the bag has no instruction")
    metrics = compute_metrics(run["predicted"], run["recorded"],
                              inference_ms=run["inference_ms"],
                              predicted_tokens=run["predicted_tokens"],
                              recorded_tokens=run["recorded_tokens"])
    note = ""
    if metrics["token_accuracy"] is None:
        note = ("not available: the policy exposes no action tokens" if
                policy_tokenizer(policy) is None else
                "not available: the policy returned no tokens")
    report = {"bag": bags[0]["bag"] if len(bags) == 1 else f"{len(bags)} bags",
              "bags": bags, "policy": policy_spec, "model_id": policy.model_id,
              "action_source": ", ".join(sorted({b["action_source"] for b in bags})),
              "frames_in_episode": sum(b["frames_in_episode"] for b in bags),
              "skipped": _add_counts(b["skipped"] for b in bags),
              "frames_without_action": _add_counts(b["frames_without_action"] for b in bags),
              "token_accuracy_note": note, "metrics": metrics}
    return report, run


def _add_counts(counters) -> dict:
    total: dict = {}
    for counter in counters:
        for why, n in counter.items():
            total[why] = total.get(why, 0) + n
    return total


def _concatenate(runs: list) -> dict:
    """The per-frame arrays of several runs end to end (time continues across bags)."""
    out = {"t_s": [], "bag_index": [], "inference_ms": []}
    offset = 0.0
    for i, run in enumerate(runs):
        out["t_s"] += [offset + t for t in run["t_s"]]
        out["bag_index"] += [i] * len(run["t_s"])
        out["inference_ms"] += run["inference_ms"]
        offset = (out["t_s"][-1] + 1.0) if out["t_s"] else offset
    for key in ("predicted", "recorded"):
        out[key] = np.concatenate([r[key] for r in runs]).reshape(-1, len(DIM_NAMES))
    with_tokens = all(r["predicted_tokens"] is not None for r in runs if len(r["predicted"]))
    for key in ("predicted_tokens", "recorded_tokens"):
        out[key] = (np.concatenate([r[key] for r in runs if len(r["predicted"])])
                    if with_tokens and len(out["predicted"]) else None)
    return out


# --- command line ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .bag import add_bag_arguments, add_episode_arguments

    p = argparse.ArgumentParser(
        prog="llada-vla-eval",
        description="Compare a policy's first predicted action with the actions recorded in "
                    "rosbag2 bags (ActionChunk messages, or joint states via FK).")
    add_bag_arguments(p, "; several bags give one report with a summary per bag")
    p.add_argument("--policy", default="scripted",
                   help="scripted | scripted:<table.csv> | LLaDA-VLA checkpoint directory")
    p.add_argument("--out", help="report directory (default: ./<bag name>_eval, or "
                                 "./llada_vla_eval for several bags)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16")
    p.add_argument("--unnorm-key", default=None, help="dataset key of the action statistics")
    add_episode_arguments(p)  # --hz: default the checkpoint's control rate (main)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    from .bag import BagError, episode_options, find_bags, open_episode
    from .action_tokenizer import checkpoint_control_hz
    from .policy import load_policy

    if args.hz is None:  # the rate the checkpoint's labels have (llada-vla-train --hz)
        args.hz = checkpoint_control_hz(args.policy, args.unnorm_key)
        if args.hz:
            print(f"frames at the checkpoint's control rate, {args.hz:g} Hz (--hz to change)")
    try:
        bags = find_bags(args.bags)
        # the policy first: a bad --policy is reported before any bag is read
        policy = load_policy(args.policy, device=args.device, dtype=args.dtype,
                             unnorm_key=args.unnorm_key)
        # then every bag's topics and labels, before the first image is decoded
        episodes = [open_episode(bag, **episode_options(args)) for bag in bags]
        report, run = evaluate_bags(episodes, policy, policy_spec=args.policy,
                                    progress=not args.quiet)
    except (BagError, FileNotFoundError, ValueError) as exc:
        print(f"llada-vla-eval: error: {exc}", file=sys.stderr)
        return 2
    name = f"{Path(args.bags[0]).name}_eval" if len(args.bags) == 1 else "llada_vla_eval"
    paths = write_reports(Path(args.out) if args.out else Path.cwd() / name, report, run)
    for row in _bag_rows(report):
        print(f"{row[0]}: {row[2]} frames evaluated; mean MAE {row[3]}; gripper accuracy "
              f"{row[4]}; skipped: {row[5]}; without an action: {row[6]}"
              + (f"; {row[7]}" if row[7] else ""))
    m = report["metrics"]
    print(f"{m['frames']} frames; MAE " +
          " ".join(f"{k}={v:.4g}" for k, v in m["mae"].items()) +
          f"; gripper accuracy {m['gripper_accuracy']:.3f}; report: {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
