"""Which files of a checkpoint are loaded: safetensors only, never a pickle. No torch here,
so ``model.info`` describes a checkpoint without importing it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class UnsafeCheckpointError(ValueError):
    """A pickle-based checkpoint (.bin/.pt/...) was offered; only safetensors are loaded."""


def refuse_pickle(path: Path):
    raise UnsafeCheckpointError(
        f"refusing to load {path}: pickle checkpoints ({path.suffix}) can run arbitrary code "
        "when loaded. Convert it to safetensors (in a trusted environment: "
        "safetensors.torch.save_file(torch.load(path, weights_only=True), "
        "'model.safetensors')) and load that.")


def safetensors_files(path: Union[str, Path]) -> list:
    """The safetensors files of a checkpoint file or directory (index, single or all)."""
    path = Path(path)
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            refuse_pickle(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"{path} is not a .safetensors file")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        with open(index, encoding="utf-8") as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        return [path / n for n in names]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        refuse_pickle(pickles[0])
    raise FileNotFoundError(f"no .safetensors weights in {path}")
