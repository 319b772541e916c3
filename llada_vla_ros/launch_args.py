"""Launch-argument parsing shared by the package's launch files (no `launch` import here)."""


def as_bool(text: str) -> bool:
    """'true'/'false' (also 1/0, yes/no, on/off, any case) -> bool; anything else is an error."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")
