"""Launch-argument parsing shared by the package's launch files (no `launch` import here)."""


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
                      "log_level")


def policy_launch_arguments(arg, **fixed) -> list:
    """``launch_arguments`` for including policy.launch.py: the passthrough arguments read
    with ``arg(name)`` plus the ``fixed`` ones (topics, execute, ...)."""
    return list({**{name: arg(name) for name in POLICY_PASSTHROUGH}, **fixed}.items())
