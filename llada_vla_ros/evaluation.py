"""Offline evaluation of a policy on a recorded bag (console script ``llada-vla-eval``).

For every frame of the bag the policy is run on the image with the instruction in force; its
first predicted action is compared with the recorded action (``bag.load_episode``). Reports:
per-dimension MAE and RMSE in robot units, gripper accuracy (threshold 0.5), token accuracy
when the policy exposes action tokens and a tokenizer, and the inference latency. Writes
``report.json``, ``report.md``, ``report.html`` (with the plot embedded) and ``actions.png``.

    llada-vla-eval BAG [--policy scripted|scripted:<csv>|<checkpoint dir>] [--out DIR]
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
    """Predict on every frame that has an instruction; arrays for ``compute_metrics``."""
    from tqdm import tqdm

    from .policy import PolicyInputError

    tokenizer = policy_tokenizer(policy)
    out = {"t_s": [], "predicted": [], "recorded": [], "inference_ms": [],
           "predicted_tokens": [], "recorded_tokens": [], "skipped": {}}
    t0 = episode.frames[0].stamp_ns if episode.frames else 0
    for frame in tqdm(episode.frames, desc="frames", unit="frame", disable=not progress):
        if not frame.instruction.strip():
            _count(out["skipped"], "no instruction in force")
            continue
        try:
            chunk = policy.predict(frame.image, frame.instruction)
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
        ("gripper accuracy", f"{m['gripper_accuracy']:.3f}"),
        ("token accuracy", report["token_accuracy_note"] if tok is None else f"{tok:.3f}"),
        ("latency ms (median / p90 / max)",
         "n/a" if lat is None else f"{lat['median']:.1f} / {lat['p90']:.1f} / {lat['max']:.1f}"),
    ]


def write_markdown(path, report: dict) -> None:
    lines = ["# Offline evaluation", ""]
    lines += [f"- **{k}**: {v}" for k, v in _summary_lines(report)]
    lines += ["", "| dimension | unit | MAE | RMSE | token accuracy |",
              "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in _metric_rows(report["metrics"])]
    lines += ["", f"![predicted vs recorded actions]({PLOT_FILE})", ""]
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def write_html(path, report: dict, png_path) -> None:
    e = html.escape
    png = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
    summary = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>"
                      for k, v in _summary_lines(report))
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                   for row in _metric_rows(report["metrics"]))
    Path(path).write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Offline evaluation</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style></head><body>"
        f"<h1>Offline evaluation</h1><table>{summary}</table><h2>Per dimension</h2>"
        "<table><tr><th>dimension</th><th>unit</th><th>MAE</th><th>RMSE</th>"
        f"<th>token accuracy</th></tr>{rows}</table><h2>Predicted vs recorded</h2>"
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
                                   "predicted": run["predicted"].tolist(),
                                   "recorded": run["recorded"].tolist(),
                                   "inference_ms": list(run["inference_ms"])})
    paths["json"].write_text(json.dumps(full, indent=2), encoding="utf-8")
    write_markdown(paths["md"], report)
    write_html(paths["html"], report, paths["png"])
    return paths


def evaluate(episode, policy, policy_spec: str = "", progress: bool = True) -> tuple:
    """Run ``policy`` on ``episode``; returns (report dict, per-frame arrays)."""
    run = run_policy(episode, policy, progress=progress)
    if len(run["predicted"]) == 0:
        raise ValueError(f"{episode.bag}: no frame could be evaluated (skipped: "
                         f"{run['skipped'] or 'no frames with a recorded action'}); "
                         "give --instruction if the bag has no instruction")
    metrics = compute_metrics(run["predicted"], run["recorded"],
                              inference_ms=run["inference_ms"],
                              predicted_tokens=run["predicted_tokens"],
                              recorded_tokens=run["recorded_tokens"])
    note = ""
    if metrics["token_accuracy"] is None:
        note = ("not available: the policy exposes no action tokens" if
                policy_tokenizer(policy) is None else
                "not available: the policy returned no tokens")
    report = {"bag": episode.bag, "policy": policy_spec, "model_id": policy.model_id,
              "action_source": episode.action_source, "frames_in_episode": len(episode),
              "skipped": run["skipped"], "token_accuracy_note": note, "metrics": metrics}
    return report, run


# --- command line ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .bag import add_episode_arguments

    p = argparse.ArgumentParser(
        prog="llada-vla-eval",
        description="Compare a policy's first predicted action with the actions recorded in "
                    "a rosbag2 bag (ActionChunk messages, or joint states via FK).")
    p.add_argument("bag", help="rosbag2 bag directory")
    p.add_argument("--policy", default="scripted",
                   help="scripted | scripted:<table.csv> | LLaDA-VLA checkpoint directory")
    p.add_argument("--out", help="report directory (default: ./<bag name>_eval)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16")
    p.add_argument("--unnorm-key", default=None, help="dataset key of the action statistics")
    add_episode_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    from .bag import BagError, episode_options, load_episode
    from .policy import load_policy

    try:
        episode = load_episode(args.bag, **episode_options(args))
        policy = load_policy(args.policy, device=args.device, dtype=args.dtype,
                             unnorm_key=args.unnorm_key)
        report, run = evaluate(episode, policy, policy_spec=args.policy,
                               progress=not args.quiet)
    except (BagError, FileNotFoundError, ValueError) as exc:
        print(f"llada-vla-eval: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path.cwd() / f"{Path(args.bag).name}_eval"
    paths = write_reports(out, report, run)
    m = report["metrics"]
    print(f"{m['frames']} frames; MAE " +
          " ".join(f"{k}={v:.4g}" for k, v in m["mae"].items()) +
          f"; gripper accuracy {m['gripper_accuracy']:.3f}; report: {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
