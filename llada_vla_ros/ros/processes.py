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
