"""Real ROS 2 between processes for tests: package nodes as subprocesses, a test node in
this process, each graph on a ROS domain of its own, shared-memory-only DDS.

Needs the colcon install space (scripts/env.sh), which alone has the generated messages.
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# The policy node's startup hold in tests that wait for motion: 2 s (default 5 s). The tests'
# Fast DDS profile discovers within 1.3 s; the tests about start-up pass the default
# (test_node_hardening's latched estop) or a longer hold.
FAST_START = {"startup_hold": 2.0}
_domains = itertools.count((os.getpid() * 7) % 200)


def ros_available() -> str:
    """'' when the install space is importable, else why not."""
    try:
        import rclpy  # noqa: F401
        import llada_vla_ros.msg  # noqa: F401
        import interbotix_xs_msgs.msg  # noqa: F401
    except ImportError as err:
        return f"ROS install space not importable ({err}); run `make test` or source scripts/env.sh"
    return ""


def require_ros():
    """Skip (or fail under `make test`, which must never skip these) without ROS."""
    reason = ros_available()
    if reason:
        if os.environ.get("LLADA_VLA_REQUIRE_ROS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


_claimed = []  # lock files held for this process's life


def new_domain_id() -> int:
    """A ROS domain for one test graph, not used by any other test process on this machine
    (two suites running at once must not hear each other): claimed with an exclusive lock
    on /tmp/llada_vla_ros_domain_<id>.lock, released when this process exits."""
    import fcntl
    for _ in range(200):
        domain = 1 + next(_domains) % 200
        f = open(f"/tmp/llada_vla_ros_domain_{domain}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _claimed.append(f)
        return domain
    raise RuntimeError("no free ROS domain id: 200 are held by other test processes")


def ros_env(domain_id: int, profile: str | None = None, subnet: bool | None = None) -> dict:
    """This process's environment (conftest.py set offline + one torch thread) on a domain:
    shared-memory DDS on this host by default; with a Fast DDS ``profile`` (e.g. a UDP one
    of config/) discovery reaches the subnet (unless ``subnet`` is False), for tests across
    network namespaces."""
    env = dict(os.environ)
    subnet = bool(profile) if subnet is None else subnet
    env.update(ROS_DOMAIN_ID=str(domain_id),
               ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET" if subnet else "LOCALHOST",
               FASTDDS_DEFAULT_PROFILES_FILE=str(profile or HERE / "fastdds_test.xml"),
               PYTHONUNBUFFERED="1")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def default_discovery_profile(directory: Path) -> Path:
    """The tests' Fast DDS profile with Fast DDS's default discovery timing (5 initial
    announcements 0.1 s apart, then one every 3 s), as a participant started without this
    package's profiles has it: written to ``directory``."""
    import xml.etree.ElementTree as ET
    ns = "http://www.eprosima.com"
    ET.register_namespace("", ns)
    tree = ET.parse(HERE / "fastdds_test.xml")
    for rtps in tree.iter(f"{{{ns}}}rtps"):
        for builtin in rtps.findall(f"{{{ns}}}builtin"):
            rtps.remove(builtin)
    path = Path(directory) / "fastdds_default_discovery.xml"
    tree.write(path, xml_declaration=True, encoding="UTF-8")
    return path


class NodeProcess:
    """A package node in its own process; its output goes to a log file."""

    def __init__(self, name: str, domain_id: int, log_dir: Path, params: dict | None = None,
                 args: list | None = None, netns: str | None = None, profile: str | None = None,
                 command: list | None = None, namespace: str = "", subnet: bool | None = None):
        """``name`` is a package node (or give the whole ``command``), in ROS ``namespace``;
        ``netns`` runs it in that network namespace (another "host"), ``profile`` is its
        Fast DDS profile (discovery range: see ``ros_env``)."""
        self.name, self.log = name, Path(log_dir) / f"{name}-{time.monotonic_ns()}.log"
        from llada_vla_ros.ros.processes import node_command
        cmd = command or node_command(name, params, args, namespace)
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        self._out = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, env=ros_env(domain_id, profile, subnet), stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def stop(self, sig=signal.SIGINT, timeout: float = 10.0) -> int:
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


def wait_for(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")


class RosProbe:
    """An rclpy node in this process, spun in a background thread on its own context."""

    def __init__(self, domain_id: int, name: str = "test_observer"):
        from llada_vla_ros.ros.background import BackgroundNode

        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(HERE / "fastdds_test.xml")
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self._background = BackgroundNode(name, domain_id)
        self.context, self.node = self._background.context, self._background.node
        self.lock = threading.Lock()
        self.received: dict[str, list] = {}

    def record(self, msg_type, topic: str, qos=10):
        """Subscribe and keep (monotonic receive time, msg) pairs under received[topic]."""
        self.received.setdefault(topic, [])

        def callback(msg, topic=topic):
            with self.lock:
                self.received[topic].append((time.monotonic(), msg))
        return self.node.create_subscription(msg_type, topic, callback, qos)

    def messages(self, topic: str, since: float = 0.0) -> list:
        with self.lock:
            return [m for t, m in self.received.get(topic, []) if t >= since]

    def times(self, topic: str, since: float = 0.0) -> list:
        with self.lock:
            return [t for t, _ in self.received.get(topic, []) if t >= since]

    def close(self):
        self._background.close()
