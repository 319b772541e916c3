"""A wrist-yaw probe: can a model config learn from one frame which way to turn the wrist?

The carrot models find the carrot but not its orientation (docs/results.md, section 5). This
probe asks whether the orientation is learnable at all from one rendered frame, and by which
vision config, without the rest of behaviour cloning in the way: each example is the first
frame of a random carrot layout (the simulator's camera at ``sim_runs.IMAGE_SIZE``, as the
demonstrations), labelled with the scripted expert's first chunk from the privileged state
(clean commanded actions, no arm lag, no noise). From the start pose the expert turns the
wrist toward the carrot's grasp yaw at its 8.6-degree maximum, so the chunk's summed yaw is
the wrist turn the frame asks for (+-43 degrees for most layouts). ``--wrist-deg W`` starts
the wrist turned by a random +-W degrees instead, so the frame must also show the gripper's
own yaw (the situation mid-approach). Every config trains with the package's loop
(``Trainer``, LSC loss, llada-vla-train's fresh-model recipe: lr 1e-3, batch 8, shift 4 px,
mean loss) on the same pre-rendered frames for the same steps and is evaluated on held-out
layouts every ``--eval-steps``: yaw token accuracy against the majority bin, and the chunk's
summed yaw sorted into turn directions as ``open_loop.py`` does (right / wrong / none).
The control (``cnn-control``) is a plain convolutional classifier of the turn's sign on the
same frames: whether the frame shows the turn at all, to a network built to see it.

    OMP_NUM_THREADS=2 python benchmarks/yaw_probe.py --configs small,small-pooled
    python benchmarks/yaw_probe.py --configs small,small-moments --wrist-deg 30

Resumable: records go to ``benchmarks/results/yaw_probe.json`` keyed by config and wrist
range (``--rerun`` retrains); the plot is ``docs/yaw_probe.png``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from open_loop import yaw_turn
from position_probe import chosen, probe_arguments, save
from sim_runs import IMAGE_SIZE

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "yaw_probe.json"
PLOT = ROOT / "docs" / "yaw_probe.png"
TASK = "carrot"
TURN_DEG = 5.0  # a chunk summing less than this turns "none" (open_loop.py's default)
YAW = 5  # the yaw's index in a Bridge action
WRIST_ROTATE = 5  # its joint index
TRAIN_SEED, VAL_SEED = 100_000, 200_000  # layouts apart from the demonstrations' seeds

# Overrides of LladaVlaConfig.small(): the default, and what might show orientation better.
CONFIGS = {
    "small": {},
    "small-moments": {"vision_keypoint_moments": True},
    "small-pooled": {"vision_keypoint_pooled": True},
    "small-p8": {"vision_config": {"patch_size": 8}},
    "small-96px-p32": {"vision_config": {"image_size": 96, "patch_size": 32}},
    "small-96px-p16": {"vision_config": {"image_size": 96, "patch_size": 16}},
}
CONTROL = "cnn-control"  # not a model config: ``cnn_control``


def frames(n: int, seed: int, wrist_deg: float) -> list:
    """``n`` first frames of random carrot layouts with the expert's first chunk."""
    from llada_vla_ros.sim.env import make
    from llada_vla_ros.sim.expert import expert_for
    from llada_vla_ros.sim.world import INITIAL_JOINTS
    from llada_vla_ros.training import Example

    w, h = (int(v) for v in IMAGE_SIZE.split("x"))
    env = make(TASK, layout="random", image_size=(w, h))
    expert = expert_for(env)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        q0 = INITIAL_JOINTS.copy()
        q0[WRIST_ROTATE] += np.radians(wrist_deg) * rng.uniform(-1.0, 1.0)
        obs, _ = env.reset(seed=seed + i, options={"initial_joints": q0})
        chunk = expert.predict(obs["image"], env.instruction).actions
        out.append(Example(obs["image"], env.instruction, chunk))
    env.close()
    return out


def summed_yaw_deg(actions: np.ndarray) -> np.ndarray:
    """(N, K, 7) Bridge actions -> each chunk's wrist turn in degrees."""
    return np.degrees(actions[..., YAW].sum(-1))


