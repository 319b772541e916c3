"""Every command in the README is one that runs (issue: `ros2 topic pub -q` does not exist).

The commands of the README's bash blocks (and inline commands that are not templates) are
checked against what they call: this package's launch arguments, node parameters,
executables, services, topics and command-line parsers; the options of ros2cli's ``ros2
topic pub/echo``, ``ros2 service call``, ``ros2 run`` as both Humble and Jazzy define them
(copied from ros2/ros2cli's humble and jazzy branches, since ros2cli cannot be installed
here), rosdep's and colcon's options, and the repository's files. The package's own
command-line tools are run with ``--help`` and parse the README's arguments."""
import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llada_vla_ros import topics
from llada_vla_ros.launch_args import as_bool

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
OWN = "llada_vla_ros"

# Options that ros2cli defines on both its humble and jazzy branches.
QOS = {"--qos-profile", "--qos-depth", "--qos-history", "--qos-reliability", "--qos-durability"}
ROS2_OPTIONS = {
    ("topic", "pub"): {"-r", "--rate", "-p", "--print", "-1", "--once", "-t", "--times", "-w",
                       "--wait-matching-subscriptions", "--keep-alive", "-n", "--node-name"}
    | QOS,
    ("topic", "echo"): {"--csv", "--field", "--flow-style", "-f", "--full-length", "--no-arr",
                        "--no-str", "--once", "--raw", "-l", "--truncate-length", "--filter",
                        "--no-lost-messages"} | QOS,
    ("service", "call"): {"-r", "--rate"},
    ("pkg", "prefix"): {"--share"},
}
QOS_VALUES = {"--qos-reliability": {"system_default", "reliable", "best_effort"},
              "--qos-durability": {"system_default", "transient_local", "volatile"}}
ROSDEP_INSTALL = {"--from-paths", "--ignore-src", "-i", "-y", "--skip-keys", "-r",
                  "--rosdistro"}
COLCON_BUILD = {"--packages-select", "--symlink-install", "--packages-up-to"}


def readme_commands() -> list:
    """Command lines of the bash blocks (continuations joined, ``a && b`` split, ``$(...)``
    taken out as a command of its own) and inline commands that are not templates."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        lines += [line.strip() for line in re.sub(r"\\\n\s*", " ", block).splitlines()]
    for span in re.findall(r"`([^`\n]+)`", README):
        if re.match(r"(python -m |llada-vla-\w+ |scripts/|export |rosdep |make |"
                    r"ros2 launch llada_vla_ros \w)", span) and not re.search(r"<|\.\.\.|\[", span):
            lines.append(span)
    commands = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        for inner in re.findall(r"\$\(([^)]*)\)", line):
            commands.append(inner)
        line = re.sub(r"\$\(([^)]*)\)", "/opt/ros/prefix", line)
        commands += [part.strip() for part in line.split(" && ")]
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_the_commands_this_test_knows():
    programs = {shlex.split(c, comments=True)[0] for c in COMMANDS}
    assert {"make", "ros2", "llada-vla-eval", "llada-vla-train", "rosdep"} <= programs
    assert not any(" -q " in c for c in COMMANDS if c.startswith("ros2 topic pub"))


@pytest.mark.parametrize("command", COMMANDS)
def test_command_runs(command):
    argv = shlex.split(command, comments=True)
    check = (check_script if argv[0].startswith("scripts/") else
             check_tool if argv[0].startswith("llada-vla-") else CHECKS.get(argv[0]))
    assert check, f"no check for the program of: {command} (add one to this test)"
    check(argv)


# --- the checks, per program ------------------------------------------------------------------

def check_ros2(argv):
    verb = argv[1]
    if verb == "launch":
        return check_ros2_launch(argv[2], argv[3], argv[4:])
    if verb == "run":
        return check_ros2_run(argv[2:])
    sub = argv[2]
    options, positional = split_options(argv[3:], ROS2_OPTIONS[(verb, sub)])
    if (verb, sub) == ("topic", "pub"):
        topic, msgtype, values = positional
        assert topic in topic_names(), topic
        check_message_values(msgtype, values)
        for name, allowed in QOS_VALUES.items():
            assert options.get(name, next(iter(allowed))) in allowed, (name, options)
    elif (verb, sub) == ("topic", "echo"):
        topic, *msgtype = positional  # the type spares waiting for discovery
        assert topic in topic_names(), topic
        assert msgtype in ([], [topic_types().get(topic)]), positional
    elif (verb, sub) == ("service", "call"):
        service, srvtype = positional
        assert service in node_services(), f"no node of the package offers {service}"
        assert srvtype == "std_srvs/srv/Trigger"
    elif (verb, sub) == ("pkg", "prefix"):
        assert positional == [OWN]


def split_options(args, known) -> tuple:
    """(option -> value, positional) of a ros2cli command; an unknown option fails."""
    options, positional, i = {}, [], 0
    flags = {"--once", "-1", "--csv", "--no-arr", "--no-str", "--raw", "-f", "--full-length",
             "--no-lost-messages"}
    while i < len(args):
        if args[i].startswith("-"):
            assert args[i] in known, f"{args[i]}: no such option (Humble and Jazzy: " \
                                     f"{sorted(known)})"
            takes_value = args[i] not in flags
            options[args[i]] = args[i + 1] if takes_value else True
            i += 2 if takes_value else 1
        else:
            positional.append(args[i])
            i += 1
    return options, positional


def ros_sources() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / OWN / "ros").glob("*.py")))


def node_names() -> set:
    text = ros_sources()
    return set(re.findall(r'super\(\).__init__\("(\w+)"', text)) | set(
        re.findall(r'^NODE_NAME = "(\w+)"', text, re.M))


def private_names(kind: str) -> set:
    """``/<node>/<name>`` for every ``create_<kind>(Type, "~/<name>"`` of the nodes."""
    names = re.findall(rf'create_{kind}\(\w+, "~/(\w+)"', ros_sources())
    return {f"/{node}/{name}" for node in node_names() for name in names}


def node_services() -> set:
    return private_names("service")


def topic_names() -> set:
    return {v for k, v in vars(topics).items() if k.isupper() and isinstance(v, str)
            and v.startswith("/")} | private_names("publisher")


def topic_types() -> dict:
    return {getattr(topics, k): getattr(topics, f"{k}_TYPE") for k in vars(topics)
            if k.isupper() and hasattr(topics, f"{k}_TYPE")}


def check_message_values(msgtype, values):
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    fields = {name for name, _ in store.fielddefs[msgtype][1]}
    data = yaml.safe_load(values)
    assert isinstance(data, dict) and set(data) <= fields, (msgtype, data, fields)


def launch_declarations(path) -> dict:
    """argument -> choices (or None) declared by a launch file."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            choices = next((ast.literal_eval(k.value) for k in node.keywords
                            if k.arg == "choices"), None)
            out[ast.literal_eval(node.args[0])] = choices
    return out


