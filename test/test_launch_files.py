"""Static checks of launch/*.launch.py without ROS 2 launch (not installed here).

The files are parsed with ``ast``; their plain-Python parts (the OpaqueFunction setup) are
also run against small stand-ins of the launch API that accept only the keyword arguments
the real Humble/Jazzy classes accept.
"""
import ast
import importlib.util
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
import yaml

from llada_vla_ros import topics

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_DIR = ROOT / "launch"
LAUNCH_FILES = ["widowx.launch.py", "policy.launch.py", "replay.launch.py"]
STANDARD_NODE_PARAMETERS = {"use_sim_time"}

# Names that exist in launch / launch_ros on Humble AND Jazzy (nothing newer).
HUMBLE_API = {
    "launch": {"LaunchDescription", "LaunchContext"},
    "launch.actions": {"DeclareLaunchArgument", "ExecuteProcess", "IncludeLaunchDescription",
                       "OpaqueFunction", "Shutdown", "TimerAction", "GroupAction", "LogInfo",
                       "RegisterEventHandler", "SetEnvironmentVariable", "EmitEvent"},
    "launch.events": {"matches_action"},
    "launch.conditions": {"IfCondition", "UnlessCondition"},
    "launch.launch_description_sources": {"PythonLaunchDescriptionSource"},
    "launch.substitutions": {"LaunchConfiguration", "PathJoinSubstitution", "TextSubstitution",
                             "PythonExpression"},
    "launch_ros.actions": {"Node", "PushRosNamespace", "LifecycleNode"},
    "launch_ros.event_handlers": {"OnStateTransition"},
    "launch_ros.events.lifecycle": {"ChangeState"},
    "launch_ros.parameter_descriptions": {"ParameterValue", "ParameterFile"},
    "launch_ros.substitutions": {"FindPackageShare"},
}


def parse(name):
    return ast.parse((LAUNCH_DIR / name).read_text(), filename=name)


def module_constants(tree):
    return {t.id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for t in node.targets if isinstance(t, ast.Name)}


def declared_arguments(tree):
    """name -> (default or None, description) of every DeclareLaunchArgument."""
    consts = module_constants(tree)
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            kw = {k.arg: k.value for k in node.keywords}
            default = kw.get("default_value")
            if isinstance(default, ast.Name):
                default = consts[default.id]
            elif isinstance(default, ast.Attribute) and default.value.id == "topics":
                default = getattr(topics, default.attr)  # e.g. default_value=topics.IMAGE
            elif default is not None:
                default = ast.literal_eval(default)
            desc = kw.get("description")
            out[ast.literal_eval(node.args[0])] = (
                default, ast.literal_eval(desc) if desc is not None else None)
    return out


