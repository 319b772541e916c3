"""Latency of one LLaDA-VLA action chunk (vision tower + decoding), per decoding strategy and
prefix-cache mode, against an autoregressive baseline and a memory/compute lower bound.

    python benchmarks/decode_latency.py --config tiny                       # CPU, minutes
    python benchmarks/decode_latency.py --config full --device cuda         # H100/H200

``tiny`` benchmarks the tiny model trained to overfit the synthetic examples
(``training.make_tiny_checkpoint``) and also measures how often the prefix cache changes the
decoded tokens (cached vs exact), with full attention and with ``prefix_attention_mask``.
``full`` builds LLaDA-V-sized random weights in bf16 directly on the device (16 GB+).
Writes ``decode_latency_<config>_<device>.json`` and ``.md`` into ``--out-dir``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llada_vla_ros.action_tokenizer import ActionTokenizer  # noqa: E402
from llada_vla_ros.decoding import STRATEGIES, DecodeConfig, decode, generate  # noqa: E402
from llada_vla_ros.model import (LladaVlaConfig, LladaVlaForActions,  # noqa: E402
                                 build_tiny_tokenizer, from_pretrained)
from llada_vla_ros.model.anyres import num_crops  # noqa: E402
from llada_vla_ros.model.checkpoint import default_dtype, resolve_dtype  # noqa: E402

CACHE_MODES = {"exact (no cache)": 1, "prefix cache": 0, "refresh every 5": 5}
INSTRUCTION = "put the spoon on the towel"


# ----------------------------------------------------------------------------- device

def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_bandwidth(device) -> float:
    """Bytes/s of a large device-to-device copy (read + write)."""
    nbytes = (2 << 30) if torch.device(device).type == "cuda" else (256 << 20)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / timed(lambda: dst.copy_(src), device, 10)


def measure_peak_flops(device, dtype) -> float:
    """FLOP/s of a large square matmul in the model's dtype."""
    n = 8192 if torch.device(device).type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2 * n ** 3 / timed(lambda: a @ b, device, 10)


def device_name(device) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"CPU {name} ({os.cpu_count()} cores, torch threads: {torch.get_num_threads()})"


# ----------------------------------------------------------------------------- model

def random_model(config: LladaVlaConfig, device, dtype) -> LladaVlaForActions:
    """Random weights created directly on ``device`` in ``dtype`` (never fp32 on the CPU).
    The byte-level tiny tokenizer gives the text ids (1 token per byte: a few more prompt
    tokens than LLaDA's BPE; the 729 image tokens dominate the prompt anyway)."""
    with torch.device(device), default_dtype(dtype):
        model = LladaVlaForActions(config)
    model.tokenizer = build_tiny_tokenizer(config.num_bins)
    return model.eval()


def nbytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def nparams(module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_costs(model, prompt_len: int, crops: int = 1) -> dict:
    """Weight bytes streamed per forward pass and FLOPs of one prefill (approximate);
    ``crops`` images through the vision tower (anyres: the base image + its tiles)."""
    c, v = model.config, model.config.vision_config
    A, H, L = c.num_action_tokens, c.hidden_size, c.num_hidden_layers
    elem = model.lm_head.weight.element_size()
    n_img = c.num_image_tokens
    vision_bytes = nbytes(model.vision_tower) + nbytes(model.mm_projector)
    # per pass: every decoder layer, the final norm and the V_a action rows of the LM head
    pass_bytes = nbytes(model.model.layers) + nbytes(model.model.norm) + c.num_bins * H * elem
    S = prompt_len + A
    vision_flops = crops * (2 * (nparams(model.vision_tower) + nparams(model.mm_projector))
                            * n_img + 4 * v.num_hidden_layers * n_img ** 2 * v.hidden_size)
    backbone_flops = 2 * nparams(model.model.layers) * S + 4 * L * S ** 2 * H
    return {"vision_bytes": vision_bytes, "pass_bytes": pass_bytes,
            "vision_flops": vision_flops, "prefill_flops": backbone_flops,
            "prompt_len": prompt_len, "action_tokens": A, "crops": crops,
            "image_input": f"{c.image_aspect_ratio}/{c.mm_patch_merge_type}"}


def lower_bound_ms(costs, bandwidth, peak, passes, full_passes=1) -> float:
    """Weights read once per pass at the measured bandwidth + the vision tower and
    ``full_passes`` prefills (prompt + actions) at the measured peak FLOP/s."""
    seconds = ((costs["vision_bytes"] + costs["pass_bytes"] * passes) / bandwidth
               + (costs["vision_flops"] + costs["prefill_flops"] * full_passes) / peak)
    return seconds * 1e3


# ----------------------------------------------------------------------------- runs

def stats(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)),
            "min_ms": float(v.min()), "runs": int(v.size)}