def metrics(model, tok, val) -> dict:
    from llada_vla_ros.finetuning.validation import evaluate

    r = evaluate(model, tok, val, batch_size=64, predictions=True)
    pred, true = r.pop("predictions"), r.pop("targets")
    n, k, d = pred.shape
    pa = tok.decode(pred.reshape(-1, d)).reshape(n, k, -1)
    ta = tok.decode(true.reshape(-1, d)).reshape(n, k, -1)
    turn = yaw_turn(np.stack([summed_yaw_deg(ta), summed_yaw_deg(pa)], 1), TURN_DEG)
    ang = np.arctan2(pa[:, 0, 1], pa[:, 0, 0]) - np.arctan2(ta[:, 0, 1], ta[:, 0, 0])
    ang = np.abs((ang + np.pi) % (2 * np.pi) - np.pi)
    return {"val_loss": r["loss"], "yaw_token_accuracy": r["token_accuracy_per_dim"][YAW],
            **{f"turn_{k}": v for k, v in turn["of_turning"].items()},
            "turn_counts": turn["counts"], "turn_correlation": turn["correlation"],
            "xy_direction_within_30deg": float(np.mean(ang <= np.radians(30)))}


def majority(tok, val) -> float:
    """Yaw token accuracy of always predicting the most frequent bin."""
    yaw = np.stack([tok.encode(e.actions) for e in val])[..., YAW].ravel()
    return float(np.mean(yaw == np.bincount(yaw).argmax()))


