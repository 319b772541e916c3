"""The loop closes (issue 12): expert demonstrations collected as bags, a fresh tiny model
trained on them with llada-vla-train, and that checkpoint succeeding in the simulator,
closed loop, on the layouts it was shown. Memorisation on purpose, small and fast: success
on layouts never shown is a benchmark (benchmarks/sim_success.py), not a test."""
import json

from llada_vla_ros import finetune
from llada_vla_ros.action_tokenizer import checkpoint_control_hz
from llada_vla_ros.ros import sim_eval
from llada_vla_ros.sim import collect

TASK, EPISODES, SIZE = "stack", 2, "64x48"  # grid layouts 0 and 1


def test_tiny_model_trained_on_expert_bags_succeeds_closed_loop(tmp_path):
    demos, ckpt, report = tmp_path / "demos", tmp_path / "ckpt", tmp_path / "eval"
    assert collect.main(["--task", TASK, "--layout", "grid", "--episodes", str(EPISODES),
                         "--out", str(demos), "--image-size", SIZE, "--quiet"]) == 0
    bags = sorted(str(p) for p in demos.iterdir() if p.is_dir())
    assert len(bags) == EPISODES
    assert finetune.main([*bags, "--init", "tiny", "--out", str(ckpt), "--steps", "500",
                          "--lr", "3e-3", "--batch-size", "16", "--random-shift", "0",
                          "--loss-weight", "mean", "--val-split", "0", "--quiet"]) == 0
    log = json.loads((ckpt / "train_log.json").read_text())
    assert log["evals"][-1]["token_accuracy"] > 0.95  # it fits its demonstrations
    assert checkpoint_control_hz(ckpt) == 5.0
    assert sim_eval.main(["--policy", str(ckpt), "--task", TASK, "--layout", "grid",
                          "--episodes", str(EPISODES), "--seed", "0", "--image-size", SIZE,
                          "--videos", "0", "--out", str(report), "--quiet"]) == 0
    summary = json.loads((report / "report.json").read_text())["summary"][TASK]
    assert summary["successes"] == EPISODES, summary
