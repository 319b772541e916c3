"""Model options for learning on small machines (issue 12): the named configs and their
overrides, the convolutional stem and fixed 2-D position table of small(), the word-level
offline tokenizer, batched observations, and the autoregressive peer."""
import numpy as np
import pytest
import torch

from llada_vla_ros.decoding import DecodeConfig, decode
from llada_vla_ros.model import LladaVlaConfig, LladaVlaForActions, build_tiny_tokenizer
from llada_vla_ros.model.configuration import SMALL_VOCAB_SIZE, TINY_VISION, named_config
from llada_vla_ros.model.modeling import ConvStem, count_parameters, sincos_2d

INSTRUCTIONS = ["put the spoon on the towel", "put carrot on plate",
                "stack the green block on the yellow block", "put eggplant into yellow basket"]


def build(config, seed=0, words=False):
    torch.manual_seed(seed)
    model = LladaVlaForActions(config).eval()
    model.tokenizer = build_tiny_tokenizer(config.num_bins, words=words)
    return model


def images(n, seed=0, size=(48, 64)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]


# ----------------------------------------------------------------------------- configs

def test_tiny_partial_vision_config_fills_from_tiny_not_full():
    c = LladaVlaConfig.tiny(vision_config={"image_size": 64})
    v = c.vision_config
    assert v.image_size == 64
    assert (v.hidden_size, v.num_hidden_layers, v.patch_size) == (
        TINY_VISION["hidden_size"], TINY_VISION["num_hidden_layers"], TINY_VISION["patch_size"])


def test_tiny_hidden_size_override_scales_heads_mlp_and_init():
    c = LladaVlaConfig.tiny(hidden_size=512)
    assert (c.num_attention_heads, c.num_key_value_heads, c.intermediate_size) == (16, 8, 1536)
    assert c.initializer_range == round(512 ** -0.5, 4)
    explicit = LladaVlaConfig.tiny(hidden_size=512, num_attention_heads=8,
                                   num_key_value_heads=8, intermediate_size=1000)
    assert (explicit.num_attention_heads, explicit.num_key_value_heads,
            explicit.intermediate_size) == (8, 8, 1000)
    same = LladaVlaConfig.tiny()
    assert (same.hidden_size, same.num_attention_heads, same.initializer_range) == (128, 4, 0.1)


def test_named_configs():
    assert named_config("small").to_dict() == LladaVlaConfig.small().to_dict()
    with pytest.raises(ValueError, match="named configs: tiny, small"):
        named_config("medium")
    with pytest.raises(ValueError, match="power of two"):
        LladaVlaConfig.tiny(vision_stem="conv", vision_config={"patch_size": 6})
    with pytest.raises(ValueError, match="vision_stem"):
        LladaVlaConfig.tiny(vision_stem="resnet")


def test_full_keeps_siglip_exactly():
    c = LladaVlaConfig.full()
    assert (c.vision_stem, c.vision_position_embedding, c.autoregressive) == (
        "patch", "learned", False)


# ----------------------------------------------------------------------------- small's tower

def test_small_has_a_conv_stem_and_a_keypoint_token(tmp_path):
    c = LladaVlaConfig.small()
    model = build(c, words=True)
    emb = model.vision_tower.embeddings
    assert isinstance(emb.patch_embedding, ConvStem)
    T = c.image_size // c.vision_config.patch_size
    x = torch.zeros(2, 3, c.image_size, c.image_size)
    assert emb.patch_embedding(x).shape == (2, c.vision_config.hidden_size, T, T)
    assert c.num_image_tokens == T * T + 1
    assert model.encode_images(x).shape == (2, T * T + 1, c.hidden_size)
    obs = model.prepare(images(1)[0], "put carrot on plate")
    start, stop = obs.image_span
    assert stop - start == c.num_image_tokens
    # the saved checkpoint rebuilds the same model
    model.save_pretrained(tmp_path)
    again = LladaVlaForActions.from_pretrained(tmp_path)
    assert isinstance(again.vision_tower.embeddings.patch_embedding, ConvStem)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)


def test_keypoints_are_where_the_feature_maps_peak():
    from llada_vla_ros.model.modeling import SpatialKeypoints

    class Peaks(torch.nn.Module):  # feature maps with one sharp peak each
        def forward(self, x):
            f = torch.zeros(x.shape[0], 2, 16, 12)
            f[:, 0, 3, 10] = 50.0
            f[:, 1, 12, 1] = 50.0
            return f

    kp = SpatialKeypoints(2, 16)
    kp.convs = Peaks()
    xy = kp.coordinates(torch.zeros(1, 3, 64, 64))[0]
    expect = torch.tensor([[-1 + 2 * 10 / 11, -1 + 2 * 3 / 15], [-1 + 2 / 11, -1 + 2 * 12 / 15]])
    torch.testing.assert_close(xy, expect, atol=1e-4, rtol=0)
    assert kp(torch.zeros(3, 3, 64, 64)).shape == (3, 1, 16)


