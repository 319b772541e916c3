"""``llada-vla-sim-eval``: success rates of a policy in the simulated world.

    llada-vla-sim-eval --policy expert|scripted|CKPT --task all --episodes 10 --seed 0 --out DIR
    llada-vla-sim-eval ... --through-ros     # the real policy_node and sim_world over DDS

In-process (default): ``sim.evaluate`` (no ROS needed). ``--through-ros`` runs per task one
``sim_world`` and one ``policy_node`` process on a ROS domain of their own and plays the
operator between episodes: the node's ``~/stop``, the world's ``~/reset`` (with the
episode's seed), the instruction republished, ``~/start``; the episode ends on success or
after the task's steps (counted at 5 Hz from the first arm command). The policy's latency
comes from its ActionChunk messages. rclpy is only imported for ``--through-ros``.
"""
from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from llada_vla_ros.control.loop import SETTLE_WINDOW_S, STARTING
from llada_vla_ros.sim import evaluate as E
from llada_vla_ros.sim.tasks import get_task, task_names


class Operator:
    """The harness's own ROS node: services of the node and the world, the instruction, and
    what comes back (episode outcome, chunks, frames, the node's diagnostics)."""

    def __init__(self, image_topic: str):
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.srv import SetParameters
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from llada_vla_ros import topics
        from llada_vla_ros.msg import ActionChunk
        from llada_vla_ros.ros import qos
        from llada_vla_ros.ros.background import BackgroundNode

        self._background = BackgroundNode("llada_vla_sim_eval")
        self.node = self._background.node
        self.lock = threading.Lock()
        self.episode: dict = {}
        self.chunks_ms: list = []
        self.model = ""
        self.hold_reason = ""
        self.started = False  # the node reported a state past its startup hold
        self.frames: Optional[list] = None
        self._last_frame = 0.0
        self.String, self.Trigger, self.SetParameters = String, Trigger, SetParameters
        n = self.node
        n.create_subscription(String, "/sim_world/episode", self._on_episode, qos.LATCHED)
        n.create_subscription(ActionChunk, topics.ACTION_CHUNK, self._on_chunk, 10)
        n.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, 10)
        n.create_subscription(Image, image_topic, self._on_image, qos.IMAGE_SUB)
        self.instruction = n.create_publisher(String, topics.INSTRUCTION, qos.LATCHED)
        self.clients = {name: n.create_client(Trigger, srv) for name, srv in (
            ("start", "/llada_vla_policy/start"), ("stop", "/llada_vla_policy/stop"),
            ("reset", "/sim_world/reset"))}
        self.params = n.create_client(SetParameters, "/sim_world/set_parameters")

    def _on_episode(self, msg):
        with self.lock:
            self.episode = json.loads(msg.data)

    def _on_chunk(self, msg):
        with self.lock:
            self.chunks_ms.append(float(msg.inference_ms))

    def _on_diag(self, msg):
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "model" in values and "hold_reason" in values:  # the policy node's status
                with self.lock:
                    self.model = values.get("model", "")
                    self.hold_reason = values.get("hold_reason", "")
                    self.started = self.started or self.hold_reason != STARTING

    def _on_image(self, msg):
        from llada_vla_ros.images import image_msg_to_rgb
        now = time.monotonic()
        with self.lock:
            if self.frames is not None and now - self._last_frame >= 0.19:
                self._last_frame = now
                self.frames.append(image_msg_to_rgb(msg))

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return
            time.sleep(0.02)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    def call(self, name: str, timeout: float = 30.0):
        client = self.clients[name]
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(self.Trigger.Request())
        self.wait(future.done, timeout, f"{client.srv_name}")
        return future.result()

    def set_seed(self, seed: int) -> None:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue

        if not self.params.wait_for_service(timeout_sec=30):
            raise TimeoutError("/sim_world/set_parameters not available")
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(seed))
        future = self.params.call_async(self.SetParameters.Request(
            parameters=[Parameter(name="seed", value=value)]))
        self.wait(future.done, 30, "setting the world's seed")

    def say(self, text: str) -> None:
        self.instruction.publish(self.String(data=text))

    def close(self) -> None:
        self._background.close()


def decoding_parameters(pairs) -> dict:
    """--decoding KEY=VALUE pairs as the node's decoding.* parameters."""
    from llada_vla_ros.decoding import parse_options
    return {f"decoding.{k}": v for k, v in parse_options(pairs).items()}


