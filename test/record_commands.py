"""A driver-side observer in its own process (it can run on another "host" with its own DDS
profile): appends `<wall time> <cmd values...>` for every JointGroupCommand to a file, until
SIGINT/SIGTERM.

    python record_commands.py OUT_FILE [TOPIC]
"""
import signal
import sys
import time

import rclpy
from interbotix_xs_msgs.msg import JointGroupCommand

from llada_vla_ros.ros import qos


def main(out_path, topic="/wx250s/commands/joint_group"):
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(1))
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("command_recorder")
    with open(out_path, "w") as out:
        def on_command(msg):
            out.write(" ".join([f"{time.time():.6f}"] + [repr(float(v)) for v in msg.cmd]) + "\n")
            out.flush()
        node.create_subscription(JointGroupCommand, topic, on_command, qos.COMMANDS)
        while not stop:
            rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
