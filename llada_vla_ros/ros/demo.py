"""The demo behind `make demo`: simulated camera + simulated WidowX driver + policy node,
an instruction published after start-up, ~20 s of closed-loop control recorded to a rosbag2
bag, then a printed summary and the offline-evaluation report of that bag.

    python -m llada_vla_ros.ros.demo [--model-path DIR|scripted] [--seconds 20] [--out DIR]

Without --model-path it trains (once, cached) a tiny LLaDA-VLA on the simulated camera's
scene and runs the real model path: vision tower, masked-diffusion decoding, safety filter.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from llada_vla_ros.ros.processes import node_command

INSTRUCTION = "put the red block on the blue plate"


def demo_checkpoint(cache: Path) -> Path:
    """A tiny LLaDA-VLA overfit on sim_camera frames -> the scripted square (cached)."""
    from llada_vla_ros.policy import ScriptedPolicy
    from llada_vla_ros.ros.sim_camera import scene
    from llada_vla_ros.training import Example, make_tiny_checkpoint

    if (cache / "config.json").is_file():
        return cache
    table = ScriptedPolicy.default().table
    examples = [Example(image=scene(640, 480, 2 * np.pi * i / 4), instruction=INSTRUCTION,
                        actions=table[5 * i: 5 * i + 5]) for i in range(4)]
    print(f"demo: training a tiny LLaDA-VLA on the simulated scene -> {cache}", flush=True)
    return make_tiny_checkpoint(cache, examples=examples)


def start(name: str, params: dict, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(node_command(name, params), env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


class Watcher:
    """Publishes the instruction and keeps what the node reports."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from interbotix_xs_msgs.msg import JointGroupCommand
        from std_msgs.msg import String

        from llada_vla_ros import topics
        from llada_vla_ros.ros import qos

        rclpy.init()
        self.node = rclpy.create_node("llada_vla_demo")
        self.commands, self.diagnostics = 0, None
        self.node.create_subscription(
            JointGroupCommand, topics.robot_topic(topics.ROBOT_NAME, topics.JOINT_GROUP_COMMAND),
            self._on_command, qos.COMMANDS)
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, 10)
        self.instruction = self.node.create_publisher(String, topics.INSTRUCTION, qos.LATCHED)
        self.String = String
        self._thread = threading.Thread(target=rclpy.spin, args=(self.node,), daemon=True)
        self._thread.start()

    def _on_command(self, msg):
        self.commands += 1

    def _on_diag(self, msg):
        self.diagnostics = {kv.key: kv.value for kv in msg.status[0].values}
        self.diagnostics["message"] = msg.status[0].message

    def say(self, text: str) -> None:
        self.instruction.publish(self.String(data=text))

    def close(self):
        import rclpy
        self.node.destroy_node()
        rclpy.try_shutdown()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-path", default="",
                    help="checkpoint directory, or 'scripted' (default: a tiny demo model)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", default="", help="output directory (default out/demo-<time>)")
    ap.add_argument("--storage", default="mcap", choices=("sqlite3", "mcap"))
    a = ap.parse_args(argv)
    root = Path.cwd()
    out = Path(a.out or root / "out" / f"demo-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = a.model_path or str(demo_checkpoint(root / ".ws" / "demo-model"))
    model_param = "" if spec == "scripted" else spec

    # A domain of its own, kept on this host: the demo never talks to a real robot.
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(120, 200))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    bag = out / "bag"
    procs = [
        start("sim_widowx", {"moving_time": 0.25}, env, out / "sim_widowx.log"),
        start("sim_camera", {}, env, out / "sim_camera.log"),
        start("policy_node", {"execute": True, "model_path": model_param,
                              "record_to": str(bag), "record_storage": a.storage},
              env, out / "policy_node.log"),
    ]
    watcher = Watcher()
    try:
        print(f"demo: camera, driver and policy node up (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}); "
              f"policy: {spec}", flush=True)
        time.sleep(3.0)
        print(f"demo: instruction -> '{INSTRUCTION}'", flush=True)
        watcher.say(INSTRUCTION)
        end = time.monotonic() + a.seconds
        while time.monotonic() < end:
            time.sleep(5.0)
            d = watcher.diagnostics or {}
            print(f"demo: {d.get('message', 'starting')}: chunks {d.get('chunks', 0)}, "
                  f"commands {watcher.commands}", flush=True)
    finally:
        for p in reversed(procs):
            stop(p)
        d = watcher.diagnostics or {}
        watcher.close()
    print("\n=== demo summary ===")
    print(f"policy:              {spec}")
    print(f"chunks decoded:      {d.get('chunks', 0)}")
    print(f"inference latency:   median {d.get('inference_ms_median', '?')} ms "
          f"(last {d.get('inference_ms_last', '?')} ms)")
    print(f"commands received:   {watcher.commands} (node counted {d.get('commands_sent', 0)})")
    print(f"refusals:            {d.get('refusals', 0)} (last: {d.get('last_refusal') or '-'})")
    print(f"dropped frames:      {d.get('dropped_frames', 0)}")
    print(f"bag:                 {bag}")

    from llada_vla_ros import evaluation
    report = out / "report"
    rc = evaluation.main([str(bag), "--policy", spec, "--out", str(report), "--quiet",
                          "--hz", "5"])
    print(f"offline evaluation:  {report / 'report.md'} (and report.html, report.json)")
    print(f"logs:                {out}/*.log")
    ok = rc == 0 and watcher.commands > 0
    if not ok:
        print("demo: FAILED (no command reached the driver, or the evaluation failed); "
              f"see {out}/policy_node.log")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
