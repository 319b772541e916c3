"""The LLaDA-VLA model: backbone semantics, prompt, localized logits, caches, save/load."""
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

from llada_vla_ros.model import (LladaVlaConfig, LladaVlaForActions, build_prompt_ids,
                                 build_tiny_tokenizer, preprocess_image)
from llada_vla_ros.model.modeling import Backbone, count_parameters

A = 35  # K * D


def make_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = LladaVlaForActions(LladaVlaConfig.tiny(**overrides)).eval()
    model.tokenizer = build_tiny_tokenizer()
    return model


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def partial_classes(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, 32, (batch, A), generator=g)
    hide = torch.rand(batch, A, generator=g) < 0.5
    hide[0] = True  # first row all masked
    return torch.where(hide, -1, classes)


# ----------------------------------------------------------------------------- backbone

def test_backbone_is_bidirectional_by_default(model):
    x = torch.randn(1, 12, model.config.hidden_size)
    y = x.clone()
    y[0, -1] += 1.0  # change only the last token
    with torch.no_grad():
        hx, _ = model.model(x)
        hy, _ = model.model(y)
        cx, _ = model.model(x, causal=True)
        cy, _ = model.model(y, causal=True)
    assert not torch.allclose(hx[0, 0], hy[0, 0], atol=1e-4)  # first position sees the last
    torch.testing.assert_close(cx[0, :-1], cy[0, :-1])  # causal: nothing before it changes


def test_first_action_position_sees_last_action_token(model, image):
    obs = model.prepare(image, "pick up the spoon")
    a = torch.full((1, A), -1)
    b = a.clone()
    b[0, -1] = 7
    la, _ = model.action_logits(obs, a)
    lb, _ = model.action_logits(obs, b)
    assert not torch.allclose(la[0, 0], lb[0, 0], atol=1e-5)


def test_backbone_matches_transformers_llama():
    """Same weights by name -> same outputs as LlamaModel (causal and is_causal=False)."""
    c = LladaVlaConfig.tiny(rope_theta=500.0)
    torch.manual_seed(1)
    ours = Backbone(c).eval()
    for p in ours.parameters():
        torch.nn.init.normal_(p, std=0.1)
    kwargs = dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                  intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
                  num_attention_heads=c.num_attention_heads,
                  num_key_value_heads=c.num_key_value_heads, rms_norm_eps=c.rms_norm_eps,
                  rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
                  attn_implementation="sdpa")
    x = torch.randn(2, 20, c.hidden_size)
    expected = {}
    with torch.no_grad():
        for causal in (True, False):
            ref = LlamaModel(LlamaConfig(**kwargs, is_causal=causal)).eval()
            ref.load_state_dict(ours.state_dict(), strict=True)
            expected[causal] = ref(inputs_embeds=x).last_hidden_state
        torch.testing.assert_close(ours(x, causal=True)[0], expected[True], atol=1e-5, rtol=1e-5)
        if torch.allclose(expected[False], expected[True]):
            pytest.skip("this transformers' Llama ignores is_causal=False")
        torch.testing.assert_close(ours(x)[0], expected[False], atol=1e-5, rtol=1e-5)


def test_causal_kv_cache_matches_full_causal_forward(model):
    x = torch.randn(2, 10, model.config.hidden_size)
    with torch.no_grad():
        full, _ = model.model(x, causal=True)
        h, cache = model.model(x[:, :6], causal=True, use_cache=True)
        steps = [h]
        for i in range(6, 10):  # one token at a time, like autoregressive decoding
            h, cache = model.model(x[:, i:i + 1], causal=True, past_key_values=cache,
                                   use_cache=True)
            steps.append(h)
    assert cache.length == 10
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- inputs

def test_preprocess_any_size_to_tower_size():
    img = np.full((37, 91, 3), 200, np.uint8)
    x = preprocess_image(img, 32)
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.full_like(x, 200 / 255 * 2 - 1))
    # already the right size: no resampling, exact (x / 255 - 0.5) / 0.5
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ref = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    torch.testing.assert_close(preprocess_image(img, 32), ref)
    # resizing a gradient keeps its range and direction
    grad = np.tile(np.linspace(0, 255, 100).astype(np.uint8)[None, :, None], (50, 1, 3))
    y = preprocess_image(grad, 32)
    assert -1 <= y.min() and y.max() <= 1 and y[0, 0, 0, -1] > y[0, 0, 0, 0]