def bench_diffusion(model, image, instruction, config: DecodeConfig, runs, warmup) -> dict:
    for _ in range(warmup):
        generate(model, image, instruction, config)
    results = [generate(model, image, instruction, config) for _ in range(runs)]
    r = results[-1]
    out = stats([x.timing["total_ms"] for x in results])
    out.update(vision_ms=float(np.median([x.timing["vision_ms"] for x in results])),
               decode_ms=float(np.median([x.timing["decode_ms"] for x in results])),
               forward_passes=r.forward_passes, full_passes=r.full_passes,
               tokens_per_forward=r.classes.size / r.forward_passes)
    return out


@torch.inference_mode()
def autoregressive_chunk(model, image, instruction):
    """Causal prefill of the prompt, then the K*D action tokens one by one with a KV cache
    (argmax over the action classes). Returns (classes, total ms, forward passes)."""
    device = model.lm_head.weight.device
    sync(device)
    start = time.perf_counter()
    obs = model.prepare(image, instruction)
    ids = model.action_token_ids(device)
    h, cache = model.model(obs.prefix_embeds, causal=True, use_cache=True)
    classes = []
    for i in range(model.config.num_action_tokens):
        c = model.localized_logits(h[:, -1]).argmax(-1)  # (1,)
        classes.append(c)
        if i + 1 < model.config.num_action_tokens:
            x = model.model.embed_tokens(ids[c])[:, None]
            h, cache = model.model(x, causal=True, past_key_values=cache, use_cache=True)
    sync(device)
    return torch.cat(classes).cpu(), (time.perf_counter() - start) * 1e3, len(classes)


def bench_autoregressive(model, image, instruction, runs, warmup) -> dict:
    for _ in range(warmup):
        autoregressive_chunk(model, image, instruction)
    results = [autoregressive_chunk(model, image, instruction) for _ in range(runs)]
    out = stats([ms for _, ms, _ in results])
    passes = results[-1][2]
    out.update(forward_passes=passes, full_passes=1, tokens_per_forward=1.0)
    return out


def cache_agreement(ckpt_dirs: dict, examples) -> dict:
    """% of tokens identical to the exact decode (refresh every step) for each strategy and
    cache mode, on the training inputs and on mismatched (image, other instruction) pairs."""
    train = [(e.image, e.instruction) for e in examples]
    mismatched = [(a.image, b.instruction) for a in examples for b in examples if a is not b]
    out = {}
    for attention, directory in ckpt_dirs.items():
        model = from_pretrained(directory, torch_dtype=torch.float32, device="cpu")
        targets = [ActionTokenizer.from_pretrained(directory).encode(e.actions)
                   for e in examples]

        def compare(inputs, strategy, r):
            """(exact, cached) classes for every input."""
            pairs = []
            for image, text in inputs:
                obs = model.prepare(image, text)
                pairs.append([decode(model, obs, DecodeConfig(strategy, prompt_refresh_interval=i))
                              .classes for i in (1, r)])
            return pairs

        for strategy in STRATEGIES:
            for mode, r in CACHE_MODES.items():
                if r == 1:
                    continue
                on_train, off_train = compare(train, strategy, r), compare(mismatched, strategy, r)
                out[f"{attention} | {strategy} | {mode}"] = {
                    "training inputs": 100.0 * np.mean([a == b for a, b in on_train]),
                    "mismatched pairs": 100.0 * np.mean([a == b for a, b in off_train]),
                    "training targets hit": 100.0 * np.mean(
                        [b == t for (_, b), t in zip(on_train, targets)]),
                }
    return out


# ----------------------------------------------------------------------------- report

