"""Every dependency is declared where its users look for it: ROS packages (and Python
libraries that have a rosdep key) in package.xml for ``rosdep install``, pip libraries in
requirements.txt / setup.cfg; what the launch files include or run, too; the README says
which are optional. And the pytest pin that launch_testing needs."""
import ast
import configparser
import inspect
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from llada_vla_ros.launch_args import STORAGE_PLUGINS

ROOT = Path(__file__).resolve().parents[1]
OWN = "llada_vla_ros"
# import name -> pip distribution; -> rosdep key where rosdistro has one
PIP = {"numpy": "numpy", "yaml": "pyyaml", "PIL": "pillow", "tqdm": "tqdm",
       "matplotlib": "matplotlib", "torch": "torch", "transformers": "transformers",
       "safetensors": "safetensors", "tokenizers": "tokenizers", "rosbags": "rosbags",
       "accelerate": "accelerate", "peft": "peft", "mujoco": "mujoco",
       "gymnasium": "gymnasium", "imageio": "imageio"}
# imported on one optional path only, installed by hand (the README says how)
OPTIONAL_PIP = {"deepspeed": "deepspeed"}
ROSDEP_PYTHON = {"numpy": "python3-numpy", "yaml": "python3-yaml", "PIL": "python3-pil",
                 "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib"}
ROS2_VERBS = {"bag": "ros2bag", "launch": "ros2launch", "run": "ros2run", "topic": "ros2topic"}
# what a launch argument can leave out, hence optional for a user
OPTIONAL = {"realsense2_camera": "camera", "interbotix_xsarm_control": "arm",
            "ros2bag": "record", "rosbag2_storage_default_plugins": "bag_storage",
            "rosbag2_storage_mcap": "bag_storage"}


def run_dependencies() -> set:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text.strip() for tag in ("depend", "exec_depend") for e in root.iter(tag)}


def requirement_names(path=ROOT / "requirements.txt") -> dict:
    reqs = [Requirement(line.split("#")[0].strip()) for line in path.read_text().splitlines()
            if line.split("#")[0].strip()]
    return {r.name.lower(): r for r in reqs}


def third_party_imports(paths) -> dict:
    """Top-level module -> files importing it (also imports inside functions)."""
    found = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != OWN:
                    found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_every_import_of_the_package_and_its_launch_files_is_declared():
    sources = list((ROOT / OWN).rglob("*.py")) + list((ROOT / "launch").glob("*.py"))
    imports = third_party_imports(sources)
    assert {"rclpy", "torch", "PIL", "launch"} <= set(imports)  # the scan sees them
    declared, pip = run_dependencies(), requirement_names()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    install_requires = {Requirement(r).name.lower() for r in
                        cfg["options"]["install_requires"].split("\n") if r.strip()}
    for module, users in sorted(imports.items()):
        if module in OPTIONAL_PIP:
            continue  # test_readme_lists_every_dependency... checks it is documented
        if module in PIP:  # a Python library: pip always; rosdep where it has a key
            assert PIP[module] in pip, f"{module} ({sorted(users)}) not in requirements.txt"
            assert PIP[module] in install_requires, f"{module} not in setup.cfg install_requires"
            if module in ROSDEP_PYTHON:
                assert ROSDEP_PYTHON[module] in declared, f"{ROSDEP_PYTHON[module]} (package.xml)"
        else:  # a ROS package
            assert module in declared, f"ROS package {module} ({sorted(users)}) not in package.xml"


def launch_file_packages(path: Path) -> set:
    """Packages a launch file includes, runs or needs: FindPackageShare / share-directory
    look-ups, Node(package=...), `ros2 <verb>` commands, rosbag2 storage plugins."""
    tree = ast.parse(path.read_text())
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}
    out = {"ros2launch"}  # run with ros2 launch
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name in ("_share", "package_share", "get_package_share_directory",
                        "FindPackageShare") and isinstance(node.args[0], ast.Constant):
                out.add(node.args[0].value)
            for kw in node.keywords:
                if name == "Node" and kw.arg == "package":
                    out.add(consts.get(getattr(kw.value, "id", None), getattr(kw.value, "value", None)))
                if name == "DeclareLaunchArgument" and node.args[0].value == "bag_storage" \
                        and kw.arg == "choices":
                    out |= {STORAGE_PLUGINS[s.value][-1] for s in kw.value.elts}
        if isinstance(node, ast.List) and len(node.elts) > 1 and all(
                isinstance(e, ast.Constant) for e in node.elts[:2]) and node.elts[0].value == "ros2":
            out.add(ROS2_VERBS[node.elts[1].value])
    return out - {OWN}


@pytest.mark.parametrize("name", ["widowx.launch.py", "policy.launch.py", "replay.launch.py"])
def test_what_each_launch_file_includes_or_runs_is_declared(name):
    needed = launch_file_packages(ROOT / "launch" / name)
    assert "ros2launch" in needed
    missing = needed - run_dependencies()
    assert not missing, f"{name} needs {sorted(missing)}, not declared in package.xml"


def test_widowx_launch_needs_the_drivers_and_rosbag2():
    needed = launch_file_packages(ROOT / "launch" / "widowx.launch.py")
    assert {"realsense2_camera", "interbotix_xsarm_control", "ros2bag",
            "rosbag2_storage_default_plugins", "rosbag2_storage_mcap"} <= needed


def test_readme_lists_every_dependency_and_marks_the_optional_ones():
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Dependencies\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, "README.md has no '## Dependencies' section"
    rows = [line for line in section.group(1).splitlines() if line.startswith("|")]
    for dep in run_dependencies():
        row = next((r for r in rows if f"`{dep}`" in r), None)
        assert row, f"{dep} (package.xml) is not in the README's Dependencies table"
        if dep in OPTIONAL:
            assert "optional" in row and f"{OPTIONAL[dep]}:=" in row, row
    for name in PIP.values():
        assert any(f"`{name}`" in r for r in rows), f"pip {name} missing from the README"
    for name in OPTIONAL_PIP.values():
        assert any(f"`{name}`" in r and "optional" in r for r in rows), name


def test_pytest_is_one_that_loads_launch_testing():
    """launch_testing's plugin (Humble, Jazzy, Rolling) implements
    pytest_pycollect_makemodule(path, parent); pytest 9 removed the hook's `path` argument,
    so its plugin fails to register (PluginValidationError) and every test file errors."""
    from _pytest import hookspec

    spec = requirement_names()["pytest"].specifier
    assert not spec.contains("9.0.0") and spec.contains("8.3.5") and spec.contains("7.4.4")
    assert spec.contains(pytest.__version__), (
        f"pytest {pytest.__version__} is outside requirements.txt ({spec}): run scripts/setup.sh")
    assert "path" in inspect.signature(hookspec.pytest_pycollect_makemodule).parameters
