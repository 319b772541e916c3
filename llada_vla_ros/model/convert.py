"""llada-vla-convert: a LLaDA-V download -> a LLaDA-VLA checkpoint directory.

    llada-vla-convert LLADA_V_DIR OUT_DIR [--dtype bfloat16] [--stats dataset_statistics.json]

LLADA_V_DIR is what ``huggingface-cli download GSAI-ML/LLaDA-V`` leaves: ``config.json``
(model_type llava_llada), sharded ``*.safetensors`` with ``model.safetensors.index.json``,
``tokenizer.json`` (+ tokenizer_config.json, special_tokens_map.json). OUT_DIR receives
config.json (model_type llada_vla, LLaDA-V's sizes and input, special and action ids looked
up in the tokenizer), sharded safetensors with an index, the tokenizer files,
dataset_statistics.json (``{}`` until fine-tuning, or ``--stats``) and
conversion_report.json (every key mapped, dropped or missing).

Memory: one source tensor and one output shard (``--shard-size``) at a time; tensors keep
their dtype (LLaDA-V ships bfloat16) unless ``--dtype`` says otherwise. Nothing is written
when a key is missing or a shape disagrees. Pickle weights (.bin/.pt/...) are never opened.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from .checkpoint import PICKLE_SUFFIXES, map_name, refuse_pickle, resolve_dtype
from .configuration import FULL_VISION, LLADA_V_INPUT, LladaVlaConfig

INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SPECIAL_TOKENS = {"bos_token_id": "<|startoftext|>", "eos_token_id": "<|endoftext|>",
                  "start_header_id": "<|start_header_id|>",
                  "end_header_id": "<|end_header_id|>", "eot_token_id": "<|eot_id|>",
                  "mask_token_id": "<|mdm_mask|>"}
ACTION_TOKEN = "<|reserved_token_{}|>"  # LLaDA's reserved tokens carry the action classes
BACKBONE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "rms_norm_eps", "rope_theta",
                 "tie_word_embeddings")
INPUT_KEYS = ("image_aspect_ratio", "image_grid_pinpoints", "mm_patch_merge_type")
VISION_LAYER = re.compile(r"encoder\.layers\.(\d+)\.")


class ConversionError(ValueError):
    """The source directory cannot become a LLaDA-VLA checkpoint (the message says why)."""


@dataclass
class ConversionReport:
    source: str
    mapped: dict = field(default_factory=dict)  # source name -> checkpoint name
    dropped: list = field(default_factory=list)  # source names with no place in the model
    missing: list = field(default_factory=list)  # model names absent from the source
    ignored_files: list = field(default_factory=list)  # pickles next to the safetensors
    source_dtypes: dict = field(default_factory=dict)
    output_dtype: str = ""
    shards: int = 0
    total_bytes: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"mapped {len(self.mapped)} tensors, dropped {len(self.dropped)}, missing "
                 f"{len(self.missing)}"]
        lines += [f"  dropped: {n}" for n in self.dropped]
        lines += [f"  missing: {n}" for n in self.missing]
        lines += [f"  ignored (pickle, never opened): {n}" for n in self.ignored_files]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- reading

def source_shards(src: Path) -> tuple:
    """(shard paths, pickle files ignored): the safetensors of a download directory."""
    if not src.is_dir():
        raise FileNotFoundError(f"LLaDA-V directory not found: {src}")
    pickles = sorted(p.name for p in src.iterdir() if p.suffix in PICKLE_SUFFIXES)
    index = src / INDEX
    if index.is_file():
        names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        for n in names:
            if Path(n).suffix != ".safetensors":
                refuse_pickle(src / n)
        shards = [src / n for n in names]
    else:
        shards = sorted(src.glob("*.safetensors"))
    if not shards:
        if pickles:
            refuse_pickle(src / pickles[0])
        raise FileNotFoundError(f"no .safetensors weights in {src}")
    for s in shards:
        if not s.is_file():
            raise FileNotFoundError(f"{INDEX} names {s.name}, which is not in {src}")
    return shards, pickles


def read_headers(shards) -> dict:
    """name -> (shard, shape, dtype) from the safetensors headers (no tensor is read)."""
    from .info import read_header

    out = {}
    for shard in shards:
        for name, meta in read_header(shard).items():
            if name in out:
                raise ConversionError(f"{name} is in both {out[name][0].name} and {shard.name}")
            out[name] = (shard, tuple(meta["shape"]), meta["dtype"])
    return out


def tokenizer_ids(src: Path, num_bins: int) -> dict:
    """Special and action token ids looked up by name in tokenizer.json."""
    path = src / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {src}: the prompt needs LLaDA's "
                                "tokenizer (download the whole LLaDA-V repository)")
    tok = json.loads(path.read_text(encoding="utf-8"))
    vocab = dict(tok.get("model", {}).get("vocab") or {})
    vocab.update({t["content"]: t["id"] for t in tok.get("added_tokens", [])})
    missing = [t for t in SPECIAL_TOKENS.values() if t not in vocab]
    if missing:
        raise ConversionError(f"{path} lacks LLaDA's special tokens {missing}")
    ids = {k: int(vocab[t]) for k, t in SPECIAL_TOKENS.items()}
    actions = [vocab.get(ACTION_TOKEN.format(i)) for i in range(num_bins)]
    if None in actions:
        raise ConversionError(f"{path} has no {ACTION_TOKEN.format(actions.index(None))}: "
                              "no reserved tokens for the action classes")
    ids["action_token_ids"] = [int(i) for i in actions]
    return ids


def vision_config(headers: dict, src_config: dict) -> dict:
    """The SigLIP tower's sizes, from the weight shapes (plus the head count)."""
    def find(suffix):
        hits = [n for n in headers if n.endswith(suffix) and "vision_tower" in n]
        if not hits:
            raise ConversionError(f"no vision tower tensor ending in {suffix}")
        return headers[hits[0]][1]

    hidden, _, patch, _ = find("embeddings.patch_embedding.weight")
    positions = find("embeddings.position_embedding.weight")[0]
    inter = find("mlp.fc1.weight")[0]
    layers = 1 + max(int(m.group(1)) for n in headers if "vision_tower" in n
                     for m in [VISION_LAYER.search(n)] if m)
    given = dict(src_config.get("vision_config") or {})
    heads = given.get("num_attention_heads") or (FULL_VISION["num_attention_heads"]
                                                 if hidden == FULL_VISION["hidden_size"] else None)
    if not heads:
        raise ConversionError(f"vision width {hidden} is not SigLIP so400m's: give its "
                              "num_attention_heads in config.json's vision_config")
    side = math.isqrt(positions)
    return {**FULL_VISION, **{k: v for k, v in given.items() if k in FULL_VISION},
            "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": int(heads), "patch_size": patch, "image_size": side * patch}


