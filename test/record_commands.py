"""A driver-side observer in its own process (it can run on another "host" with its own DDS
profile): appends `<wall time> <cmd values...>` for every JointGroupCommand to OUT_FILE and,
with --diagnostics FILE, keeps the policy's latest /diagnostics values there as JSON; until
SIGINT/SIGTERM.

    python record_commands.py OUT_FILE [--diagnostics FILE] [--topic TOPIC]
"""
import argparse
import json
import signal
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from interbotix_xs_msgs.msg import JointGroupCommand

from llada_vla_ros.ros import qos


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--diagnostics", default="")
    ap.add_argument("--topic", default="/wx250s/commands/joint_group")
    a = ap.parse_args()
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(1))
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("command_recorder")
    with open(a.out, "w") as out:
        def on_command(msg):
            out.write(" ".join([f"{time.time():.6f}"] + [repr(float(v)) for v in msg.cmd]) + "\n")
            out.flush()

        def on_diagnostics(msg):
            for st in msg.status:
                if "llada_vla_policy" in st.name:
                    values = {kv.key: kv.value for kv in st.values}
                    values.update(message=st.message, received=time.time())
                    with open(a.diagnostics, "w") as f:
                        json.dump(values, f)

        node.create_subscription(JointGroupCommand, a.topic, on_command, qos.COMMANDS)
        if a.diagnostics:
            node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        while not stop:
            rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
