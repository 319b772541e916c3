"""Checkpoint I/O: pickle refusal, LLaDA-V / original LLaDA names, vocab resizing, config
validation, and the info CLI."""
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from llada_vla_ros.action_tokenizer import ActionTokenizer, NormStats
from llada_vla_ros.model import (LladaVlaConfig, LladaVlaForActions, UnsafeCheckpointError,
                                 build_tiny_tokenizer, from_pretrained,
                                 load_language_model_weights)
from llada_vla_ros.model.checkpoint import map_name, resolve_dtype
from llada_vla_ros.model.modeling import count_parameters

ROOT = Path(__file__).resolve().parents[1]
A = 35


def make_model(seed, **overrides):
    torch.manual_seed(seed)
    model = LladaVlaForActions(LladaVlaConfig.tiny(**overrides)).eval()
    model.tokenizer = build_tiny_tokenizer()
    return model


def llada_v_names(model):
    """The model's weights under LLaDA-V / LLaVA names."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("vision_tower."):
            k = "model.vision_tower.vision_tower.vision_model." + k[len("vision_tower."):]
        elif k.startswith("mm_projector."):
            k = "model." + k
        out[k] = v.clone()
    return out


def olmo_names(model):
    """The language model's weights under original LLaDA (OLMo) names."""
    inverse = {"self_attn.q_proj": "q_proj", "self_attn.k_proj": "k_proj",
               "self_attn.v_proj": "v_proj", "self_attn.o_proj": "attn_out",
               "mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj", "mlp.down_proj": "ff_out",
               "input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm"}
    top = {"model.embed_tokens.weight": "model.transformer.wte.weight",
           "model.norm.weight": "model.transformer.ln_f.weight",
           "lm_head.weight": "model.transformer.ff_out.weight"}
    out = {}
    for k, v in model.state_dict().items():
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", k)
        if k in top:
            out[top[k]] = v.clone()
        elif m:
            out[f"model.transformer.blocks.{m.group(1)}.{inverse[m.group(2)]}.weight"] = v.clone()
    return out


def backbone_out(model, x):
    with torch.no_grad():
        h, _ = model.model(x)
        return model.lm_head(h)


@pytest.fixture(scope="module")
def reference():
    return make_model(0)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- safety