def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"# Decode latency: {m['config']} config on {m['device_name']}", "",
             f"- date {m['date']}, torch {m['torch']}, dtype {m['dtype']}, "
             f"{m['runs']} runs after {m['warmup']} warm-up, chunk K x D = "
             f"{m['action_tokens']} tokens, prompt {m['prompt_len']} positions",
             f"- weights: {m['model']}",
             f"- measured bandwidth {m['bandwidth_GBps']:.1f} GB/s, peak "
             f"{m['peak_TFLOPs']:.3f} TFLOP/s ({m['dtype']} matmul)",
             f"- bound = (vision weights + weights per pass x passes) / bandwidth + "
             f"(vision + full passes x prefill) FLOPs / peak; ideal = bound of 10 passes, "
             f"1 prefill = {m['ideal_bound_ms']:.3f} ms", "",
             "| strategy | cache | median ms | p90 ms | vision ms | forward passes (full) "
             "| tokens / forward | bound ms | median / bound | median / ideal |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["latency"]:
        vision = f"{row['vision_ms']:.2f}" if "vision_ms" in row else "incl."
        lines.append(
            f"| {row['strategy']} | {row['cache']} | {row['median_ms']:.2f} | "
            f"{row['p90_ms']:.2f} | {vision} | {row['forward_passes']} ({row['full_passes']}) | "
            f"{row['tokens_per_forward']:.2f} | {row['bound_ms']:.3f} | "
            f"{row['x_bound']:.1f} | {row['x_ideal']:.1f} |")
    if report.get("agreement"):
        lines += ["", "## Prefix cache vs exact decode (% identical tokens)", "",
                  "| attention | strategy | cache | training inputs | mismatched pairs "
                  "| training targets hit |", "|---|---|---|---:|---:|---:|"]
        for key, row in report["agreement"].items():
            lines.append(f"| {key} | {row['training inputs']:.1f} | "
                         f"{row['mismatched pairs']:.1f} | {row['training targets hit']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=("tiny", "full"), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="", help="default: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    p.add_argument("--checkpoint", help="benchmark this checkpoint directory instead")
    p.add_argument("--no-agreement", action="store_true",
                   help="tiny: skip the cached-vs-exact agreement (trains 2 tiny models)")
    p.add_argument("--threads", type=int, default=0, help="CPU torch threads (0 = default)")
    p.add_argument("--layers", type=int, default=0,
                   help="full: keep only N backbone and N vision layers (a smoke run of the "
                        "full-size code path on a small machine; its figures mean nothing)")
    args = p.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.layers < 0:
        p.error("--runs must be >= 1, --warmup >= 0 and --layers >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    torch.manual_seed(0)

    tmp = tempfile.TemporaryDirectory(prefix="llada_bench_")
    examples, ckpt_dirs = None, {}
    image, instruction = np.random.default_rng(0).integers(
        0, 256, (480, 640, 3), dtype=np.uint8), INSTRUCTION
    if args.checkpoint:
        model = from_pretrained(args.checkpoint, torch_dtype=dtype, device=device)
        model_desc = f"checkpoint {args.checkpoint}"
    elif args.config == "tiny":
        from llada_vla_ros.training import make_tiny_checkpoint, synthetic_examples

        examples = synthetic_examples()
        variants = {"full attention": None}
        if not args.no_agreement:
            variants["prefix_attention_mask"] = {"prefix_attention_mask": True}
        for name, overrides in variants.items():
            print(f"training the tiny checkpoint ({name}) ...", flush=True)
            ckpt_dirs[name] = make_tiny_checkpoint(Path(tmp.name) / name.replace(" ", "_"),
                                                   config_overrides=overrides)
        model = from_pretrained(ckpt_dirs["full attention"], torch_dtype=dtype, device=device)
        image, instruction = examples[0].image, examples[0].instruction
        model_desc = "tiny, trained to overfit training.synthetic_examples() (full attention)"
    else:
        overrides = {}
        if args.layers:
            overrides = dict(num_hidden_layers=args.layers,
                             vision_config={"num_hidden_layers": args.layers})
        model = random_model(LladaVlaConfig.full(**overrides), device, dtype)
        model_desc = ("full (LLaDA-8B + SigLIP-2 so400m sizes), random weights: "
                      "parallel_threshold confidence is meaningless here")
        if args.layers:
            model_desc += f"; SMOKE RUN with {args.layers} layer(s) only, not a measurement"

    prompt_len = model.prepare(image, instruction).prefix_len
    costs = model_costs(model, prompt_len, num_crops(model.config, image.shape[1::-1]))
    print("measuring bandwidth and peak FLOP/s ...", flush=True)
    bandwidth, peak = measure_bandwidth(device), measure_peak_flops(device, dtype)
    ideal = lower_bound_ms(costs, bandwidth, peak, passes=10)

    rows = []
    for strategy in STRATEGIES:
        for mode, r in CACHE_MODES.items():
            cfg = DecodeConfig(strategy=strategy, prompt_refresh_interval=r)
            row = {"strategy": strategy, "cache": mode,
                   **bench_diffusion(model, image, instruction, cfg, args.runs, args.warmup)}
            rows.append(row)
            print(f"{strategy:18s} {mode:18s} median {row['median_ms']:.2f} ms", flush=True)
    ar = {"strategy": "autoregressive (causal + KV cache)", "cache": "KV cache",
          **bench_autoregressive(model, image, instruction, args.runs, args.warmup)}
    rows.append(ar)
    print(f"autoregressive median {ar['median_ms']:.2f} ms", flush=True)
    for row in rows:
        row["bound_ms"] = lower_bound_ms(costs, bandwidth, peak, row["forward_passes"],
                                         row["full_passes"])
        row["x_bound"] = row["median_ms"] / row["bound_ms"]
        row["x_ideal"] = row["median_ms"] / ideal

    agreement = None
    if args.config == "tiny" and not args.checkpoint and not args.no_agreement:
        print("cached vs exact agreement ...", flush=True)
        agreement = cache_agreement(ckpt_dirs, examples)

    meta = {"config": "checkpoint" if args.checkpoint else args.config, "device": str(device), "device_name": device_name(device),
            "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__,
            "date": datetime.date.today().isoformat(), "runs": args.runs,
            "warmup": args.warmup, "model": model_desc,
            "bandwidth_GBps": bandwidth / 1e9, "peak_TFLOPs": peak / 1e12,
            "ideal_bound_ms": ideal, **costs}
    report = {"meta": meta, "latency": rows, "agreement": agreement}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"decode_latency_{meta['config']}_{device.type}"
    if args.layers and args.config == "full":
        stem += f"_{args.layers}layers"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