def test_keypoint_moments_say_which_way_an_elongated_object_lies(tmp_path):
    from llada_vla_ros.model.modeling import SpatialKeypoints

    class Bars(torch.nn.Module):  # map 0: a bar down-right, 1: down-left, 2: a flat one
        def forward(self, x):
            f = torch.full((x.shape[0], 3, 16, 16), -50.0)
            for i in range(2, 14):
                f[:, 0, i, i] = f[:, 1, i, 15 - i] = 0.0
            f[:, 2, 8, 2:14] = 0.0
            return f

    kp = SpatialKeypoints(3, 16, moments=True)
    kp.convs = Bars()
    (down_right, down_left, flat) = kp.coordinates(torch.zeros(1, 3, 64, 64))[0]
    assert down_right[4] > 0.99 and down_left[4] < -0.99  # correlation of x and y
    torch.testing.assert_close(down_right[:4], torch.tensor([0.0, 0.0, 0.5, 0.5]),
                               atol=0.05, rtol=0)  # centred, spread along both axes
    assert flat[2] > 0.4 and flat[3] < 0.01 and abs(flat[4]) < 0.01
    assert kp(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 16)
    # the option is part of the config: saved, loaded, and refused without keypoints
    c = LladaVlaConfig.small(vision_keypoint_moments=True)
    model = build(c, words=True)
    assert model.keypoints.proj[0].in_features == 5 * c.vision_keypoints
    model.save_pretrained(tmp_path)
    again = LladaVlaForActions.from_pretrained(tmp_path)
    assert again.keypoints.moments and again.config.vision_keypoint_moments
    with pytest.raises(ValueError, match="vision_keypoint_moments needs vision_keypoints"):
        LladaVlaConfig.small(vision_keypoints=0, vision_keypoint_moments=True)


def test_pooled_keypoint_features_see_an_edge_anywhere_and_its_angle(tmp_path):
    from llada_vla_ros.model.modeling import SpatialKeypoints

    torch.manual_seed(0)
    kp = SpatialKeypoints(4, 16, pooled=True)

    def bar(x, y, flip=False):  # a 9-pixel diagonal on a dark image
        img = torch.full((1, 3, 64, 64), -1.0)
        for i in range(9):
            img[0, :, y + i, x + (8 - i if flip else i)] = 1.0
        return img

    pooled = lambda img: kp.features(img)[0, 2 * 4:]  # noqa: E731 (after 4 x, y pairs)
    here, there = pooled(bar(12, 16)), pooled(bar(36, 28))  # moved by whole branch strides
    assert here.shape == (SpatialKeypoints.HIDDEN,)
    torch.testing.assert_close(here, there)  # the same pattern anywhere: the same maxima
    assert (here - pooled(bar(12, 16, flip=True))).abs().max() > 1e-2  # the other angle
    assert kp(bar(12, 16)).shape == (1, 1, 16)
    # the option is part of the config: saved, loaded, and refused without keypoints
    c = LladaVlaConfig.small(vision_keypoint_pooled=True)
    model = build(c, words=True)
    assert model.keypoints.proj[0].in_features == 2 * c.vision_keypoints + SpatialKeypoints.HIDDEN
    model.save_pretrained(tmp_path)
    again = LladaVlaForActions.from_pretrained(tmp_path)
    assert again.keypoints.pooled and again.config.vision_keypoint_pooled
    with pytest.raises(ValueError, match="vision_keypoint_pooled needs vision_keypoints"):
        LladaVlaConfig.small(vision_keypoints=0, vision_keypoint_pooled=True)


def test_sincos_position_table_option(tmp_path):
    c = LladaVlaConfig.small(vision_position_embedding="sincos2d")
    model = build(c, words=True)
    table = model.vision_tower.embeddings.position_embedding.weight
    T = c.image_size // c.vision_config.patch_size
    assert not table.requires_grad
    torch.testing.assert_close(table, sincos_2d(T, c.vision_config.hidden_size))


def test_sincos_2d_encodes_row_and_column():
    table = sincos_2d(4, 16).view(4, 4, 16)
    # first half: the row only; second half: the column only
    assert torch.equal(table[1, 0, :8], table[1, 3, :8])
    assert torch.equal(table[0, 2, 8:], table[3, 2, 8:])
    assert not torch.equal(table[0, 0, :8], table[1, 0, :8])
    flat = table.view(16, 16)
    distance = torch.cdist(flat, flat) + torch.eye(16)
    assert distance.min() > 0.1  # every patch position has its own code


def test_small_size_and_prompt_length():
    c = LladaVlaConfig.small()
    model = build(c, words=True)
    assert 1e6 < count_parameters(model) < 1e7
    assert len(build_tiny_tokenizer(words=True)) <= SMALL_VOCAB_SIZE == c.vocab_size
    assert len(model.prompt_ids("put the spoon on the towel")) < 25


