"""Inputs of the model: image preprocessing (torch, on the model's device), the LLaDA chat
prompt, and the tiny byte-level tokenizer built offline."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..images import check_rgb
from . import anyres
from .configuration import SMALL_VOCAB_SIZE, TINY_SPECIAL_TOKENS

IMAGE_PLACEHOLDER = "<image>"
MEAN = STD = 0.5  # SigLIP normalization


def preprocess_image(image_rgb: np.ndarray, size: int, device="cpu",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 HxWx3 RGB of any size -> (1, 3, size, size): bicubic antialiased resize,
    clamp to [0, 1] (like uint8 resizing), then (x - 0.5) / 0.5."""
    check_rgb(image_rgb)
    x = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(device)
    x = x.permute(2, 0, 1).unsqueeze(0).float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True,
                          align_corners=False).clamp_(0.0, 1.0)
    return ((x - MEAN) / STD).to(dtype)


@dataclass
class ImageInput:
    """One camera image ready for the vision tower: ``pixels`` (n, 3, S, S) normalized crops
    (the whole image, then anyres tiles) and the original ``size`` (width, height), which
    fixes the tile grid and the unpadding of the features (anyres.merge). ``state``: the
    robot state observed with the image (``kinematics.robot_state``), for a model that
    takes one (``config.state_dim``); None otherwise."""

    pixels: torch.Tensor
    size: tuple
    state: Optional[torch.Tensor] = None


def preprocess_crops(image_rgb: np.ndarray, config, device="cpu",
                     dtype: torch.dtype = torch.float32, state=None) -> ImageInput:
    """uint8 HxWx3 RGB (+ the robot state) -> ImageInput for ``config``'s input (square or
    anyres)."""
    check_rgb(image_rgb)
    x = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(device)
    x = x.permute(2, 0, 1).unsqueeze(0).float() / 255.0
    pixels = anyres.crops(x, config)
    return ImageInput(((pixels - MEAN) / STD).to(dtype),
                      (int(image_rgb.shape[1]), int(image_rgb.shape[0])), as_state(state))


def as_state(state) -> Optional[torch.Tensor]:
    """A robot state as a float32 vector (None stays None); ValueError on NaN/Inf."""
    if state is None:
        return None
    s = torch.as_tensor(np.asarray(state, dtype=np.float32)).reshape(-1)
    if not torch.isfinite(s).all():
        raise ValueError(f"robot state contains NaN/Inf: {s.tolist()}")
    return s


def build_prompt_ids(tokenizer, instruction: str, config) -> list[int]:
    """LLaDA chat prompt as ids, with ``config.image_token_index`` where the image goes:

    ``<|startoftext|>[<|start_header_id|>system<|end_header_id|>\\n\\n{system}<|eot_id|>]
    <|start_header_id|>user<|end_header_id|>\\n\\n<image>\\n{instruction}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n``

    The system turn is there when ``config.system_prompt`` is set (LLaDA-V's template).
    Special tokens come from the config ids; the text between two special tokens (or the
    image) is tokenized as one piece, as LLaDA-V's ``tokenizer_image_token`` does.
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError("instruction is empty")

    def text(s: str) -> list[int]:
        return list(tokenizer.encode(s, add_special_tokens=False))

    c = config
    ids = [c.bos_token_id]
    if c.system_prompt:
        ids += ([c.start_header_id] + text("system") + [c.end_header_id]
                + text("\n\n" + c.system_prompt.strip()) + [c.eot_token_id])
    return (ids + [c.start_header_id] + text("user") + [c.end_header_id]
            + text("\n\n") + [c.image_token_index] + text("\n" + instruction.strip())
            + [c.eot_token_id, c.start_header_id] + text("assistant") + [c.end_header_id]
            + text("\n\n"))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what ByteLevel pre-tokenization uses)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# Words of the chat template and of tabletop instructions (the four simulated tasks,
# Bridge-style verbs, objects, colours, places). With ``words=True`` each of them is one or
# two tokens instead of one token per byte; any other text still encodes, byte by byte.
TEMPLATE_WORDS = ("user", "assistant", "system")
INSTRUCTION_VERBS = ("put", "place", "pick", "move", "push", "pull", "open", "close", "stack",
                     "lift", "turn", "take", "drop", "slide", "fold", "wipe", "sweep", "flip",
                     "knock", "grab", "go", "set", "pour", "rotate", "reach")
INSTRUCTION_WORDS = INSTRUCTION_VERBS + (
    "the", "a", "an", "on", "onto", "in", "into", "to", "of", "and", "from", "up", "down",
    "over", "off", "out", "left", "right", "forward", "back", "top", "bottom", "side", "front",
    "behind", "near", "next", "it", "spoon", "towel", "carrot", "plate", "green", "yellow",
    "red", "blue", "white", "black", "orange", "purple", "block", "cube", "eggplant",
    "basket", "drawer", "cup", "bowl", "pot", "pan", "sink", "table", "cloth", "gripper",
    "knife", "fork", "banana", "corn", "mushroom", "bottle", "can", "lid", "box", "towards",
    "object", "robot", "arm")


def _word_merges(words, table) -> list:
    """BPE merges that build each word left to right (prefix + next character), one word's
    chain after the other, words after a space first. BPE applies the lowest-ranked merge
    first, and a merge starting with the space only applies at a word's start, so those
    words always become one token; a word without the space may come out as two."""
    merges: dict = {}
    for w in sorted(words, key=lambda w: (not w.startswith(" "), -len(w))):
        chars = [table[b] for b in w.encode("utf-8")]
        for k in range(1, len(chars)):
            merges.setdefault(("".join(chars[:k]), chars[k]), None)
    return list(merges)


def build_tiny_tokenizer(num_action_tokens: int = 32, words: bool = False):
    """Byte-level tokenizer for the tiny and small configs: ids 0..255 are bytes, then
    ``TINY_SPECIAL_TOKENS`` (256..263), then ``<|reserved_token_i|>`` action tokens.
    ``words=True`` (``small()``'s tokenizer) adds BPE merges after those ids that make the
    template's and common instruction words single tokens ("put carrot on plate": 4 instead
    of 19), below ``SMALL_VOCAB_SIZE``. Built offline with the ``tokenizers`` library;
    returns a PreTrainedTokenizerFast."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    table = _bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    specials = TINY_SPECIAL_TOKENS + [f"<|reserved_token_{i}|>" for i in range(num_action_tokens)]
    vocab.update({s: 256 + i for i, s in enumerate(specials)})  # their ids, not after merges
    merges = []
    if words:
        listed = (list(TEMPLATE_WORDS) + list(INSTRUCTION_VERBS) + ["\n\n"]
                  + [" " + w for w in INSTRUCTION_WORDS])
        merges = _word_merges(listed, table)
        first = 256 + len(specials)
        if first + len(merges) > SMALL_VOCAB_SIZE:
            raise ValueError(f"{len(merges)} word merges do not fit below {SMALL_VOCAB_SIZE}")
        for i, (a, b) in enumerate(merges):
            vocab[a + b] = first + i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    for i, s in enumerate(specials):
        assert tok.token_to_id(s) == 256 + i, s
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
        pad_token="<|pad|>", mask_token="<|mdm_mask|>")


def load_text_tokenizer(directory: str | Path) -> Optional[object]:
    """The checkpoint's ``tokenizer.json`` as a PreTrainedTokenizerFast, or None if absent.
    Only the tokenizer file is read (no tokenizer code, nothing downloaded)."""
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        return None
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(path))