def build_config(src: Path, headers: dict, num_bins: int = 32, chunk_size: int = 5) -> \
        LladaVlaConfig:
    path = src / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {src}")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ConversionError(f"mm_projector_type {cfg['mm_projector_type']!r}: only "
                              "mlp2x_gelu is supported")
    args = {k: cfg[k] for k in BACKBONE_KEYS if k in cfg}
    args.update({k: cfg.get(k, LLADA_V_INPUT[k]) for k in INPUT_KEYS})
    args["system_prompt"] = LLADA_V_INPUT["system_prompt"]
    args.update(tokenizer_ids(src, num_bins))
    return LladaVlaConfig(vision_config=vision_config(headers, cfg), num_bins=num_bins,
                          chunk_size=chunk_size, **args)


def expected_shapes(config: LladaVlaConfig) -> tuple:
    """(name -> shape of every tensor of the model, the vision tower's name prefix); the
    model is built on the meta device (no memory)."""
    import torch

    from .checkpoint import _vision_prefix
    from .modeling import LladaVlaForActions

    with torch.device("meta"):
        model = LladaVlaForActions(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, _vision_prefix(model)


def plan_mapping(headers: dict, shapes: dict, prefix: str, report: ConversionReport) -> None:
    for name, (_, shape, dtype) in sorted(headers.items()):
        target = map_name(name, prefix)
        if target not in shapes:
            report.dropped.append(name)
            continue
        if target in report.mapped.values():
            raise ConversionError(f"two source tensors map to {target}")
        if shape != shapes[target]:
            raise ConversionError(f"shape mismatch for {name} -> {target}: source {shape}, "
                                  f"model {shapes[target]}")
        report.mapped[name] = target
        report.source_dtypes[dtype] = report.source_dtypes.get(dtype, 0) + 1
    report.missing = sorted(set(shapes) - set(report.mapped.values()))


# ----------------------------------------------------------------------------- writing

class ShardWriter:
    """Collects tensors and writes a safetensors file whenever ``max_bytes`` is reached."""

    def __init__(self, out: Path, max_bytes: int):
        self.out, self.max_bytes = out, max_bytes
        self.buffer, self.size, self.files, self.weight_map, self.total = {}, 0, [], {}, 0

    def add(self, name: str, tensor) -> None:
        n = tensor.numel() * tensor.element_size()
        if self.buffer and self.size + n > self.max_bytes:
            self.flush()
        self.buffer[name] = tensor.contiguous()
        self.size += n
        self.total += n

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.buffer:
            return
        path = self.out / f"part-{len(self.files):05d}.tmp"
        save_file(self.buffer, str(path), metadata={"format": "pt"})
        self.files.append((path, list(self.buffer)))
        self.buffer, self.size = {}, 0

    def close(self) -> int:
        """Rename the parts to model-0000i-of-0000n.safetensors, write the index."""
        self.flush()
        n = len(self.files)
        for i, (path, names) in enumerate(self.files):
            final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            path.rename(self.out / final)
            self.weight_map.update({k: final for k in names})
        index = {"metadata": {"total_size": self.total}, "weight_map": self.weight_map}
        (self.out / INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
        return n


def convert(src, out, dtype: Optional[str] = None, stats: Optional[str] = None,
            max_shard_bytes: int = 2 << 30, overwrite: bool = False,
            progress: bool = True) -> ConversionReport:
    """Convert a LLaDA-V directory ``src`` into a LLaDA-VLA checkpoint ``out``."""
    from safetensors import safe_open
    from tqdm import tqdm

    from ..action_tokenizer import STATS_FILE, load_stats_file

    start = time.perf_counter()
    src, out = Path(src).expanduser(), Path(out).expanduser()
    shards, pickles = source_shards(src)
    report = ConversionReport(source=str(src), ignored_files=pickles)
    headers = read_headers(shards)
    config = build_config(src, headers)
    plan_mapping(headers, *expected_shapes(config), report)
    if report.missing:
        raise ConversionError(f"{len(report.missing)} model tensors are not in {src}: "
                              f"{report.missing[:8]} (nothing written)\n{report.summary()}")
    if stats is not None:
        load_stats_file(stats)  # refuse a bad statistics file before writing anything
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConversionError(f"{out} exists and is not empty (give --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    target = resolve_dtype(dtype, "cpu") if dtype else None
    writer = ShardWriter(out, max_shard_bytes)
    by_shard = {}
    for name in report.mapped:
        by_shard.setdefault(headers[name][0], []).append(name)
    for shard in tqdm(shards, desc="shards", unit="shard", disable=not progress):
        with safe_open(str(shard), framework="pt", device="cpu") as f:
            for name in by_shard.get(shard, []):
                t = f.get_tensor(name)
                if target is not None and t.is_floating_point() and t.dtype != target:
                    t = t.to(target)
                writer.add(report.mapped[name], t)
                del t
    report.shards = writer.close()
    report.total_bytes = writer.total
    report.output_dtype = str(target or "as source").replace("torch.", "")
    config.dtype = str(target).replace("torch.", "") if target else None
    config.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    if stats is not None:
        shutil.copyfile(stats, out / STATS_FILE)
    else:
        (out / STATS_FILE).write_text("{}\n", encoding="utf-8")
    report.seconds = time.perf_counter() - start
    (out / "conversion_report.json").write_text(json.dumps(asdict(report), indent=2),
                                                encoding="utf-8")
    return report


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2GB, 500MB)")
    return int(float(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="llada-vla-convert", description=__doc__.split("\n")[0])
    p.add_argument("source", help="LLaDA-V download directory")
    p.add_argument("out", help="output checkpoint directory")
    p.add_argument("--dtype", default=None,
                   help="cast floating tensors (bfloat16 | float16 | float32); default: keep")
    p.add_argument("--stats", default=None,
                   help="a dataset_statistics.json to ship (default: an empty one)")
    p.add_argument("--shard-size", type=parse_size, default="2GB",
                   help="largest output shard (default 2GB)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        report = convert(args.source, args.out, args.dtype, args.stats, args.shard_size,
                         args.overwrite, progress=not args.quiet)
    except (OSError, ValueError) as exc:  # ConversionError, UnsafeCheckpointError are ValueError
        print(f"llada-vla-convert: error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"wrote {args.out}: {report.shards} shard(s), {report.total_bytes / 1e9:.2f} GB "
          f"({report.output_dtype}) in {report.seconds:.1f} s; details in "
          "conversion_report.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
