"""LLaDA-V's input: the conv_llava_llada system turn and anyres_max_4 tiling with
spatial_unpad + image_newline. Expected numbers were derived by running LLaDA-V's own
functions (llava/mm_utils.py select_best_resolution, resize_and_pad_image,
get_anyres_image_grid_shape; llava_arch.py unpad_image and the anyres_max merge) on
features that encode their (row, column) in the tile map."""
import numpy as np
import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from llada_vla_ros.model import (LladaVlaConfig, LladaVlaForActions, build_prompt_ids,
                                 build_tiny_tokenizer)
from llada_vla_ros.model import anyres
from llada_vla_ros.model.configuration import (LLADA_V_INPUT, LLADA_V_SYSTEM_PROMPT,
                                               TINY_SPECIAL_TOKENS)

# size: (best resolution, resized image inside it, paste offset, (cols, rows) grid,
#        unpadded map (h, w), final map (h, w) incl. the newline column, prompt features)
LLADA_V_384 = {
    (640, 480): ((768, 768), (768, 576), (0, 96), (2, 2), (40, 54), (40, 55), 2929),
    (480, 640): ((768, 768), (576, 768), (96, 0), (2, 2), (54, 40), (54, 41), 2943),
    (1280, 720): ((1536, 768), (1366, 768), (85, 0), (4, 2), (54, 96), (40, 73), 3649),
    (2000, 1500): ((2304, 1536), (2048, 1536), (128, 0), (6, 4), (108, 144), (46, 63), 3627),
    (320, 240): ((384, 384), (384, 288), (0, 48), (1, 1), (21, 27), (21, 28), 1317),
    (384, 384): ((384, 384), (384, 384), (0, 0), (1, 1), (27, 27), (27, 28), 1485),
    (100, 1000): ((384, 1152), (116, 1152), (134, 0), (1, 3), (81, 9), (81, 10), 1539),
}
# first feature of the tile map and the first feature of its last row, as (row, col) of the
# (rows*T) x (cols*T) map before unpad (fractional after the bilinear reduction)
LLADA_V_POSITIONS = {
    (640, 480): ((7.0, 0.0), (46.0, 0.0)),
    (480, 640): ((0.0, 7.0), (53.0, 7.0)),
    (1280, 720): ((0.175, 6.1666667), (52.825, 6.1666667)),
    (2000, 1500): ((0.673913, 9.66129), (106.326087, 9.66129)),
    (320, 240): ((3.0, 0.0), (23.0, 0.0)),
    (100, 1000): ((0.0, 9.0), (80.0, 9.0)),
}
# the same with 32-pixel tiles of 4 x 4 features (the tiny tower)
TINY_32 = {(64, 48): ((2, 2), (6, 9), 70, (1.0, 0.0), (6.0, 0.0)),
           (48, 64): ((2, 2), (8, 7), 72, (0.0, 1.0), (7.0, 1.0)),
           (200, 90): ((6, 3), (5, 13), 81, (1.5, 0.5), (9.5, 0.5)),
           (30, 300): ((1, 6), (24, 3), 88, (0.0, 1.0), (23.0, 1.0))}


def full_config():
    return LladaVlaConfig.full()


def tiny_llada_v_config(**kw):
    return LladaVlaConfig.tiny(**LLADA_V_INPUT, **kw)


def coordinate_features(config, size):
    """(1 + tiles, T*T, 3) features: channel 0/1 = row/column in the tile map, 2 = 0; the
    base image's features are all 1000."""
    cols, rows = anyres.grid_shape(config, size)
    T = config.image_size // config.vision_config.patch_size
    r = torch.arange(rows * T, dtype=torch.float64)[:, None].expand(rows * T, cols * T)
    c = torch.arange(cols * T, dtype=torch.float64)[None].expand(rows * T, cols * T)
    grid = torch.stack([r, c, torch.zeros_like(r)], -1)
    tiles = grid.view(rows, T, cols, T, 3).permute(0, 2, 1, 3, 4).reshape(rows * cols, T * T, 3)
    return torch.cat([torch.full((1, T * T, 3), 1000.0, dtype=torch.float64), tiles])