def run_config(name: str, train, val, steps: int, eval_steps: int) -> dict:
    import torch

    from llada_vla_ros.action_tokenizer import NormStats
    from llada_vla_ros.finetuning.loop import FitConfig, Trainer
    from llada_vla_ros.model import LladaVlaConfig, LladaVlaForActions, build_tiny_tokenizer
    from llada_vla_ros.model.modeling import count_parameters
    from llada_vla_ros.training import action_tokenizer_for

    torch.manual_seed(0)
    model = LladaVlaForActions(LladaVlaConfig.small(**CONFIGS[name]))
    model.tokenizer = build_tiny_tokenizer(model.config.num_bins, words=True)
    tok = action_tokenizer_for(model.config, NormStats.from_actions(
        np.stack([e.actions for e in train])), "probe")
    shift = max(1, model.config.image_size // 16)  # llada-vla-train's "auto"
    cfg = FitConfig(steps=steps, lr=1e-3, global_batch=8, warmup_steps=100, cosine=False,
                    random_shift=shift, seed=0, reweight=False)
    trainer = Trainer(model, tok, train, cfg, progress=False)
    curve = [dict(step=0, seconds=0.0, **metrics(model, tok, val))]
    while not trainer.finished:
        trainer.run(eval_steps)
        p = dict(step=trainer.step, seconds=round(trainer.seconds, 1),
                 **metrics(model, tok, val))
        curve.append(p)
        print(f"{name}: step {p['step']}, {p['seconds']:.0f} s: yaw token "
              f"{100 * p['yaw_token_accuracy']:.1f} %, turns right/wrong/none "
              f"{100 * p['turn_right']:.0f}/{100 * p['turn_wrong']:.0f}/"
              f"{100 * p['turn_none']:.0f} %, x/y direction<30deg "
              f"{100 * p['xy_direction_within_30deg']:.0f} %", flush=True)
    return {"config": name, "overrides": CONFIGS[name], "parameters": count_parameters(model),
            "image_size": model.config.image_size, "random_shift": shift, "steps": steps,
            "train_examples": len(train), "val_examples": len(val),
            "yaw_token_majority": majority(tok, val),
            "training_seconds": round(trainer.seconds, 1),
            "seconds_per_step": round(trainer.seconds / max(trainer.step, 1), 4),
            "torch_threads": torch.get_num_threads(), "curve": curve, "final": curve[-1],
            "date": time.strftime("%Y-%m-%d")}


def cnn_control(train, val, steps: int, eval_steps: int, batch: int = 32) -> dict:
    """The control: a plain 4-layer convolutional classifier (3x3 stride-2 convolutions, GELU,
    global max pool, linear) trained with cross-entropy on the sign of the expert's turn, on
    the same frames preprocessed as ``small`` sees them (64x64), frames where the expert
    turns. If it learns the sign, the frame shows it."""
    import torch
    import torch.nn as nn

    from llada_vla_ros.model import LladaVlaConfig, LladaVlaForActions

    prep = LladaVlaForActions(LladaVlaConfig.small())

    def tensors(examples):
        turns = np.array([summed_yaw_deg(e.actions) for e in examples])
        keep = np.abs(turns) > TURN_DEG
        x = torch.cat([prep.preprocess(e.image).pixels
                       for e, k in zip(examples, keep) if k])
        return x, torch.as_tensor(turns[keep] > 0).long()

    (xt, yt), (xv, yv) = tensors(train), tensors(val)
    torch.manual_seed(0)
    widths = [3, 32, 64, 64, 64]
    net = nn.Sequential(*[m for a, b in zip(widths, widths[1:])
                          for m in (nn.Conv2d(a, b, 3, 2, 1), nn.GELU())],
                        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 2))
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(0)
    curve, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        i = torch.randint(0, len(yt), (batch,), generator=gen)
        loss = nn.functional.cross_entropy(net(xt[i]), yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_steps == 0:
            with torch.no_grad():
                right = float((net(xv).argmax(1) == yv).float().mean())
            curve.append(dict(step=step, seconds=round(time.perf_counter() - start, 1),
                              turn_right=right, turn_wrong=1 - right, turn_none=0.0))
            print(f"cnn-control: step {step}: turns right {100 * right:.1f} %", flush=True)
    return {"config": "cnn-control", "batch": batch, "steps": steps,
            "parameters": sum(p.numel() for p in net.parameters()),
            "train_examples": len(yt), "val_examples": len(yv), "curve": curve,
            "final": curve[-1], "date": time.strftime("%Y-%m-%d")}


def plot(records: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, r in enumerate(records):
        c = r["curve"]
        steps = [p["step"] for p in c]
        style = dict(color=f"C{i % 10}", lw=1.6,
                     ls="-" if r["wrist_deg"] == 0 else "--",
                     label=r["config"] + (f", wrist +-{r['wrist_deg']:g} deg" if r["wrist_deg"]
                                          else "") + (" (batch 32)" if r["config"] == CONTROL
                                                      else ""))
        axes[0].plot(steps, [100 * p["turn_right"] for p in c], **style)
        if r["config"] != CONTROL:  # the control classifies the turn only
            axes[1].plot(steps, [100 * p["yaw_token_accuracy"] for p in c], **style)
            axes[2].plot(steps, [100 * p["xy_direction_within_30deg"] for p in c], **style)
    axes[0].set(ylabel="turning the wrist the expert's way %", ylim=(0, 100))
    axes[1].set(ylabel="yaw token accuracy %")
    axes[2].set(ylabel="first move within 30 deg of the expert's %", ylim=(0, 100))
    for ax in axes:
        ax.set(xlabel="training steps (batch 8)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Wrist-yaw probe: held-out first frames of random carrot layouts")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=",".join([*CONFIGS, CONTROL]),
                   help=f"comma-separated, from: {', '.join([*CONFIGS, CONTROL])}")
    p.add_argument("--steps", type=int, default=4000, help="training steps per config")
    p.add_argument("--eval-steps", type=int, default=500)
    p.add_argument("--wrist-deg", type=float, default=0.0,
                   help="start the wrist turned by a random +- this many degrees")
    p.add_argument("--train-examples", type=int, default=4000)
    p.add_argument("--val-examples", type=int, default=500)
    probe_arguments(p, RESULTS)
    args = p.parse_args(argv)
    names = chosen(p, args.configs, [*CONFIGS, CONTROL])
    path = Path(args.results)
    doc = json.loads(path.read_text()) if path.is_file() else {"records": []}
    key = lambda r: (r["config"], r["wrist_deg"])  # noqa: E731
    todo = [n for n in names if args.rerun
            or (n, args.wrist_deg) not in {key(r) for r in doc["records"]}]
    if todo and not args.plot_only:
        t0 = time.process_time()
        train = frames(args.train_examples, TRAIN_SEED, args.wrist_deg)
        val = frames(args.val_examples, VAL_SEED, args.wrist_deg)
        for name in todo:
            run = (cnn_control(train, val, args.steps, args.eval_steps) if name == CONTROL
                   else run_config(name, train, val, args.steps, args.eval_steps))
            record = dict(run, wrist_deg=args.wrist_deg)
            doc["records"] = [r for r in doc["records"] if key(r) != key(record)] + [record]
            save(doc, path, time.process_time() - t0)
            t0 = time.process_time()
    if doc["records"]:
        plot(doc["records"], PLOT)
        print(f"plot: {PLOT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
