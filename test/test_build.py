"""What `colcon build` installs, and the set-up script's clear errors."""
import os
import stat
import subprocess
from pathlib import Path

import pytest

from ros_harness import require_ros

ROOT = Path(__file__).resolve().parents[1]


def prefix() -> Path:
    require_ros()
    from ament_index_python.packages import get_package_prefix
    return Path(get_package_prefix("llada_vla_ros"))


def test_install_space_has_messages_nodes_launch_and_config():
    p = prefix()
    site = next(p.glob("lib/python3*/site-packages/llada_vla_ros"))
    assert (site / "msg" / "_action_chunk.py").is_file()
    assert list(site.glob("llada_vla_ros_s__rosidl_typesupport_c*.so"))
    assert list(p.glob("lib/libllada_vla_ros__rosidl_typesupport_c.so"))
    assert (site / "policy.py").is_file() and (site / "ros" / "policy_node.py").is_file()
    for name in ("policy_node", "sim_camera", "sim_widowx", "llada-vla-eval", "llada-vla-train"):
        exe = p / "lib" / "llada_vla_ros" / name
        assert exe.is_file() and exe.stat().st_mode & stat.S_IXUSR, name
    share = p / "share" / "llada_vla_ros"
    for rel in ("launch/widowx.launch.py", "launch/policy.launch.py", "launch/replay.launch.py",
                "config/policy.yaml", "config/fastdds.xml", "msg/ActionChunk.msg"):
        assert (share / rel).is_file(), rel


def test_build_log_shows_generated_type_support():
    log = (ROOT / ".ws" / "colcon-build.log")
    if not log.is_file():
        pytest.skip("no colcon build log in this checkout")
    text = log.read_text(errors="replace")
    assert "llada_vla_ros/msg/_action_chunk.py" in text
    assert "rosidl_typesupport_c" in text and "action_chunk__type_support" in text


def fake_tool_dir(tmp_path, names):
    """A PATH with only the given tools (symlinks to the real ones) plus coreutils."""
    d = tmp_path / "bin"
    d.mkdir()
    for name in names + ["dirname", "cat", "sha256sum", "cut", "grep", "sed", "ln", "mkdir",
                         "rm", "tail", "env"]:
        real = subprocess.run(["bash", "-c", f"command -v {name}"], capture_output=True,
                              text=True).stdout.strip()
        if real:
            os.symlink(real, d / name)
    return d


def run_setup(tmp_path, path_dir, **env):
    e = {"PATH": str(path_dir), "HOME": str(tmp_path)}
    e.update(env)
    return subprocess.run(["/bin/bash", str(ROOT / "scripts" / "setup.sh")], env=e,
                          capture_output=True, text=True, timeout=60)


def test_setup_without_cmake_says_so(tmp_path):
    d = fake_tool_dir(tmp_path, ["python3", "make", "g++"])
    r = run_setup(tmp_path, d)
    assert r.returncode == 1
    assert "'cmake' not found" in r.stderr and "Traceback" not in r.stderr


def test_setup_without_compiler_says_so(tmp_path):
    d = fake_tool_dir(tmp_path, ["python3", "make", "cmake"])
    r = run_setup(tmp_path, d)
    assert r.returncode == 1
    assert "no C++ compiler" in r.stderr


def test_setup_on_unsupported_python_says_so(tmp_path):
    d = fake_tool_dir(tmp_path, ["make", "cmake", "g++"])
    fake = d / "python3"
    fake.write_text("#!/bin/bash\necho 3.9\n")
    fake.chmod(0o755)
    r = run_setup(tmp_path, d)
    assert r.returncode == 1
    assert "Python 3.9 is not supported" in r.stderr and "3.11" in r.stderr