def run_task_through_ros(args, task_name: str, out: Path, ready_timeout: float = 300.0,
                         log=print) -> tuple:
    """The episodes of one task with real processes; returns (episodes, videos)."""
    from llada_vla_ros import topics
    from llada_vla_ros.ros.processes import isolated_ros_env, start_node, stop_node

    task = get_task(task_name)
    env = isolated_ros_env(args.domain_id)
    import os
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    state_file = Path(tempfile.mkdtemp(prefix="llada_sim_eval_")) / "expert_state.json"
    spec = f"expert:{state_file}" if args.policy == "expert" else args.policy
    w, h = args.image_size
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = [start_node("sim_world", {"task": task.name, "layout": args.layout,
                                      "seed": args.seed, "width": w, "height": h,
                                      "moving_time": 0.25,  # what the node sets anyway
                                      "fps": args.camera_fps,
                                      "expert_state_file": str(state_file)},
                        env, logs / f"sim_world_{task.name}.log"),
             start_node("policy_node", {"model_path": spec, "execute": False,
                                        "device": args.device, "dtype": args.dtype or "",
                                        "execution_mode": args.execution_mode,
                                        "actions_per_chunk": args.actions_per_chunk,
                                        "ensemble_decay": args.ensemble_decay,
                                        **decoding_parameters(args.decoding)},
                        env, logs / f"policy_node_{task.name}.log")]
    op = None
    episodes, videos = [], {}
    try:
        op = Operator(topics.IMAGE)
        t0 = time.monotonic()
        op.wait(lambda: op.model and op.started, ready_timeout, "the policy to report ready "
                f"(diagnostics 'model') past its startup hold; see "
                f"{logs}/policy_node_{task.name}.log")
        log(f"{task.name}: policy ready after {time.monotonic() - t0:.1f} s "
            f"(ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']})")
        for k in range(args.episodes):
            seed = args.seed + k
            op.call("stop")
            op.set_seed(seed)
            reply = op.call("reset")
            number = int(reply.message.split()[1].rstrip(":"))
            op.wait(lambda: op.episode.get("episode") == number, 30, "the new episode")
            # ~/start re-anchors on the measured joints only once the node has seen the
            # reset arm at rest for its settle window; sooner, it would resume from the last
            # episode's command (a wrong first chunk, or a tracking fault)
            time.sleep(SETTLE_WINDOW_S + 0.2)
            with op.lock:
                op.chunks_ms = []
                op.frames = [] if k < args.videos else None
            op.say(task.instruction)
            op.call("start")
            deadline = time.monotonic() + task.max_steps * 0.2 + 15.0
            while time.monotonic() < deadline:
                with op.lock:
                    if op.episode.get("done"):
                        break
                    restart = "tracking error" in op.hold_reason
                    op.hold_reason = ""
                if restart:  # what the diagnostics ask the operator to do
                    op.call("start")
                time.sleep(0.05)
            # a policy that never moved the arm ends at the deadline: a failure
            with op.lock:
                ep, lat, frames = dict(op.episode), list(op.chunks_ms), op.frames
                op.frames = None
            episodes.append({"task": task.name, "seed": seed, "success": bool(ep["success"]),
                             "steps": int(ep["success_step"] or ep["steps"]),
                             "steps_to_success": ep["success_step"],
                             "grasped": bool(ep["grasped"]), "held_steps": None,
                             "latency_ms": lat})
            if frames is not None:
                videos[(task.name, seed)] = frames
            log(f"{task.name} seed {seed}: {'success' if ep['success'] else 'failure'} "
                f"after {episodes[-1]['steps']} steps")
        op.call("stop")
    finally:
        for p in reversed(procs):
            stop_node(p)
        if op is not None:
            op.close()
    return episodes, videos


def main_through_ros(args) -> int:
    start = time.perf_counter()
    out = Path(args.out or Path.cwd() / "sim_eval")
    episodes, videos = [], {}
    for name in task_names(args.task):
        eps, vids = run_task_through_ros(args, name, out, log=(lambda *a: None)
                                         if args.quiet else print)
        episodes += eps
        videos.update(vids)
    report = E.build_report(args, episodes, time.perf_counter() - start, "through ROS")
    E.print_summary(report, E.write_reports(out, report, videos))
    return 0


def build_parser():
    p = E.build_parser()
    p.add_argument("--camera-fps", type=float, default=30.0,
                   help="--through-ros: frames per second of sim_world's camera")
    p.add_argument("--domain-id", type=int, default=None,
                   help="--through-ros: ROS domain of the processes (default: random 120..200)")
    return p


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        E.check_args(args)
        if args.policy not in ("expert", "scripted") and not args.policy.startswith(
                "scripted:") and not Path(args.policy).expanduser().is_dir():
            raise FileNotFoundError(f"--policy {args.policy}: not expert, scripted or a "
                                    "checkpoint directory")
    except (ValueError, FileNotFoundError) as exc:
        print(f"llada-vla-sim-eval: error: {exc}", file=sys.stderr)
        return 2
    if args.through_ros:
        return main_through_ros(args)
    return E.main_in_process(args)


if __name__ == "__main__":
    sys.exit(main())
