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
    assert (site / "action" / "_execute_instruction.py").is_file()
    assert list(site.glob("llada_vla_ros_s__rosidl_typesupport_c*.so"))
    assert list(p.glob("lib/libllada_vla_ros__rosidl_typesupport_c.so"))
    for module in ("policy/__init__.py", "policy/llada.py", "ros/policy_node.py",
                   "model/modeling.py", "sim/world.py"):  # subpackages are installed too
        assert (site / module).is_file(), module
    for name in ("policy_node", "managed_policy_node", "sim_world", "llada-vla-eval",
                 "llada-vla-train", "llada-vla-sim-collect", "llada-vla-sim-eval"):
        exe = p / "lib" / "llada_vla_ros" / name
        assert exe.is_file() and exe.stat().st_mode & stat.S_IXUSR, name
    share = p / "share" / "llada_vla_ros"
    for rel in ("launch/widowx.launch.py", "launch/policy.launch.py", "launch/replay.launch.py",
                "config/policy.yaml", "config/fastdds.xml", "config/fastdds_lan.xml",
                "config/fastdds_lossy.xml", "msg/ActionChunk.msg",
                "action/ExecuteInstruction.action"):
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


def test_pip_install_without_ros_ships_the_message_definition(tmp_path):
    """`pip install .` (a training machine, no ROS): the library imports from the installed
    copy and writes ActionChunk messages to a bag, from the packaged .msg definition."""
    import shutil
    import sys

    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for name in ("msg", "llada_vla_ros"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                          str(src)], check=True, cwd=tmp_path, timeout=300)
    wheel = next(tmp_path.glob("llada_vla_ros-*.whl"))
    subprocess.run(pip + ["install", "--no-deps", "--ignore-installed", "--prefix",
                          str(tmp_path / "prefix"), str(wheel)],
                   check=True, cwd=tmp_path, timeout=300)
    site = next((tmp_path / "prefix").glob("lib/python3*/site-packages"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH")}
    env["PYTHONPATH"] = str(site)
    script = (
        "import numpy as np, llada_vla_ros.bag as b\n"
        "print(b.__file__); print(b.find_msg_file())\n"
        "with b.BagWriter('bag') as w:\n"
        "    w.add_topic('/c', 'llada_vla_ros/msg/ActionChunk')\n"
        "    w.write_message('/c', 1, {'horizon': 5, 'action_dim': 7,"
        " 'actions': np.zeros(35, np.float32)})\n"
        "print(next(b.read_bag('bag'))[3].horizon)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, timeout=120,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    module, msg_file, horizon = out.stdout.split()
    assert module.startswith(str(site))
    assert msg_file == str(tmp_path / "prefix" / "share" / "llada_vla_ros" / "msg"
                           / "ActionChunk.msg")
    assert horizon == "5"