def included_arguments(package) -> set:
    """Argument names widowx.launch.py passes to ``package``'s launch file."""
    tree = ast.parse((ROOT / "launch" / "widowx.launch.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == \
                "IncludeLaunchDescription" and package in ast.unparse(node):
            kw = next(k.value for k in node.keywords if k.arg == "launch_arguments")
            return {ast.literal_eval(k) for k in kw.func.value.keys}
    raise AssertionError(f"widowx.launch.py does not include {package}")


def check_ros2_launch(package, launch_file, args):
    from test_dependencies import run_dependencies

    pairs = dict(a.split(":=", 1) for a in args)
    assert all(":=" in a for a in args), args
    if package != OWN:
        assert package in run_dependencies(), f"{package} is not declared in package.xml"
        unknown = set(pairs) - included_arguments(package)
        assert not unknown, f"{package} {launch_file}: arguments {unknown} not used in " \
                            "widowx.launch.py's include of it"
        return
    declared = launch_declarations(ROOT / "launch" / launch_file)
    for name, value in pairs.items():
        assert name in declared, f"{launch_file} declares no argument {name}"
        if declared[name]:
            assert value in declared[name], (name, value)
        if value in ("true", "false"):
            as_bool(value)


def check_ros2_run(argv):
    package, executable, *rest = argv
    assert package == OWN and executable in console_scripts()
    if rest:
        assert rest[0] == "--ros-args"
        params = node_parameters(executable)
        i = 1
        while i < len(rest):
            flag, value = rest[i], rest[i + 1]
            assert flag in ("-p", "--param", "--params-file", "-r", "--remap", "--log-level")
            if flag in ("-p", "--param"):
                assert value.split(":=")[0] in params, f"no parameter {value}"
            if flag == "--params-file":
                share = value.split(f"/share/{OWN}/", 1)[1]
                assert (ROOT / share).is_file(), value
            i += 2


def console_scripts() -> dict:
    """console script -> (module, function)"""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return {name.strip(): tuple(target.strip().split(":"))
            for name, target in (line.split("=") for line in lines)}


def node_parameters(executable) -> set:
    """Parameters a node declares: config/policy.yaml for the policy node, else its
    PARAMETERS table and declare_parameter calls."""
    if executable in ("policy_node", "managed_policy_node"):
        return policy_parameters()
    module = console_scripts()[executable][0]
    text = (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
    table = re.search(r"^PARAMETERS = \{(.*?)^\}", text, re.M | re.S)
    names = set(re.findall(r'^\s+"(\w+)":', table.group(1), re.M)) if table else set()
    return names | set(re.findall(r'declare_parameter\("(\w+)"', text)) | {"use_sim_time"}


def policy_parameters() -> set:
    doc = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())

    def flat(d, prefix=""):
        for k, v in d.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]
    return set(flat(doc["/**"]["ros__parameters"])) | {"use_sim_time"}


def check_tool(argv):
    """A console script of the package (llada-vla-*): it exists and takes the arguments."""
    assert argv[0] in console_scripts(), f"{argv[0]} is not a console script of setup.cfg"
    check_module(console_scripts()[argv[0]][0], argv[1:])


def check_module(module, args):
    """The module's own parser accepts ``args`` (build_parser), or its --help names every
    option used."""
    import importlib

    parser = getattr(importlib.import_module(module), "build_parser", None)
    if parser is not None:
        parser().parse_args(args)
        return
    help_text = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                               text=True, timeout=120, cwd=ROOT)
    assert help_text.returncode == 0, help_text.stderr
    for flag in (a for a in args if a.startswith("--")):
        assert flag in help_text.stdout, f"{module} has no {flag}"


