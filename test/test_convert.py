"""llada-vla-convert on a synthetic LLaDA-V download: LLaDA-V's real key names (LLaVA
vision tower / projector / image_newline, Llama backbone) at tiny sizes, bfloat16, sharded
into several files with an index, LLaDA-V's config.json keys and a tokenizer.json."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from llada_vla_ros.policy.llada import LladaVlaPolicy
from llada_vla_ros.model import (LladaVlaConfig, LladaVlaForActions, UnsafeCheckpointError,
                                 build_tiny_tokenizer)
from llada_vla_ros.model.configuration import LLADA_V_INPUT
from llada_vla_ros.model.convert import ConversionError, convert, main
from llada_vla_ros.training import TINY_STATS, action_tokenizer_for

DROPPED = "model.vision_tower.vision_tower.vision_model.head.probe"  # no place in the model


def llada_v_name(k):
    if k.startswith("vision_tower."):
        return "model.vision_tower.vision_tower.vision_model." + k[len("vision_tower."):]
    if k.startswith("mm_projector.") or k == "image_newline":
        return "model." + k
    return k


def write_llada_v_dir(path, config, state, shards=3, extra=True):
    """A LLaDA-V-shaped download: sharded bf16 safetensors + index, config.json, tokenizer."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {llada_v_name(k): v.to(torch.bfloat16).contiguous() for k, v in state.items()}
    if extra:
        tensors[DROPPED] = torch.zeros(3, dtype=torch.bfloat16)
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate(np.array_split(np.array(names), shards)):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, str(path / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    (path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}))
    c = config
    (path / "config.json").write_text(json.dumps({
        "architectures": ["LlavaLLaDAModelLM"], "model_type": "llava_llada",
        "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta, "vocab_size": c.vocab_size, "tie_word_embeddings": False,
        "bos_token_id": 128000, "eos_token_id": 126081,  # LLaDA-V's stale ids: not used
        "image_aspect_ratio": "anyres_max_4", "image_grid_pinpoints": c.grid_pinpoints,
        "mm_patch_merge_type": "spatial_unpad", "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_hidden_size": c.vision_config.hidden_size,
        "mm_vision_tower": "google/siglip2-so400m-patch14-384",
        "vision_config": {"num_attention_heads": c.vision_config.num_attention_heads},
        "torch_dtype": "bfloat16"}))
    build_tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.manual_seed(0)
    config = LladaVlaConfig.tiny(**LLADA_V_INPUT)
    model = LladaVlaForActions(config).eval()
    path = write_llada_v_dir(tmp_path_factory.mktemp("llada_v") / "LLaDA-V", config,
                             model.state_dict())
    return path, model


def test_round_trip(source, tmp_path, capsys):
    src, original = source
    out = tmp_path / "converted"
    assert main([str(src), str(out), "--shard-size", "200KB", "--quiet"]) == 0
    printed = capsys.readouterr().out
    n = len(original.state_dict())
    assert f"mapped {n} tensors, dropped 1, missing 0" in printed and DROPPED in printed
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["mapped"]["model.image_newline"] == "image_newline"
    assert report["mapped"]["model.vision_tower.vision_tower.vision_model.embeddings."
                            "patch_embedding.weight"] == \
        "vision_tower.embeddings.patch_embedding.weight"
    assert report["dropped"] == [DROPPED] and report["missing"] == []
    assert report["shards"] > 1 and report["source_dtypes"] == {"BF16": n}
    assert len(set(json.loads((out / "model.safetensors.index.json").read_text())
                   ["weight_map"].values())) == report["shards"]
    assert json.loads((out / "dataset_statistics.json").read_text()) == {}

    loaded = LladaVlaForActions.from_pretrained(out, torch_dtype="bfloat16")
    c, ref = loaded.config, original.config
    assert c.model_type == "llada_vla" and loaded.image_newline.dtype == torch.bfloat16
    for key in ("hidden_size", "num_hidden_layers", "num_key_value_heads", "vocab_size",
                "mask_token_id", "bos_token_id", "eot_token_id", "action_token_ids",
                "image_aspect_ratio", "mm_patch_merge_type", "grid_pinpoints", "system_prompt",
                "image_size"):
        assert getattr(c, key) == getattr(ref, key), key
    assert c.vision_config.num_attention_heads == ref.vision_config.num_attention_heads
    for k, v in original.state_dict().items():  # bit for bit (bfloat16)
        assert torch.equal(loaded.state_dict()[k], v.to(torch.bfloat16)), k
    assert loaded.tokenizer is not None

    # the converted checkpoint prepares the LLaDA-V prompt like the source model in bf16
    original.to(torch.bfloat16).tokenizer = build_tiny_tokenizer()
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    a, b = loaded.prepare(img, "open the drawer"), original.prepare(img, "open the drawer")
    assert a.prefix_len == b.prefix_len == len(loaded.prompt_ids("open the drawer")) - 1 + 70
    torch.testing.assert_close(a.prefix_embeds, b.prefix_embeds)

    # with action statistics it is a policy the node loads
    ckpt = tmp_path / "policy"
    loaded.save_pretrained(ckpt)
    action_tokenizer_for(c, TINY_STATS, "demo").save_pretrained(ckpt, "demo")
    policy = LladaVlaPolicy.from_pretrained(ckpt)
    assert policy.predict(img, "open the drawer").actions.shape == (5, 7)