def flat_policy_parameters():
    doc = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    params = doc["/**"]["ros__parameters"]

    def flatten(d, prefix=""):
        for key, value in d.items():
            if isinstance(value, dict):
                yield from flatten(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value
    return dict(flatten(params))


# --- static checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_every_argument_has_a_description(name):
    args = declared_arguments(parse(name))
    assert args, f"{name} declares no arguments"
    missing = [a for a, (_, desc) in args.items() if not (desc and desc.strip())]
    assert not missing, f"{name}: arguments without description: {missing}"


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_only_humble_and_jazzy_launch_api(name):
    for node in ast.walk(parse(name)):
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in ("launch",
                                                                              "launch_ros"):
            unknown = {a.name for a in node.names} - HUMBLE_API.get(node.module, set())
            assert not unknown, f"{name}: {node.module} {unknown} not in the Humble/Jazzy list"


def launch_argument_table():
    """{file: {argument: default cell}} from README.md's '## Launch arguments' section."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Launch arguments\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "README.md has no '## Launch arguments' section"
    table, current = {}, None
    for line in match.group(1).splitlines():
        heading = re.match(r"^### `([\w.]+)`", line)
        if heading:
            current = table.setdefault(heading.group(1), {})
            continue
        row = re.match(r"^\|\s*`([\w.]+)`\s*\|\s*([^|]*?)\s*\|", line)
        if row and current is not None:
            current[row.group(1)] = row.group(2)
    return table


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_arguments_match_the_readme_table(name):
    table = launch_argument_table()
    assert name in table, f"no '### `{name}`' table under '## Launch arguments'"
    args = declared_arguments(parse(name))
    assert set(args) == set(table[name]), (
        f"{name}: undocumented {sorted(set(args) - set(table[name]))}, "
        f"documented but not declared {sorted(set(table[name]) - set(args))}")
    for arg, (default, _) in args.items():
        expected = "required" if default is None else f"`{default}`" if default else '`""`'
        assert table[name][arg] == expected, f"{name} {arg}: README default out of date"


def test_policy_node_parameters_exist_in_config():
    known = set(flat_policy_parameters()) | STANDARD_NODE_PARAMETERS
    tree = parse("policy.launch.py")
    consts = {t.id: ast.literal_eval(node.value) for node in tree.body
              if isinstance(node, ast.Assign) for t in node.targets
              if isinstance(t, ast.Name) and t.id.endswith("_PARAMETERS")}
    names = {p for mapping in consts.values() for p in mapping.values()}
    assert "decoding.strategy" in names and "execute" in names
    for launch in LAUNCH_FILES:  # literal parameter dicts given to policy_node anywhere
        for node in ast.walk(parse(launch)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Node":
                kw = {k.arg: k.value for k in node.keywords}
                if ast.literal_eval(kw["executable"]) == "policy_node":
                    for d in ast.walk(kw.get("parameters", ast.List(elts=[]))):
                        if isinstance(d, ast.Dict):
                            names |= {ast.literal_eval(k) for k in d.keys}
    assert not names - known, f"not in config/policy.yaml: {sorted(names - known)}"


def test_topic_literals_agree_with_topics_py():
    published = {v for k, v in vars(topics).items() if k.isupper() and isinstance(v, str)}
    for name in LAUNCH_FILES:
        tree = parse(name)
        for const, value in module_constants(tree).items():
            if hasattr(topics, const):
                assert value == getattr(topics, const), f"{name}: {const} != topics.{const}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value.startswith("/llada_vla") or node.value == "/diagnostics"):
                assert node.value in published, f"{name}: unknown topic {node.value}"
    args = declared_arguments(parse("widowx.launch.py"))
    assert topics.camera_image_topic(args["camera_namespace"][0], args["camera_name"][0]) \
        == topics.IMAGE
    assert args["robot_name"][0] == topics.ROBOT_NAME


def test_config_defaults_agree_with_topics_py():
    params = flat_policy_parameters()
    assert params["image_topic"] == topics.IMAGE
    assert params["instruction_topic"] == topics.INSTRUCTION
    assert params["estop_topic"] == topics.ESTOP
    assert params["robot_name"] == topics.ROBOT_NAME


# --- running the setup functions against stand-ins of the launch API ----------------------------

class Stub:
    """Records its arguments; subclasses list the keywords the real class accepts."""
    KEYWORDS = set()

    def __init__(self, *args, **kwargs):
        unknown = set(kwargs) - self.KEYWORDS
        assert not unknown, f"{type(self).__name__} has no keyword(s) {unknown}"
        self.args, self.kwargs = args, kwargs


def stub(name, keywords=(), base=Stub):
    return type(name, (base,), {"KEYWORDS": set(keywords)})


class ExecuteProcess(Stub):
    KEYWORDS = {"cmd", "name", "output", "on_exit", "cwd", "env", "shell"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # launch's OnActionEventBase keeps a non-empty list or a callable; an empty list
        # leaves it without a handler, and ros2 launch crashes when the process exits:
        # 'OnProcessExit' object has no attribute '_OnActionEventBase__on_event'
        assert kwargs.get("on_exit") != [], "on_exit=[] crashes ros2 launch; pass None"


def fake_ament_prefix(monkeypatch, tmp_path, *packages):
    """An ament index in which exactly ``packages`` are installed (as colcon/apt install)."""
    prefix = tmp_path / "ament_prefix"
    shutil.rmtree(prefix, ignore_errors=True)
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    for package in packages:
        (index / package).write_text("")
        (prefix / "share" / package).mkdir(exist_ok=True)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    return prefix


ROSBAG2 = ("ros2bag", "rosbag2_storage_default_plugins", "rosbag2_storage_mcap")


class LaunchConfiguration(Stub):
    KEYWORDS = {"default"}

    def perform(self, context):
        return context.launch_configurations[self.args[0]]


def install_stubs(monkeypatch):
    modules = {
        "launch": {"LaunchDescription": stub("LaunchDescription")},
        "launch.actions": {
            "DeclareLaunchArgument": stub("DeclareLaunchArgument",
                                          {"default_value", "description", "choices"}),
            "ExecuteProcess": ExecuteProcess,
            "IncludeLaunchDescription": stub("IncludeLaunchDescription",
                                             {"launch_arguments", "condition"}),
            "OpaqueFunction": stub("OpaqueFunction", {"function", "args", "kwargs"}),
            "Shutdown": stub("Shutdown", {"reason"}),
            "TimerAction": stub("TimerAction", {"period", "actions"}),
        },
        "launch.launch_description_sources": {
            "PythonLaunchDescriptionSource": stub("PythonLaunchDescriptionSource")},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": stub("Node", {
            "package", "executable", "name", "namespace", "parameters", "remappings",
            "arguments", "output", "emulate_tty", "condition"})},
        "launch_ros.parameter_descriptions": {"ParameterValue": stub("ParameterValue",
                                                                     {"value_type"})},
    }
    modules["launch.actions"].update(
        EmitEvent=stub("EmitEvent", {"event"}),
        RegisterEventHandler=stub("RegisterEventHandler", {"event_handler"}))
    modules["launch.events"] = {"matches_action": lambda action: ("matches", action)}
    modules["launch_ros.actions"]["LifecycleNode"] = stub("LifecycleNode", {
        "package", "executable", "name", "namespace", "parameters", "remappings",
        "arguments", "output", "emulate_tty", "condition"})
    modules["launch_ros.event_handlers"] = {"OnStateTransition": stub("OnStateTransition", {
        "target_lifecycle_node", "start_state", "goal_state", "entities"})}
    modules["launch_ros.events"] = {}
    modules["launch_ros.events.lifecycle"] = {"ChangeState": stub("ChangeState", {
        "lifecycle_node_matcher", "transition_id"})}
    for name, attrs in modules.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))


def load(name, monkeypatch):
    install_stubs(monkeypatch)
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH_DIR / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_setup(name, monkeypatch, **overrides):
    """Actions returned by the file's OpaqueFunction for defaults + ``overrides``."""
    module = load(name, monkeypatch)
    description = module.generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    config = {arg: e.kwargs.get("default_value") for arg, e in declared.items()}
    unknown = set(overrides) - set(config)
    assert not unknown, f"{name} declares no {unknown}"
    config.update(overrides)
    for arg, e in declared.items():
        choices = e.kwargs.get("choices")
        assert not choices or config[arg] in choices, f"{name}: {arg}={config[arg]!r}"
    opaque = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    context = types.SimpleNamespace(launch_configurations=config)
    return opaque[0].kwargs["function"](context)


def of_type(actions, name):
    return [a for a in actions if type(a).__name__ == name]


def policy_node_from_include(include, monkeypatch):
    """The policy include's source must be policy.launch.py; run it with the passed args."""
    path = include.args[0].args[0]
    assert Path(path).name == "policy.launch.py" and Path(path).is_file()
    [node] = run_setup("policy.launch.py", monkeypatch, **dict(include.kwargs["launch_arguments"]))
    return node


def parameter_overrides(node):
    params_file, overrides = node.kwargs["parameters"]
    assert Path(params_file).is_file()
    return {k: v.args[0] if type(v).__name__ == "ParameterValue" else v
            for k, v in overrides.items()}


def test_widowx_sim_with_recorder(monkeypatch, tmp_path):
    fake_ament_prefix(monkeypatch, tmp_path, *ROSBAG2)
    actions = run_setup("widowx.launch.py", monkeypatch, sim="true", record="true",
                        bag_dir=str(tmp_path), bag_storage="mcap",
                        instruction="pick up the cup", camera_namespace="cam", camera_name="d435")
    nodes = {n.kwargs["executable"]: n for n in of_type(actions, "Node")}
    assert nodes["sim_world"].kwargs["parameters"] == [{
        "robot_name": "wx250s", "image_topic": "/cam/d435/color/image_raw", "task": "carrot",
        "seed": 0}]
    [include] = of_type(actions, "IncludeLaunchDescription")  # no camera or arm driver
    params = parameter_overrides(policy_node_from_include(include, monkeypatch))
    assert params == {"image_topic": "/cam/d435/color/image_raw", "robot_name": "wx250s",
                      "instruction": "pick up the cup",
                      "instruction_topic": topics.INSTRUCTION, "execute": False,
                      "image_transport": "raw"}
    [record] = of_type(actions, "ExecuteProcess")
    cmd = record.kwargs["cmd"]
    assert cmd[:3] == ["ros2", "bag", "record"] and cmd[5:7] == ["-s", "mcap"]
    [shutdown] = record.kwargs["on_exit"]  # no trial goes on unrecorded
    assert type(shutdown).__name__ == "Shutdown"
    assert Path(cmd[4]).parent == tmp_path and Path(cmd[4]).name.startswith("llada_vla_")
    expected = topics.recorded_topics(image_topic="/cam/d435/color/image_raw")
    assert sorted(cmd[7:]) == sorted(expected)


def test_widowx_records_demonstrations_without_the_policy(monkeypatch, tmp_path):
    fake_ament_prefix(monkeypatch, tmp_path, *ROSBAG2)
    actions = run_setup("widowx.launch.py", monkeypatch, sim="true", record="true",
                        policy="false", bag_dir=str(tmp_path), task="stack", seed="7")
    assert not of_type(actions, "IncludeLaunchDescription")  # no policy node
    [world] = of_type(actions, "Node")
    assert world.kwargs["executable"] == "sim_world"
    assert world.kwargs["parameters"][0]["task"] == "stack"
    assert world.kwargs["parameters"][0]["seed"] == 7
    [record] = of_type(actions, "ExecuteProcess")
    assert sorted(record.kwargs["cmd"][7:]) == sorted(topics.recorded_topics())


def test_widowx_sim_gives_the_policy_the_tasks_instruction(monkeypatch):
    actions = run_setup("widowx.launch.py", monkeypatch, sim="true", task="eggplant")
    [include] = of_type(actions, "IncludeLaunchDescription")
    params = parameter_overrides(policy_node_from_include(include, monkeypatch))
    assert params["instruction"] == "put eggplant into yellow basket"
    with pytest.raises(ValueError, match="unknown task"):
        run_setup("widowx.launch.py", monkeypatch, sim="true", task="banana")


def test_widowx_drivers_need_their_packages(monkeypatch):
    with pytest.raises(RuntimeError, match="realsense2_camera is not installed"):
        run_setup("widowx.launch.py", monkeypatch)
    actions = run_setup("widowx.launch.py", monkeypatch, camera="false", arm="false",
                        execute="true", model_path="/ckpt", device="cuda")
    [include] = of_type(actions, "IncludeLaunchDescription")
    params = parameter_overrides(policy_node_from_include(include, monkeypatch))
    assert params["execute"] is True and params["model_path"] == "/ckpt"
    assert params["device"] == "cuda" and params["image_topic"] == topics.IMAGE
    assert not of_type(actions, "ExecuteProcess")


def test_policy_launch_empty_arguments_keep_the_params_file(monkeypatch):
    [node] = run_setup("policy.launch.py", monkeypatch, namespace="left")
    assert node.kwargs["executable"] == "policy_node" and node.kwargs["namespace"] == "left"
    assert parameter_overrides(node) == {}
    with pytest.raises(ValueError, match="true or false"):
        run_setup("policy.launch.py", monkeypatch, execute="maybe")


def write_metadata(bag, storage="sqlite3"):
    bag.mkdir()
    (bag / "metadata.yaml").write_text(yaml.safe_dump(
        {"rosbag2_bagfile_information": {"version": 8, "storage_identifier": storage}}))


def test_replay_plays_inputs_and_records_outputs(monkeypatch, tmp_path):
    fake_ament_prefix(monkeypatch, tmp_path, *ROSBAG2)
    bag = tmp_path / "demo"
    write_metadata(bag)
    actions = run_setup("replay.launch.py", monkeypatch, bag=str(bag), rate="2.0")
    [include] = of_type(actions, "IncludeLaunchDescription")
    params = parameter_overrides(policy_node_from_include(include, monkeypatch))
    assert params["execute"] is False and params["use_sim_time"] is True
    [record] = of_type(actions, "ExecuteProcess")
    assert record.kwargs["cmd"][7:] == list(topics.OUTPUT_TOPICS)
    assert Path(record.kwargs["cmd"][4]).name.startswith("demo_replay_")
    [timer] = of_type(actions, "TimerAction")
    [play] = timer.kwargs["actions"]
    cmd = play.kwargs["cmd"]
    assert cmd[:4] == ["ros2", "bag", "play", str(bag)] and "--clock" in cmd
    assert cmd[cmd.index("--rate") + 1] == "2.0"
    assert cmd[cmd.index("--topics") + 1:] == [topics.IMAGE, topics.INSTRUCTION,
                                               "/wx250s/joint_states"]
    [timer] = play.kwargs["on_exit"]
    assert type(timer.kwargs["actions"][0]).__name__ == "Shutdown"
    with pytest.raises(RuntimeError, match="bag not found"):
        run_setup("replay.launch.py", monkeypatch, bag=str(tmp_path / "missing"))


def test_replay_without_shutdown_when_done(monkeypatch, tmp_path):
    """on_exit=[] crashed ros2 launch when ros2 bag play exited; None is no handler."""
    fake_ament_prefix(monkeypatch, tmp_path, *ROSBAG2)
    bag = tmp_path / "demo"
    write_metadata(bag)
    actions = run_setup("replay.launch.py", monkeypatch, bag=str(bag),
                        shutdown_when_done="false")
    [timer] = of_type(actions, "TimerAction")
    [play] = timer.kwargs["actions"]
    assert play.kwargs["on_exit"] is None


@pytest.mark.parametrize("installed, storage, missing", [
    ((), "sqlite3", "ros2bag and rosbag2_storage_sqlite3 are not installed"),
    (("ros2bag", "rosbag2_storage_default_plugins"), "mcap",
     "rosbag2_storage_mcap is not installed"),
    (("ros2bag", "rosbag2_storage_mcap"), "sqlite3", "rosbag2_storage_sqlite3 is not"),
])
def test_recording_refused_at_launch_without_rosbag2(monkeypatch, tmp_path, installed,
                                                     storage, missing):
    """Instead of `ros2: error: invalid choice: 'bag'` while the robot runs unrecorded."""
    fake_ament_prefix(monkeypatch, tmp_path, *installed)
    with pytest.raises(RuntimeError, match=f"record:=true needs rosbag2 .*{missing}.* "
                                           "sudo apt install ros-.*record:=false"):
        run_setup("widowx.launch.py", monkeypatch, sim="true", record="true",
                  bag_storage=storage, bag_dir=str(tmp_path / "bags"))
    assert not (tmp_path / "bags").exists()
    actions = run_setup("widowx.launch.py", monkeypatch, sim="true", bag_storage=storage)
    assert not of_type(actions, "ExecuteProcess")  # record:=false needs no rosbag2


def test_replay_refused_without_rosbag2_or_metadata(monkeypatch, tmp_path):
    bag = tmp_path / "demo"
    write_metadata(bag, storage="mcap")
    fake_ament_prefix(monkeypatch, tmp_path, "ros2bag", "rosbag2_storage_default_plugins")
    with pytest.raises(RuntimeError, match=r"replay.launch.py \(ros2 bag play\) needs rosbag2 "
                                           "with its mcap storage plugin"):
        run_setup("replay.launch.py", monkeypatch, bag=str(bag))
    fake_ament_prefix(monkeypatch, tmp_path, "ros2bag", "rosbag2_storage_mcap")
    with pytest.raises(RuntimeError, match="record:=true needs rosbag2 with its sqlite3"):
        run_setup("replay.launch.py", monkeypatch, bag=str(bag))  # the output bag
    assert run_setup("replay.launch.py", monkeypatch, bag=str(bag), record="false")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    with pytest.raises(RuntimeError, match=f"no metadata.yaml .*ros2 bag reindex {crashed}"):
        run_setup("replay.launch.py", monkeypatch, bag=str(crashed))


def test_policy_managed_with_and_without_autostart(monkeypatch):
    from lifecycle_msgs.msg import Transition
    actions = run_setup("policy.launch.py", monkeypatch, managed="true", namespace="left")
    [node] = of_type(actions, "LifecycleNode")
    assert node.kwargs["executable"] == "managed_policy_node"
    assert node.kwargs["name"] == "llada_vla_policy" and node.kwargs["namespace"] == "left"
    [configure] = of_type(actions, "EmitEvent")
    assert configure.kwargs["event"].kwargs["transition_id"] == Transition.TRANSITION_CONFIGURE
    assert configure.kwargs["event"].kwargs["lifecycle_node_matcher"] == ("matches", node)
    [handler] = of_type(actions, "RegisterEventHandler")
    on = handler.args[0].kwargs
    # activate once configured, and only then (not after a later deactivate)
    assert (on["target_lifecycle_node"], on["start_state"], on["goal_state"]) == \
        (node, "configuring", "inactive")
    [activate] = on["entities"]
    assert activate.kwargs["event"].kwargs["transition_id"] == Transition.TRANSITION_ACTIVATE
    actions = run_setup("policy.launch.py", monkeypatch, managed="true", autostart="false")
    assert [type(a).__name__ for a in actions] == ["LifecycleNode"]  # a manager's job
    [plain] = run_setup("policy.launch.py", monkeypatch)
    assert type(plain).__name__ == "Node" and plain.kwargs["executable"] == "policy_node"


def test_compressed_image_transport_reaches_node_recorder_simulator_and_replay(monkeypatch,
                                                                             tmp_path):
    fake_ament_prefix(monkeypatch, tmp_path, *ROSBAG2)
    actions = run_setup("widowx.launch.py", monkeypatch, sim="true", record="true",
                        image_transport="compressed", bag_dir=str(tmp_path), managed="true")
    [world] = of_type(actions, "Node")
    assert world.kwargs["parameters"][0]["jpeg_quality"] > 0
    [include] = of_type(actions, "IncludeLaunchDescription")
    launched = run_setup("policy.launch.py", monkeypatch,
                         **dict(include.kwargs["launch_arguments"]))
    [node] = of_type(launched, "LifecycleNode")  # managed passes through
    assert parameter_overrides(node)["image_transport"] == "compressed"
    [record] = of_type(actions, "ExecuteProcess")
    assert topics.IMAGE + "/compressed" in record.kwargs["cmd"]
    assert topics.IMAGE not in record.kwargs["cmd"]
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n  storage_identifier: sqlite3\n")
    actions = run_setup("replay.launch.py", monkeypatch, bag=str(bag),
                        image_transport="compressed")
    [timer] = of_type(actions, "TimerAction")
    [play] = timer.kwargs["actions"]
    assert topics.IMAGE + "/compressed" in play.kwargs["cmd"]