@pytest.mark.parametrize("size", list(LLADA_V_384))
def test_layout_numbers_match_llada_v(size):
    c = full_config()
    best, resized, offset, grid, unpadded, final, n = LLADA_V_384[size]
    assert anyres.best_resolution(size, c.grid_pinpoints) == best
    assert anyres.resized_size(size, best) == resized
    assert ((best[0] - resized[0]) // 2, (best[1] - resized[1]) // 2) == offset
    assert anyres.grid_shape(c, size) == grid
    top, bottom, left, right = anyres.unpad_window((grid[1] * 27, grid[0] * 27), size)
    assert (bottom - top, right - left) == unpadded
    assert anyres.feature_map_shape(c, size) == (final[0], final[1] - 1)
    assert anyres.num_features(c, size) == n
    assert anyres.num_crops(c, size) == 1 + grid[0] * grid[1]


@pytest.mark.parametrize("size", list(LLADA_V_POSITIONS))
def test_feature_layout_matches_llada_v(size):
    c = full_config()
    newline = torch.tensor([-1.0, -1.0, -1.0], dtype=torch.float64)
    out = anyres.merge(coordinate_features(c, size), size, c, newline)
    h, w1 = LLADA_V_384[size][5]
    assert out.shape == (729 + h * w1, 3)
    assert torch.all(out[:729] == 1000)  # the base image first
    grid = out[729:].view(h, w1, 3)
    assert torch.all(grid[:, -1] == -1) and not torch.any(grid[:, :-1] == -1)  # row ends
    first, last_row = LLADA_V_POSITIONS[size]
    torch.testing.assert_close(grid[0, 0, :2], torch.tensor(first, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(grid[-1, 0, :2], torch.tensor(last_row, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    # along a row the column grows, down a column the row grows
    assert torch.all(torch.diff(grid[:, :-1, 1], dim=1) > 0)
    assert torch.all(torch.diff(grid[:, :-1, 0], dim=0) > 0)


def test_square_and_flat_inputs():
    c = LladaVlaConfig.full(image_aspect_ratio="square", mm_patch_merge_type="spatial_unpad")
    assert anyres.num_features(c, (640, 480)) == 730  # one newline after the image
    flat = LladaVlaConfig.full(mm_patch_merge_type="flat")
    assert anyres.num_features(flat, (640, 480)) == 5 * 729  # base + 2x2 tiles, as they are
    tiny = LladaVlaConfig.tiny()
    assert (tiny.image_aspect_ratio, tiny.mm_patch_merge_type, tiny.system_prompt) == (
        "square", "flat", None)
    assert anyres.num_features(tiny, (640, 480)) == 16 and anyres.num_crops(tiny, (9, 9)) == 1
    with pytest.raises(ValueError, match="image_aspect_ratio"):
        LladaVlaConfig.tiny(image_aspect_ratio="pad")
    with pytest.raises(ValueError, match="mm_patch_merge_type"):
        LladaVlaConfig.tiny(mm_patch_merge_type="spatial")


def test_full_config_is_llada_v_input():
    c = full_config()
    assert c.system_prompt == LLADA_V_SYSTEM_PROMPT and c.image_aspect_ratio == "anyres_max_4"
    assert c.mm_patch_merge_type == "spatial_unpad" and len(c.grid_pinpoints) == 36
    assert c.grid_pinpoints[0] == [384, 384] and c.grid_pinpoints[-1] == [2304, 2304]
    with torch.device("meta"):
        m = LladaVlaForActions(c)
    assert m.image_newline.shape == (4096,)
    assert not hasattr(LladaVlaForActions(LladaVlaConfig.tiny()), "image_newline")


def test_pixel_crops_are_the_padded_image_cut_into_tiles():
    c = tiny_llada_v_config()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)  # 64 x 48: 2 x 2 tiles of 32
    model = LladaVlaForActions(c)
    x = model.preprocess(img)
    assert x.size == (64, 48) and x.pixels.shape == (5, 3, 32, 32)
    ref = torch.from_numpy(img).permute(2, 0, 1).float() / 255 * 2 - 1
    canvas = torch.full((3, 64, 64), -1.0)  # black padding: 8 rows above and below
    canvas[:, 8:56] = ref  # 64 x 48 already fits 64 wide: no resampling
    tiles = [canvas[:, :32, :32], canvas[:, :32, 32:], canvas[:, 32:, :32], canvas[:, 32:, 32:]]
    torch.testing.assert_close(x.pixels[1:], torch.stack(tiles))
    base = torch.nn.functional.interpolate(ref[None] / 2 + 0.5, size=(32, 32), mode="bicubic",
                                           antialias=True).clamp(0, 1) * 2 - 1
    torch.testing.assert_close(x.pixels[:1], base)


@pytest.mark.parametrize("size", list(TINY_32))
def test_model_prompt_with_anyres_features(size):
    torch.manual_seed(0)
    c = tiny_llada_v_config()
    model = LladaVlaForActions(c).eval()
    model.tokenizer = build_tiny_tokenizer()
    grid, final, n, first, last_row = TINY_32[size]
    img = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    assert model.preprocess(img).pixels.shape[0] == 1 + grid[0] * grid[1]
    obs = model.prepare(img, "open the drawer")
    ids = model.prompt_ids("open the drawer")
    start, stop = obs.image_span
    assert stop - start == n and obs.prefix_len == len(ids) - 1 + n
    feats = obs.prefix_embeds[0, start + 16:stop].view(*final, -1)  # after the 4x4 base
    torch.testing.assert_close(feats[:, -1], model.image_newline.expand(final[0], -1))
    # coordinates through the same merge: first feature and last row as in LLaDA-V
    out = anyres.merge(coordinate_features(c, size), size, c, torch.full((3,), -1.0,
                                                                         dtype=torch.float64))
    grid_map = out[16:].view(*final, 3)
    assert tuple(grid_map[0, 0, :2].tolist()) == pytest.approx(first)
    assert tuple(grid_map[-1, 0, :2].tolist()) == pytest.approx(last_row)


def test_prefix_cache_is_exact_with_anyres_prompts():
    """The decoder's prefix cache with the (longer) anyres prompt: exact with
    prefix_attention_mask, as with the square input."""
    torch.manual_seed(0)
    model = LladaVlaForActions(tiny_llada_v_config(prefix_attention_mask=True)).eval()
    model.tokenizer = build_tiny_tokenizer()
    img = np.random.default_rng(2).integers(0, 256, (90, 200, 3), dtype=np.uint8)
    obs = model.prepare(img, "stack the cups")
    classes = torch.full((1, 35), -1)
    full, cache = model.action_logits(obs, classes, update_cache=True)
    assert cache.length == obs.prefix_len
    classes[0, :7] = torch.arange(7)
    exact, _ = model.action_logits(obs, classes)
    cached, _ = model.action_logits(obs, classes, cache=cache)
    torch.testing.assert_close(cached, exact, atol=1e-5, rtol=1e-5)


def test_training_batch_of_anyres_images_of_different_sizes():
    from llada_vla_ros.training import diffusion_step_loss

    torch.manual_seed(0)
    model = LladaVlaForActions(tiny_llada_v_config())
    model.tokenizer = build_tiny_tokenizer()
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in ((64, 48), (30, 300))]
    texts = ["a", "a much longer instruction"]
    classes = torch.randint(0, 32, (2, 35))
    loss = diffusion_step_loss(model, [model.preprocess(i) for i in imgs],
                               [model.prompt_ids(t) for t in texts], classes,
                               torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and model.image_newline.grad.abs().sum() > 0
    # each row of a padded batch gives what it gives alone
    model.eval()
    with torch.no_grad():
        both = model([model.preprocess(i) for i in imgs], [model.prompt_ids(t) for t in texts],
                     model.classes_to_ids(classes))
        alone = model([model.preprocess(imgs[1])], [model.prompt_ids(texts[1])],
                      model.classes_to_ids(classes[1:]))
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- the prompt

def llada_v_reference_ids(tokenizer, system, instruction, image_index=-200):
    """LLaDA-V's way: render the chat template text (bos, one header/content/eot per turn,
    content trimmed, then the assistant header), cut at "<image>", tokenize each piece with
    special tokens recognized, join the pieces with the image index."""
    turns = ([("system", system)] if system else []) + [("user", "<image>\n" + instruction)]
    text = "<|startoftext|>" + "".join(
        f"<|start_header_id|>{role}<|end_header_id|>\n\n{content.strip()}<|eot_id|>"
        for role, content in turns) + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    pieces = [tokenizer(p, add_special_tokens=False).input_ids for p in text.split("<image>")]
    return pieces[0] + [image_index] + pieces[1]


def trained_bpe_tokenizer():
    """A BPE tokenizer whose merges cross the "\\n\\n" before the system text (byte-level, no
    pre-split): tokenizing the pieces of the turn apart would give other ids."""
    specials = TINY_SPECIAL_TOKENS + [f"<|reserved_token_{i}|>" for i in range(32)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["\n\n" + LLADA_V_SYSTEM_PROMPT, "\nopen the drawer", "\npick up the red cup"] * 20
    tok.train_from_iterator(corpus, trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>")


@pytest.mark.parametrize("kind", ["byte", "bpe"])
@pytest.mark.parametrize("system", [LLADA_V_SYSTEM_PROMPT, None])
def test_prompt_ids_match_llada_v_template(kind, system):
    tok = build_tiny_tokenizer() if kind == "byte" else trained_bpe_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in TINY_SPECIAL_TOKENS}
    c = LladaVlaConfig.tiny(
        system_prompt=system, vocab_size=len(tok), bos_token_id=ids["<|startoftext|>"],
        start_header_id=ids["<|start_header_id|>"], end_header_id=ids["<|end_header_id|>"],
        eot_token_id=ids["<|eot_id|>"], mask_token_id=ids["<|mdm_mask|>"],
        action_token_ids=[tok.convert_tokens_to_ids(f"<|reserved_token_{i}|>")
                          for i in range(32)])
    got = build_prompt_ids(tok, "  open the drawer ", c)
    assert got == llada_v_reference_ids(tok, system, "open the drawer", c.image_token_index)
    if kind == "bpe" and system:  # the merges do cross the piece boundary
        apart = tok("\n\n", add_special_tokens=False).input_ids + tok(
            system, add_special_tokens=False).input_ids
        assert tok("\n\n" + system, add_special_tokens=False).input_ids != apart
    if system:
        text = tok.decode([i for i in got if i >= 0])
        assert text.startswith("<|startoftext|><|start_header_id|>system<|end_header_id|>\n\n"
                               "You are a helpful language and vision assistant.")


def test_legacy_checkpoint_keeps_the_square_input(tmp_path):
    import json

    torch.manual_seed(0)
    model = LladaVlaForActions(LladaVlaConfig.tiny())
    model.tokenizer = build_tiny_tokenizer()
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["image_aspect_ratio"] == "square"
    for key in ("system_prompt", "image_aspect_ratio", "mm_patch_merge_type",
                "image_grid_pinpoints"):
        cfg.pop(key)  # as written before these options existed
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = LladaVlaForActions.from_pretrained(tmp_path)
    assert loaded.config.image_aspect_ratio == "square" and loaded.config.system_prompt is None