def check_python(argv):
    assert argv[1] == "-m"
    check_module(argv[2], argv[3:])


def check_accelerate(argv):
    """accelerate launch --config_file FILE -m MODULE ARGS: a shipped config, the module's
    arguments."""
    assert argv[1] == "launch"
    config = argv[argv.index("--config_file") + 1]
    assert (ROOT / config).is_file(), config
    i = argv.index("-m")
    check_module(argv[i + 1], argv[i + 2:])


def check_hf(argv):
    """The Hugging Face CLI of the installed huggingface_hub (transformers' dependency)."""
    help_text = subprocess.run(["hf", *argv[1:2], "--help"], capture_output=True, text=True,
                               timeout=120)
    assert help_text.returncode == 0, help_text.stderr
    for flag in (a for a in argv[2:] if a.startswith("--")):
        assert flag in help_text.stdout, f"hf {argv[1]} has no {flag}"


def check_make(argv):
    targets = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert set(argv[1:]) <= set(targets.split())


def check_script(argv):
    script = ROOT / argv[0]
    assert script.is_file()
    if argv[0] == "scripts/demo.sh":  # arguments go to the demo's parser
        from llada_vla_ros.ros import demo

        assert "--model-path" in argv and hasattr(demo, "main")
        source = (ROOT / OWN / "ros" / "demo.py").read_text()
        for flag in (a for a in argv[1:] if a.startswith("--")):
            assert f'"{flag}"' in source, flag


def check_rosdep(argv):
    from test_dependencies import run_dependencies

    assert argv[1] == "install"
    options = {}
    i = 2
    while i < len(argv):
        assert argv[i] in ROSDEP_INSTALL, f"rosdep install has no {argv[i]}"
        if argv[i] in ("--from-paths", "--skip-keys", "--rosdistro"):
            options[argv[i]] = argv[i + 1]
            i += 2
        else:
            i += 1
    assert set(options.get("--skip-keys", "").split()) <= run_dependencies()


def check_pip(argv):
    assert argv[1] == "install"
    if "-r" in argv:
        assert (ROOT / Path(argv[argv.index("-r") + 1]).name).is_file()


def check_colcon(argv):
    assert argv[1] == "build"
    assert set(a for a in argv[2:] if a.startswith("-")) <= COLCON_BUILD
    assert argv[argv.index("--packages-select") + 1] == OWN


def check_shell(argv):
    if argv[0] == "source":
        assert argv[1] in ("install/setup.bash", "scripts/env.sh"), argv
    elif argv[0] == "export":
        name, value = argv[1].split("=", 1)
        if name == "PATH":  # the executables of the colcon install space
            assert value.split(":")[0].endswith(f"/install/{OWN}/lib/{OWN}"), value
        else:
            assert name == "FASTDDS_DEFAULT_PROFILES_FILE"
            assert (ROOT / value.split(f"/share/{OWN}/", 1)[1]).is_file()


CHECKS = {"ros2": check_ros2, "python": check_python, "make": check_make,
          "accelerate": check_accelerate, "hf": check_hf,
          "rosdep": check_rosdep, "pip": check_pip, "colcon": check_colcon,
          "source": check_shell, "export": check_shell, "cd": lambda argv: None,
          "git": lambda argv: None}


@pytest.mark.parametrize("bad", [
    "ros2 topic pub --once -q /llada_vla/instruction std_msgs/msg/String \"{data: 'x'}\"",
    "ros2 topic pub --once /llada_vla/instruction std_msgs/msg/String \"{text: 'x'}\"",
    "ros2 launch llada_vla_ros widowx.launch.py recording:=true",
    "ros2 run llada_vla_ros policy_node --ros-args -p model:=/ckpt",
    "llada-vla-eval bag --polcy /ckpt",
])
def test_the_checks_catch_bad_commands(bad):
    with pytest.raises((AssertionError, SystemExit)):
        test_command_runs(bad)