@pytest.mark.parametrize("bad", [
    np.zeros((32, 32), np.uint8), np.zeros((32, 32, 4), np.uint8),
    np.zeros((0, 32, 3), np.uint8), np.zeros((32, 32, 3), np.float32), [[0, 0, 0]]])
def test_prepare_rejects_bad_images(model, bad):
    with pytest.raises(ValueError, match="image"):
        model.prepare(bad, "pick up the spoon")


def test_prepare_rejects_empty_instruction(model, image):
    for text in ("", "   "):
        with pytest.raises(ValueError, match="instruction"):
            model.prepare(image, text)


def test_prompt_template_and_image_splice(model, image):
    c = model.config
    ids = build_prompt_ids(model.tokenizer, "open the drawer", c)
    text = model.tokenizer.decode([i for i in ids if i != c.image_token_index])
    assert text == ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\n\nopen the "
                    "drawer<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    obs = model.prepare(image, "open the drawer")
    n = c.num_image_tokens
    assert obs.prefix_embeds.shape == (1, len(ids) - 1 + n, c.hidden_size)
    start, stop = obs.image_span
    assert stop - start == n and ids[start] == c.image_token_index
    with torch.no_grad():
        feats = model.encode_images(model.preprocess(image).pixels)[0]
        text_emb = model.model.embed_tokens(torch.tensor(ids[:start]))
    torch.testing.assert_close(obs.prefix_embeds[0, start:stop], feats)
    torch.testing.assert_close(obs.prefix_embeds[0, :start], text_emb)


def test_tiny_tokenizer_saves_and_loads(tmp_path):
    tok = build_tiny_tokenizer()
    tok.save_pretrained(tmp_path)
    for loaded in (PreTrainedTokenizerFast.from_pretrained(tmp_path),
                   PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))):
        c = LladaVlaConfig.tiny()
        assert loaded.convert_tokens_to_ids("<|mdm_mask|>") == c.mask_token_id
        assert loaded.convert_tokens_to_ids("<|reserved_token_0|>") == c.action_token_ids[0]
        assert loaded.convert_tokens_to_ids("<|eot_id|>") == c.eot_token_id
        ids = loaded.encode("héllo robot", add_special_tokens=False)
        assert max(ids) < 256 and loaded.decode(ids) == "héllo robot"
    assert len(tok) <= LladaVlaConfig.tiny().vocab_size


# ----------------------------------------------------------------------------- action logits

def test_action_logits_shape_and_equal_to_full_vocab_slice(model, image):
    obs = model.prepare(image, "pick up the spoon")
    classes = partial_classes()
    local, cache = model.action_logits(obs, classes)
    assert cache is None
    assert local.shape == (3, A, 32) and local.dtype == torch.float32
    full = model.full_logits(obs, classes)
    assert full.shape == (3, A, model.config.vocab_size)
    torch.testing.assert_close(local, full[..., model.config.action_token_ids])


def test_batch_rows_are_independent(model, image):
    obs = model.prepare(image, "pick up the spoon")
    classes = partial_classes()
    together, _ = model.action_logits(obs, classes)
    for b in range(classes.shape[0]):
        alone, _ = model.action_logits(obs, classes[b:b + 1])
        torch.testing.assert_close(together[b:b + 1], alone, atol=1e-5, rtol=1e-5)


def test_classes_map_to_action_and_mask_ids(model):
    c = model.config
    ids = model.classes_to_ids(torch.tensor([[-1, 0, 31] + [-1] * (A - 3)]))
    assert ids[0, :3].tolist() == [c.mask_token_id, c.action_token_ids[0], c.action_token_ids[31]]
    with pytest.raises(ValueError):
        model.classes_to_ids(torch.zeros(1, A - 1, dtype=torch.long))
    with pytest.raises(ValueError):
        model.classes_to_ids(torch.full((1, A), 32))
    with pytest.raises(ValueError):
        model.classes_to_ids(torch.full((1, A), -2))