class _Boom:
    """Unpickling this writes a marker file: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_checkpoint_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(LladaVlaConfig.tiny().to_dict()))
    with open(ckpt / "pytorch_model.bin", "wb") as f:
        pickle.dump(_Boom(marker), f)
    with pytest.raises(UnsafeCheckpointError, match=r"pytorch_model\.bin.*safetensors"):
        from_pretrained(ckpt)
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin"):
        LladaVlaForActions.from_pretrained(ckpt)
    model = make_model(0)
    for path in (ckpt / "pytorch_model.bin", ckpt):
        with pytest.raises(UnsafeCheckpointError, match="convert it to safetensors|safetensors"):
            load_language_model_weights(model, path)
    pt = tmp_path / "weights.pt"
    pt.write_bytes((ckpt / "pytorch_model.bin").read_bytes())
    with pytest.raises(UnsafeCheckpointError, match="weights.pt"):
        load_language_model_weights(model, pt)
    assert not marker.exists()


def test_action_ids_colliding_with_mask_refused(tmp_path):
    tiny = LladaVlaConfig.tiny()
    ids = list(range(tiny.mask_token_id - 3, tiny.mask_token_id + 29))
    with pytest.raises(ValueError, match="mask token id"):
        LladaVlaConfig.tiny(action_token_ids=ids)
    with pytest.raises(ValueError, match="mask token id 126336"):
        LladaVlaConfig.full(action_token_ids=list(range(126320, 126352)))
    with pytest.raises(ValueError, match="duplicates"):
        LladaVlaConfig.tiny(action_token_ids=[264] * 32)
    with pytest.raises(ValueError, match="num_bins=32"):
        LladaVlaConfig.tiny(action_token_ids=list(range(264, 280)))
    # a config.json on disk is refused the same way
    make_model(0).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["action_token_ids"] = ids
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="mask token id"):
        LladaVlaForActions.from_pretrained(tmp_path)


def test_wrong_model_type_and_missing_weights_refused(tmp_path, reference):
    reference.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    sd = {k: v for k, v in reference.state_dict().items() if not k.startswith("lm_head")}
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="missing.*lm_head.weight"):
        from_pretrained(tmp_path)


def test_dtype_defaults():
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("", "cuda:0") == torch.bfloat16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.float16, "cpu") == torch.float16
    with pytest.raises(ValueError):
        resolve_dtype("int8", "cpu")


# ----------------------------------------------------------------------------- name maps

def test_name_map():
    assert map_name("model.transformer.blocks.3.attn_out.weight") == \
        "model.layers.3.self_attn.o_proj.weight"
    assert map_name("model.transformer.blocks.0.ff_proj.weight") == \
        "model.layers.0.mlp.gate_proj.weight"
    assert map_name("model.transformer.blocks.0.ff_out.weight") == \
        "model.layers.0.mlp.down_proj.weight"
    assert map_name("model.transformer.ff_out.weight") == "lm_head.weight"
    assert map_name("model.transformer.ln_f.weight") == "model.norm.weight"
    assert map_name("model.mm_projector.2.bias") == "mm_projector.2.bias"
    assert map_name("model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc1.weight"
                    ) == "vision_tower.encoder.layers.1.mlp.fc1.weight"
    assert map_name("model.layers.2.mlp.up_proj.weight") == "model.layers.2.mlp.up_proj.weight"


def test_llada_v_checkpoint_loads_with_identical_outputs(tmp_path, reference, image):
    path = tmp_path / "llada_v.safetensors"
    save_file(llada_v_names(reference), path)
    fresh = make_model(1)
    x = torch.randn(1, 9, fresh.config.hidden_size)
    assert not torch.allclose(backbone_out(fresh, x), backbone_out(reference, x))
    report = load_language_model_weights(fresh, path)
    assert report.missing == [] and report.unexpected == [] and report.vocab_resized is None
    assert report.loaded == len(reference.state_dict())
    torch.testing.assert_close(backbone_out(fresh, x), backbone_out(reference, x), atol=0, rtol=0)
    classes = torch.full((1, A), -1)
    a, _ = reference.action_logits(reference.prepare(image, "push the button"), classes)
    b, _ = fresh.action_logits(fresh.prepare(image, "push the button"), classes)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_original_llada_checkpoint_loads_into_backbone(tmp_path, reference):
    path = tmp_path / "llada.safetensors"
    save_file(olmo_names(reference), path)
    fresh = make_model(2)
    x = torch.randn(2, 9, fresh.config.hidden_size)
    assert not torch.allclose(backbone_out(fresh, x), backbone_out(reference, x))
    report = load_language_model_weights(fresh, path)
    assert report.unexpected == []
    assert report.missing and all(k.startswith(("vision_tower.", "mm_projector."))
                                  for k in report.missing)  # language weights only
    torch.testing.assert_close(backbone_out(fresh, x), backbone_out(reference, x), atol=0, rtol=0)


def test_both_formats_give_the_same_backbone(reference):
    via_v, via_olmo = make_model(3), make_model(4)
    load_language_model_weights(via_v, llada_v_names(reference))  # state dicts work too
    load_language_model_weights(via_olmo, olmo_names(reference))
    x = torch.randn(1, 7, reference.config.hidden_size)
    torch.testing.assert_close(backbone_out(via_v, x), backbone_out(via_olmo, x), atol=0, rtol=0)


def test_unexpected_and_mismatched_keys_reported(reference):
    sd = olmo_names(reference)
    sd["model.transformer.blocks.0.attn_out.bias"] = torch.zeros(reference.config.hidden_size)
    report = load_language_model_weights(make_model(5), sd)
    assert report.unexpected == ["model.transformer.blocks.0.attn_out.bias"]
    assert "unexpected (1)" in str(report)
    with pytest.raises(ValueError, match="attn_out.bias"):
        load_language_model_weights(make_model(5), sd, strict=True)
    bad = olmo_names(reference)
    bad["model.transformer.blocks.1.q_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"blocks\.1\.q_proj.*\(3, 3\)"):
        load_language_model_weights(make_model(5), bad)


def test_vocab_extended_only_when_action_ids_fall_outside(reference):
    c = reference.config
    small = 280  # action ids 264..295 partly outside
    sd = olmo_names(reference)
    for k in ("model.transformer.wte.weight", "model.transformer.ff_out.weight"):
        sd[k] = sd[k][:small].clone()
    model = make_model(6)
    report = load_language_model_weights(model, sd)
    needed = max(c.action_token_ids) + 1
    assert report.vocab_resized == (c.vocab_size, needed)
    assert report.new_rows == list(range(small, needed))
    assert model.config.vocab_size == needed
    emb = model.model.embed_tokens.weight
    assert emb.shape[0] == needed and model.lm_head.weight.shape[0] == needed
    torch.testing.assert_close(emb[:small], sd["model.transformer.wte.weight"])
    torch.testing.assert_close(emb[small:], sd["model.transformer.wte.weight"].mean(0)
                               .expand(needed - small, -1))
    # a larger checkpoint vocabulary holding every id: adopted as is, nothing new
    sd = olmo_names(reference)
    for k in ("model.transformer.wte.weight", "model.transformer.ff_out.weight"):
        sd[k] = torch.cat([sd[k], torch.randn(40, c.hidden_size)])
    model = make_model(6)
    report = load_language_model_weights(model, sd)
    assert report.vocab_resized == (c.vocab_size, c.vocab_size + 40) and report.new_rows == []
    # the same vocabulary: untouched
    assert load_language_model_weights(make_model(6), olmo_names(reference)).vocab_resized is None


# ----------------------------------------------------------------------------- info CLI

def test_info_cli_prints_counts_and_ids(tmp_path, reference):
    reference.save_pretrained(tmp_path)
    stats = NormStats([-1] * 7, [1] * 7, [True] * 6 + [False])
    ActionTokenizer(stats).save_pretrained(tmp_path, "bridge_orig")
    out = subprocess.run([sys.executable, "-m", "llada_vla_ros.model.info", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    parts = {"vision_tower": reference.vision_tower, "mm_projector": reference.mm_projector,
             "backbone": reference.model, "lm_head": reference.lm_head}
    for name, module in parts.items():
        assert re.search(rf"{name}\s+{count_parameters(module):,}\b", out), (name, out)
    assert re.search(rf"total\s+{count_parameters(reference):,}\b", out)
    assert f"action_token_ids: {reference.config.action_token_ids}" in out
    assert f"mask_token_id: {reference.config.mask_token_id}" in out
    assert "normalization keys: bridge_orig" in out
    assert "F32" in out
    bad = subprocess.run([sys.executable, "-m", "llada_vla_ros.model.info",
                          str(tmp_path / "missing")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "not found" in bad.stderr


def test_info_cli_names_a_refused_pickle(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    out = subprocess.run([sys.executable, "-m", "llada_vla_ros.model.info", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0
    assert str(tmp_path / "pytorch_model.bin") in out.stderr and "pickle" in out.stderr
    assert "safetensors" in out.stderr