# ----------------------------------------------------------------------------- tokenizer

def test_word_tokenizer_spends_a_position_per_word_and_still_encodes_anything():
    byte, word = build_tiny_tokenizer(), build_tiny_tokenizer(words=True)
    for text in INSTRUCTIONS:
        assert len(byte.encode(text, add_special_tokens=False)) == len(text)
        ids = word.encode(text, add_special_tokens=False)
        assert len(ids) == len(text.split())  # one token per word
        assert word.decode(ids) == text
    odd = "Déposez le Cube ⚙ 3 cm"
    assert word.decode(word.encode(odd, add_special_tokens=False)) == odd
    # special and action ids are those of the byte-level tokenizer (one id layout)
    for t in ("<|mdm_mask|>", "<|eot_id|>", "<|reserved_token_0|>", "<|reserved_token_31|>"):
        assert word.convert_tokens_to_ids(t) == byte.convert_tokens_to_ids(t)


# ----------------------------------------------------------------------------- batches

@pytest.mark.parametrize("prefix_attention_mask", [False, True])
def test_batched_action_logits_equal_one_observation_at_a_time(prefix_attention_mask):
    model = build(LladaVlaConfig.tiny(prefix_attention_mask=prefix_attention_mask))
    imgs = images(3)
    texts = ["put carrot on plate", "stack the green block on the yellow block", "open it"]
    A = model.config.num_action_tokens
    gen = torch.Generator().manual_seed(0)
    classes = torch.randint(0, 32, (3, A), generator=gen)
    classes[torch.rand(3, A, generator=gen) < 0.6] = -1
    batch = model.prepare_batch(imgs, texts)
    assert batch.prefix_embeds.shape[0] == 3 and batch.prefix_valid is not None
    full, cache = model.action_logits(batch, classes, update_cache=True)
    cached, _ = model.action_logits(batch, classes, cache=cache)
    for b in range(3):
        one = model.prepare(imgs[b], texts[b])
        ref, ref_cache = model.action_logits(one, classes[b:b + 1], update_cache=True)
        torch.testing.assert_close(full[b:b + 1], ref, rtol=1e-4, atol=1e-5)
        ref_cached, _ = model.action_logits(one, classes[b:b + 1], cache=ref_cache)
        torch.testing.assert_close(cached[b:b + 1], ref_cached, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- the AR peer

def test_autoregressive_peer_decodes_with_a_kv_cache_like_teacher_forcing():
    model = build(LladaVlaConfig.tiny(autoregressive=True), seed=1)
    img, text = images(1)[0], "put carrot on plate"
    obs = model.prepare(img, text)
    classes, conf, passes = model.generate_autoregressive(obs)
    assert classes.shape == (1, 35) and passes == 35
    # the same tokens from full causal passes without a cache: token i is the argmax at
    # position i given the tokens decoded before it
    with torch.no_grad():
        prefix = obs.prefix_embeds
        for i in range(35):
            given = classes.clone()
            given[:, i:] = 0  # what comes after position i must not matter (causal)
            logits = model([model.preprocess(img)], [obs.prompt_ids],
                           model.classes_to_ids(given))
            assert int(logits[0, i].argmax()) == int(classes[0, i]), i
    assert prefix.shape[1] == obs.prefix_len
    # the decoder routes an autoregressive model to it, whatever the strategy
    r = decode(model, obs, DecodeConfig(strategy="hierarchical"))
    assert np.array_equal(r.classes.reshape(1, -1), classes.numpy())
    assert r.forward_passes == 35 and r.full_passes == 1
    # batched (left-padded) generation gives every row's own tokens
    imgs = images(2, seed=3)
    texts = ["stack the green block on the yellow block", "go"]
    rows, _, _ = model.generate_autoregressive(model.prepare_batch(imgs, texts))
    for b in range(2):
        one, _, _ = model.generate_autoregressive(model.prepare(imgs[b], texts[b]))
        assert torch.equal(rows[b], one[0])


def test_autoregressive_peer_learns_with_the_same_loop():
    from llada_vla_ros.training import TINY_STATS, action_tokenizer_for, synthetic_examples, train

    model = build(LladaVlaConfig.tiny(autoregressive=True), seed=2)
    tok = action_tokenizer_for(model.config, TINY_STATS, "t")
    ex = synthetic_examples(tok)
    losses = train(model, tok, ex, steps=120, lr=3e-3, batch_size=8, warmup_steps=10,
                   cosine=True, progress=False)
    assert np.mean(losses[-10:]) < 0.1 * np.mean(losses[:5])
    for e in ex:
        r = decode(model, model.prepare(e.image, e.instruction))
        assert np.array_equal(r.classes, tok.encode(e.actions))