def test_given_statistics_are_shipped_and_dtype_cast(source, tmp_path):
    src, original = source
    stats = tmp_path / "stats" / "dataset_statistics.json"
    action_tokenizer_for(original.config, TINY_STATS, "bridge").save_pretrained(stats.parent,
                                                                                "bridge")
    out = tmp_path / "f32"
    report = convert(src, out, dtype="float32", stats=str(stats), progress=False)
    assert report.output_dtype == "float32"
    assert list(json.loads((out / "dataset_statistics.json").read_text())) == ["bridge"]
    loaded = LladaVlaForActions.from_pretrained(out)
    w = original.lm_head.weight.to(torch.bfloat16).float()
    assert torch.equal(loaded.lm_head.weight, w)


def test_missing_tensor_fails_before_writing(source, tmp_path):
    src, original = source
    state = {k: v for k, v in original.state_dict().items() if k != "model.norm.weight"}
    broken = write_llada_v_dir(tmp_path / "broken", original.config, state)
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="model.norm.weight"):
        convert(broken, out, progress=False)
    assert not out.exists()
    # a shape that does not fit the config.json sizes is named
    cfg = json.loads((broken / "config.json").read_text())
    cfg["intermediate_size"] += 1
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="shape mismatch"):
        convert(broken, out, progress=False)


def test_pickles_are_refused_and_never_opened(source, tmp_path, capsys):
    src, _ = source
    only = tmp_path / "pickled"
    only.mkdir()
    (only / "pytorch_model-00001-of-00001.bin").write_bytes(b"not even a pickle")
    (only / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"weight_map": {"lm_head.weight": "pytorch_model-00001-of-00001.bin"}}))
    assert main([str(only), str(tmp_path / "o"), "--quiet"]) == 1
    assert "refusing to load" in capsys.readouterr().err
    # an index naming a pickle shard
    (only / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"lm_head.weight": "pytorch_model-00001-of-00001.bin"}}))
    with pytest.raises(UnsafeCheckpointError):
        convert(only, tmp_path / "o2", progress=False)
    # pickles beside safetensors: listed as ignored, never read
    (src / "training_args.bin").write_bytes(b"garbage")
    try:
        report = convert(src, tmp_path / "o3", progress=False)
    finally:
        (src / "training_args.bin").unlink()
    assert report.ignored_files == ["training_args.bin"]


def peak_growth(body: str) -> int:
    """Bytes by which the peak RSS of a fresh process rises while it runs ``body``."""
    code = textwrap.dedent(f"""
        import re
        from llada_vla_ros.model.convert import convert
        import torch, safetensors.torch, transformers  # imports count in the baseline
        from llada_vla_ros.model import LladaVlaForActions

        def status(key):  # kB
            text = open("/proc/self/status").read()
            return int(re.search(key + r":\\s+(\\d+)", text).group(1))

        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        before = status("VmRSS")
        {body}
        print((status("VmHWM") - before) * 1024)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    return int(run.stdout.split()[-1])


def test_streams_shard_by_shard(tmp_path):
    """Peak memory of a conversion in its own process stays near one source shard + one
    output shard, far below the checkpoint's size."""
    torch.manual_seed(0)
    config = LladaVlaConfig.tiny(**LLADA_V_INPUT, hidden_size=256, intermediate_size=4096,
                                 num_hidden_layers=10)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LladaVlaForActions(config).state_dict().items()}
    state = {k: torch.ones(s) for k, s in shapes.items()}
    src = write_llada_v_dir(tmp_path / "big", config, state, shards=12, extra=False)
    total = sum(v.numel() * 2 for v in state.values())
    del state
    convert_all = (f"convert({str(src)!r}, {str(tmp_path / 'out')!r}, "
                   "max_shard_bytes=8 << 20, progress=False)")
    load_all = ("import glob; from safetensors.torch import load_file; "
                f"d = [{{k: v.clone() for k, v in load_file(f).items()}} "
                f"for f in glob.glob({str(src)!r} + '/*.safetensors')]")
    grown = {name: peak_growth(body) for name, body in (("convert", convert_all),
                                                         ("load all", load_all))}
    assert total > 60e6
    assert grown["load all"] > 0.9 * total  # the measurement sees a whole copy
    print(f"peak growth {grown['convert'] / 1e6:.1f} MB for a {total / 1e6:.1f} MB checkpoint")
    assert grown["convert"] < 0.5 * total, (grown, total)
