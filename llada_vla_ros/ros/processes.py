"""Command lines for the package's nodes (the demo and the tests start them as processes)."""
from __future__ import annotations

from pathlib import Path


def executable(name: str) -> str:
    """lib/llada_vla_ros/<name> of the install space (what `ros2 run` starts)."""
    from ament_index_python.packages import get_package_prefix
    return str(Path(get_package_prefix("llada_vla_ros")) / "lib" / "llada_vla_ros" / name)


def param_value(value) -> str:
    """A value as `-p name:=value` needs it (YAML): empty strings and strings with ':' quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(param_value(v) for v in value) + "]"
    if isinstance(value, str):
        return f"'{value}'" if value == "" or ":" in value else value
    return repr(value)


def node_command(name: str, params: dict | None = None, args: list | None = None,
                 namespace: str = "") -> list:
    cmd = [executable(name)] + list(args or []) + ["--ros-args"]
    if namespace:
        cmd += ["-r", f"__ns:=/{namespace.strip('/')}"]
    for k, v in (params or {}).items():
        cmd += ["-p", f"{k}:={param_value(v)}"]
    return cmd


def start_node(name: str, params: dict, env: dict, log):
    """A package node as a process of its own (new session), output to the file ``log``."""
    import subprocess

    return subprocess.Popen(node_command(name, params), env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_node(proc, timeout: float = 15.0) -> int:
    """SIGINT (like Ctrl-C), then SIGKILL after ``timeout``; returns the exit status."""
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def isolated_ros_env(domain_id: int | None = None) -> dict:
    """This environment on a ROS domain of its own (random 120..200 unless given), discovery
    kept on this host: the simulators never talk to a real robot."""
    import os
    import random

    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(random.randint(120, 200) if domain_id is None else domain_id))
    # several busy processes on few cores: spinning OpenMP threads slow torch down many times
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env
