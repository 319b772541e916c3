"""Helpers shared by the package's launch files (no `launch` import here): argument parsing,
and refusing to start when a package the launch needs is not installed."""


def as_bool(text: str) -> bool:
    """'true'/'false' (also 1/0, yes/no, on/off, any case) -> bool; anything else is an error."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


# Arguments of policy.launch.py that widowx.launch.py and replay.launch.py pass through as is.
POLICY_PASSTHROUGH = ("params_file", "model_path", "device", "decoding_strategy", "instruction",
                      "image_transport", "log_level")


def policy_launch_arguments(arg, **fixed) -> list:
    """``launch_arguments`` for including policy.launch.py: the passthrough arguments read
    with ``arg(name)`` plus the ``fixed`` ones (topics, execute, ...)."""
    return list({**{name: arg(name) for name in POLICY_PASSTHROUGH}, **fixed}.items())


# rosbag2 storage plugin packages per storage id: sqlite3 is rosbag2_storage_sqlite3 on Jazzy
# and part of rosbag2_storage_default_plugins on Humble; mcap is rosbag2_storage_mcap on both.
STORAGE_PLUGINS = {"sqlite3": ("rosbag2_storage_sqlite3", "rosbag2_storage_default_plugins"),
                   "mcap": ("rosbag2_storage_mcap",)}


def package_share(package: str, remedy: str) -> str:
    """Share directory of an installed ROS package; RuntimeError naming it and ``remedy``."""
    try:
        from ament_index_python.packages import get_package_share_directory
        return get_package_share_directory(package)
    except (ImportError, LookupError, OSError):  # not found, or no ament index at all
        raise RuntimeError(f"package {package} is not installed; {remedy}") from None


def is_installed(package: str) -> bool:
    try:
        package_share(package, "")
        return True
    except RuntimeError:
        return False


def require_rosbag2(storage: str, needed_by: str, remedy: str) -> None:
    """RuntimeError unless ``ros2 bag`` (package ros2bag) and the ``storage`` plugin are
    installed: checked at launch, instead of ``ros2: error: invalid choice: 'bag'`` from a
    recorder that dies while the robot keeps running."""
    wanted = {"ros2bag": ("ros2bag",), STORAGE_PLUGINS[storage][0]: STORAGE_PLUGINS[storage]}
    missing = [name for name, any_of in wanted.items()
               if not any(is_installed(p) for p in any_of)]
    if missing:
        raise RuntimeError(
            f"{needed_by} needs rosbag2 with its {storage} storage plugin, but "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
            "sudo apt install "
            f"ros-$ROS_DISTRO-rosbag2 ros-$ROS_DISTRO-rosbag2-storage-mcap; {remedy}")
