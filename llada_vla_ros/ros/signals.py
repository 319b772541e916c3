"""SIGINT/SIGTERM for the package's nodes, caught from the first line of the node module.

Importing this module installs handlers that only count the signals (stdlib only, so it can
be imported before rclpy, torch and the rest load). A Ctrl-C or a `ros2 launch` shutdown
during start-up is then not a KeyboardInterrupt traceback in the middle of an import: the
node starts, sees the count and shuts down cleanly. ``spin.run`` reads the count.
"""
import signal


class Signals:
    """Counts SIGINT/SIGTERM; the handler only increments a number (safe at any point)."""

    def __init__(self):
        self.count = 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.count += 1


SIGNALS = Signals()