def test_prefix_cache_exact_with_prefix_attention_mask(image):
    model = make_model(prefix_attention_mask=True)
    obs = model.prepare(image, "pick up the spoon")
    all_masked = torch.full((1, A), -1)
    _, cache = model.action_logits(obs, all_masked, update_cache=True)
    assert cache.length == obs.prefix_len and len(cache.layers) == model.config.num_hidden_layers
    classes = partial_classes()
    exact, _ = model.action_logits(obs, classes)
    cached, same = model.action_logits(obs, classes, cache=cache)
    assert same is cache
    torch.testing.assert_close(cached, exact, atol=1e-5, rtol=1e-5)
    # the prompt K/V do not depend on the action tokens at all
    _, other = model.action_logits(obs, classes[1:2], update_cache=True)
    for (k1, v1), (k2, v2) in zip(cache.layers, other.layers):
        torch.testing.assert_close(k1, k2, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(v1, v2, atol=1e-6, rtol=1e-6)


def test_prefix_cache_is_approximate_with_full_attention(model, image):
    obs = model.prepare(image, "pick up the spoon")
    classes = partial_classes()
    _, cache = model.action_logits(obs, torch.full((1, A), -1), update_cache=True)
    exact, _ = model.action_logits(obs, classes)
    cached, _ = model.action_logits(obs, classes, cache=cache)
    assert not torch.allclose(cached[1:], exact[1:], atol=1e-4)  # stale prompt K/V
    # a cache from the same action tokens reproduces the full forward
    _, fresh = model.action_logits(obs, classes, update_cache=True)
    again, _ = model.action_logits(obs, classes, cache=fresh)
    torch.testing.assert_close(again, exact, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        other = model.prepare(image, "a much longer instruction than before")
        model.action_logits(other, classes, cache=cache)


# ----------------------------------------------------------------------------- save / load

def test_save_then_load_gives_identical_logits(model, image, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    assert (tmp_path / "tokenizer.json").is_file()
    assert not list(tmp_path.glob("*.bin"))
    loaded = LladaVlaForActions.from_pretrained(tmp_path)
    assert not loaded.training and loaded.lm_head.weight.dtype == torch.float32
    classes = partial_classes()
    a, _ = model.action_logits(model.prepare(image, "stack the cups"), classes)
    b, _ = loaded.action_logits(loaded.prepare(image, "stack the cups"), classes)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert loaded.config.action_token_ids == model.config.action_token_ids
    half = LladaVlaForActions.from_pretrained(tmp_path, torch_dtype="bfloat16")
    assert half.lm_head.weight.dtype == torch.bfloat16
    c, _ = half.action_logits(half.prepare(image, "stack the cups"), classes)
    assert c.dtype == torch.float32 and (c - a).abs().max() < 0.1


def test_from_pretrained_rejects_remote_code_arguments(tmp_path):
    with pytest.raises(TypeError, match="trust_remote_code"):
        LladaVlaForActions.from_pretrained(tmp_path, trust_remote_code=True)


# ----------------------------------------------------------------------------- configs

def test_tiny_config_is_small_and_consistent(model):
    c = model.config
    n = count_parameters(model)
    assert 300_000 < n < 5_000_000
    assert c.num_action_tokens == A and c.action_dim == 7 and c.chunk_size == 5
    assert len(c.action_token_ids) == c.num_bins == 32
    assert c.mask_token_id not in c.action_token_ids
    assert max(c.action_token_ids + [c.mask_token_id]) < c.vocab_size
    assert not c.prefix_attention_mask


def test_full_config_numbers_on_meta_device():
    c = LladaVlaConfig.full()
    v = c.vision_config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
            c.intermediate_size, c.vocab_size) == (32, 4096, 32, 32, 12288, 126464)
    assert c.rms_norm_eps == 1e-5 and c.rope_theta == 500000 and not c.tie_word_embeddings
    assert (v.hidden_size, v.intermediate_size, v.num_attention_heads, v.patch_size,
            v.image_size, v.num_hidden_layers, v.vision_use_head) == (
        1152, 4304, 16, 14, 384, 26, False)
    assert c.num_image_tokens == 729
    assert c.mask_token_id == 126336 and c.action_token_ids == list(range(126084, 126116))
    with torch.device("meta"):
        m = LladaVlaForActions(c)
    H, F, V, L = 4096, 12288, 126464, 32
    assert count_parameters(m.model) == V * H + L * (4 * H * H + 3 * H * F + 2 * H) + H
    assert count_parameters(m.lm_head) == V * H
    assert count_parameters(m.mm_projector) == 1152 * H + H + H * H + H
    w, f, p = 1152, 4304, 14
    layer = 4 * (w * w + w) + (w * f + f) + (f * w + w) + 4 * w
    vision = 3 * p * p * w + w + 729 * w + 26 * layer + 2 * w
    assert count_parameters(m.vision_tower) == vision
    assert 8.4e9 < count_parameters(m) < 8.5e9
    assert not hasattr(m.vision_tower, "head")
