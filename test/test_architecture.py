"""The layout promises: no rclpy in the core library, no import cycles, one parameter
contract, one version."""
import ast
import configparser
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "llada_vla_ros"


def module_name(path: Path) -> str:
    parts = path.with_suffix("").relative_to(ROOT).parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path):
    """Absolute names of every module ``path`` imports, at the top or inside a function
    (relative imports resolved; ``from pkg import mod`` gives ``pkg.mod`` when that is a
    module of this package)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                up = parts[:len(parts) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                where = PKG.parent.joinpath(*sub.split("."))
                known = where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()
                yield sub if known else base


def test_core_library_never_imports_ros():
    core = [p for p in PKG.rglob("*.py") if "ros" not in p.relative_to(PKG).parts]
    assert len(core) >= 5
    for path in core:
        bad = [m for m in imported_modules(path)
               if m.split(".")[0] in {"rclpy", "sensor_msgs", "std_msgs", "interbotix_xs_msgs"}
               or m.startswith("llada_vla_ros.msg") or m.startswith("llada_vla_ros.ros")]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def import_cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, cycles = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                cycles.append(sorted(component))
    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles_even_through_imports_inside_functions():
    """A lazy import inside a function still ties two modules together: a reader of one must
    read the other, and a refactor that hoists the import breaks at import time."""
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph = {m: {d for d in imported_modules(p) if d in modules and d != m}
             for m, p in modules.items()}
    assert graph["llada_vla_ros.policy"] >= {"llada_vla_ros.policy.llada",
                                             "llada_vla_ros.sim.expert"}  # the graph sees them
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles(graph) == []


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def node_parameters():
    """The policy node's parameter table (core library, no rclpy)."""
    from llada_vla_ros.control.parameters import DEFAULTS
    return DEFAULTS


def test_yaml_documents_exactly_the_node_parameters_with_the_same_defaults():
    doc = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    params = flatten(doc["/**"]["ros__parameters"])
    declared = node_parameters()
    assert params.keys() == declared.keys()
    for name, value in declared.items():
        assert params[name] == value, name


def test_one_version_and_entry_points_in_one_place():
    xml_version = ET.parse(ROOT / "package.xml").getroot().findtext("version")
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["version"] == xml_version
    assert re.search(r'__version__ = "([^"]+)"', (PKG / "__init__.py").read_text())[1] == xml_version
    scripts = [line.split("=")[0].strip()
               for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines()]
    assert {"policy_node", "managed_policy_node", "sim_world", "llada-vla-eval",
            "llada-vla-train", "sim_world", "llada-vla-sim-collect",
            "llada-vla-sim-eval"} <= set(scripts)


def test_yaml_marks_exactly_the_runtime_parameters():
    from llada_vla_ros.control.parameters import DYNAMIC
    marked, stack = set(), []
    for line in (ROOT / "config" / "policy.yaml").read_text().splitlines():
        m = re.match(r"^(\s{4,})([A-Za-z_]+):", line)
        if m:
            stack = stack[:(len(m[1]) - 4) // 2] + [m[2]]
            if "[runtime]" in line:
                marked.add(".".join(stack))
    assert marked == set(DYNAMIC)
