"""Describe a checkpoint directory without loading its weights.

    python -m llada_vla_ros.model.info CHECKPOINT_DIR

Prints parameter counts per part (from the safetensors headers), dtype, action-token ids,
mask id and the normalization keys of dataset_statistics.json.
"""
from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from collections import Counter
from pathlib import Path

from ..action_tokenizer import STATS_FILE
from .files import safetensors_files

PARTS = (("vision_tower", "vision_tower."), ("mm_projector", "mm_projector."),
         ("backbone", "model."), ("lm_head", "lm_head."))


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file: name -> {dtype, shape, data_offsets}."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header


def describe(directory) -> dict:
    """Counts per part, dtypes and the action-token layout of a checkpoint directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    counts, dtypes = Counter(), Counter()
    for f in safetensors_files(directory):  # a pickle is refused, naming it
        for name, meta in read_header(f).items():
            n = math.prod(meta["shape"])
            part = next((p for p, pre in PARTS if name.startswith(pre)), "other")
            counts[part] += n
            dtypes[meta["dtype"]] += n
    config = {}
    if (directory / "config.json").is_file():
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    keys = []
    if (directory / STATS_FILE).is_file():
        keys = sorted(json.loads((directory / STATS_FILE).read_text(encoding="utf-8")))
    parts = {p: counts.get(p, 0) for p, _ in PARTS}
    if counts.get("other"):
        parts["other"] = counts["other"]
    return {"parameters": parts, "total": sum(counts.values()), "dtypes": dict(dtypes),
            "config": config, "normalization_keys": keys}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Describe a LLaDA-VLA checkpoint directory.")
    p.add_argument("directory")
    args = p.parse_args(argv)
    try:
        d = describe(args.directory)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = d["config"]
    print(f"checkpoint: {args.directory}")
    print(f"model_type: {c.get('model_type')}")
    print("dtype: " + ", ".join(f"{k} ({v:,} params)" for k, v in d["dtypes"].items()))
    print("parameters:")
    for part, n in d["parameters"].items():
        print(f"  {part:<13} {n:>15,}")
    print(f"  {'total':<13} {d['total']:>15,}")
    ids = c.get("action_token_ids") or []
    print(f"backbone: vocab_size={c.get('vocab_size')} hidden={c.get('hidden_size')} "
          f"layers={c.get('num_hidden_layers')} heads={c.get('num_attention_heads')}/"
          f"{c.get('num_key_value_heads')} prefix_attention_mask={c.get('prefix_attention_mask')}")
    print(f"actions: num_bins={c.get('num_bins')} action_dim={c.get('action_dim')} "
          f"chunk_size={c.get('chunk_size')}")
    print(f"action_token_ids: {ids}")
    print(f"mask_token_id: {c.get('mask_token_id')}")
    keys = d["normalization_keys"]
    print(f"normalization keys: {', '.join(keys) if keys else f'none (no {STATS_FILE})'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
