"""Masked-diffusion decoding of an action chunk (K actions x D tokens, local classes 0..V_a-1).

In the spirit of LLaDA's ``generate.py``. Every strategy starts from a fully masked chunk
(``-1`` = mask) and calls ``logits_fn(classes) -> logits`` once per step, where ``classes`` is
a LongTensor (1, K*D) and ``logits`` a FloatTensor (1, K*D, V_a) over the action classes only.
A committed token is never re-decoded. Per step, for every position:

    x0         = argmax(logits + temperature * Gumbel noise)   (noise in float64; none at T=0)
    confidence = softmax(logits)[x0]                           (float64)

Strategies (``DecodeConfig.strategy``):

- ``vanilla``: LLaDA low-confidence remasking over all K*D positions in ``steps`` steps; step
  s commits the most confident masked positions, ``n // steps`` of them (the first
  ``n % steps`` steps one more).
- ``hierarchical`` (HAD, LLaDA-VLA section 3.2.3, the default): per step the action
  confidence is the sum of its D token confidences (eq. 8), where a token that is already
  committed counts 1.0 (it is known, no longer a prediction). Among the actions that still
  have masked tokens the most confident one is selected; it commits its next share of its
  most confident masked tokens (D split over ``iterations_per_action`` shares, larger
  shares first); every other action stays masked (action-level remask). Each action is
  therefore finished in exactly ``iterations_per_action`` steps: K*iterations steps in all
  (K=5, 2 iterations -> 10 steps). ``steps`` is not used.
- ``parallel_threshold`` (Fast-dLLM): per step commit every masked token whose confidence is
  above ``threshold``, at least the single most confident one. The number of steps varies.

Ties between equal confidences go to the lower position (stable sort), so at temperature 0
a decode is bit-for-bit reproducible on the same device.

``decode(model, obs, config)`` wraps ``model.action_logits`` with a prefix cache: the first
step runs the full forward (prompt + actions) and keeps the prompt K/V; later steps run only
the action positions against the cached prompt. ``prompt_refresh_interval = r > 0`` reruns
the full forward every r steps (r=1: every step, the exact reference; r=0: never).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from typing import Callable, List, Optional

import numpy as np
import torch

STRATEGIES = ("hierarchical", "vanilla", "parallel_threshold")

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class DecodeConfig:
    strategy: str = "hierarchical"
    steps: int = 10  # vanilla only
    iterations_per_action: int = 2  # hierarchical only
    temperature: float = 0.0  # 0 = deterministic argmax
    threshold: float = 0.9  # parallel_threshold only
    prompt_refresh_interval: int = 0  # 0 = never refresh the prefix cache, 1 = exact
    seed: Optional[int] = None  # Gumbel noise seed when temperature > 0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown decoding strategy {self.strategy!r}; "
                             f"valid: {', '.join(STRATEGIES)}")
        self.steps = _as_int("steps", self.steps, minimum=1)
        self.iterations_per_action = _as_int("iterations_per_action",
                                             self.iterations_per_action, minimum=1)
        self.prompt_refresh_interval = _as_int("prompt_refresh_interval",
                                               self.prompt_refresh_interval, minimum=0)
        self.temperature = float(self.temperature)
        if not self.temperature >= 0.0:  # also rejects NaN
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        self.threshold = float(self.threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.seed is not None:
            self.seed = _as_int("seed", self.seed, minimum=0)

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "DecodeConfig":
        """Build from a mapping (e.g. the ``decoding.*`` ROS parameters); None values are
        ignored (default kept), unknown keys are an error."""
        d = {k: v for k, v in (d or {}).items() if v is not None}
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown decoding option(s) {unknown}; valid: {sorted(names)}")
        return cls(**d)


def parse_options(pairs) -> dict:
    """Command-line options: ["strategy=vanilla", "steps=10"] -> {"strategy": "vanilla",
    "steps": 10} (values read as JSON when they parse, else kept as text)."""
    out = {}
    for pair in pairs or ():
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _as_int(name, value, minimum):
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass
class DecodeResult:
    classes: np.ndarray  # (K, D) int64 local classes
    token_confidence: np.ndarray  # (K, D) float32, softmax prob of each token when committed
    action_confidence: np.ndarray  # (K,) float32, sum of its D token confidences (eq. 8)
    forward_passes: int
    steps: int
    timing: dict = field(default_factory=dict)  # ms: vision_ms, decode_ms, total_ms
    committed_per_step: List[int] = field(default_factory=list)
    full_passes: int = 0  # forward passes over prompt + actions (the rest used the cache)


# --------------------------------------------------------------------------- helpers


def split_evenly(n: int, parts: int) -> List[int]:
    """LLaDA's schedule: n // parts each, the first n % parts one more."""
    base, extra = divmod(n, parts)
    return [base + 1 if i < extra else base for i in range(parts)]


def predict(logits: torch.Tensor, temperature: float = 0.0,
            generator: Optional[torch.Generator] = None):
    """(N, V) logits -> x0 (N,) long and its confidence (N,) float64."""
    logits = logits.to(torch.float64)
    if temperature > 0:
        # LLaDA's exp(logits) / (-log u)^T, in log space (no overflow): same argmax.
        u = torch.rand(logits.shape, generator=generator, dtype=torch.float64,
                       device=logits.device).clamp_min_(1e-300)
        x0 = torch.argmax(logits - temperature * torch.log(-torch.log(u)), dim=-1)
    else:
        x0 = torch.argmax(logits, dim=-1)
    p = torch.softmax(logits, dim=-1)
    return x0, torch.gather(p, -1, x0[:, None])[:, 0]


def _top(conf: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest values; ties go to the lower index."""
    return torch.sort(conf, descending=True, stable=True).indices[:k]


class _Chunk:
    """The chunk being decoded: classes (-1 = mask) and the confidence of each commit."""

    def __init__(self, logits_fn: LogitsFn, K: int, D: int, temperature: float,
                 generator: Optional[torch.Generator], device):
        self.logits_fn, self.K, self.D = logits_fn, K, D
        self.temperature, self.generator = temperature, generator
        self.classes = torch.full((1, K * D), -1, dtype=torch.long, device=device)
        self.conf = torch.zeros(K * D, dtype=torch.float64, device=device)
        self.committed_per_step: List[int] = []

    @property
    def masked(self) -> torch.Tensor:
        return self.classes[0] < 0

    def step(self):
        """One forward: x0 and confidences, with -inf at the committed positions."""
        logits = self.logits_fn(self.classes)
        x0, conf = predict(logits[0], self.temperature, self.generator)
        return x0, torch.where(self.masked, conf, torch.full_like(conf, -torch.inf))

    def commit(self, idx: torch.Tensor, x0: torch.Tensor, conf: torch.Tensor):
        assert bool(self.masked[idx].all()), "re-decoding a committed token"
        self.classes[0, idx] = x0[idx]
        self.conf[idx] = conf[idx]
        self.committed_per_step.append(int(idx.numel()))

    def result(self) -> DecodeResult:
        assert not bool(self.masked.any()), "chunk not fully decoded"
        tok = self.conf.reshape(self.K, self.D).cpu().numpy().astype(np.float32)
        steps = len(self.committed_per_step)
        return DecodeResult(
            classes=self.classes.reshape(self.K, self.D).cpu().numpy().astype(np.int64),
            token_confidence=tok, action_confidence=tok.sum(axis=1),
            forward_passes=steps, steps=steps,
            committed_per_step=list(self.committed_per_step))


# --------------------------------------------------------------------------- strategies


def decode_vanilla(logits_fn: LogitsFn, K: int, D: int, steps: int = 10,
                   temperature: float = 0.0, generator=None, device="cpu") -> DecodeResult:
    """LLaDA low-confidence remasking; more steps than tokens are capped at one per token."""
    chunk = _Chunk(logits_fn, K, D, temperature, generator, device)
    for k in split_evenly(K * D, min(steps, K * D)):
        x0, conf = chunk.step()
        chunk.commit(_top(conf, k), x0, conf)
    return chunk.result()


def decode_hierarchical(logits_fn: LogitsFn, K: int, D: int, iterations_per_action: int = 2,
                        temperature: float = 0.0, generator=None, device="cpu") -> DecodeResult:
    """HAD: one action per step, chosen by its confidence sum; committed tokens count 1.0."""
    chunk = _Chunk(logits_fn, K, D, temperature, generator, device)
    shares = split_evenly(D, min(iterations_per_action, D))
    done = [0] * K  # iterations spent on each action
    for _ in range(K * len(shares)):
        x0, conf = chunk.step()
        per_token = torch.where(chunk.masked, conf, torch.ones_like(conf)).reshape(K, D)
        action_conf = per_token.sum(dim=1)
        action_conf[~chunk.masked.reshape(K, D).any(dim=1)] = -torch.inf  # finished actions
        a = int(_top(action_conf, 1))
        local = _top(conf.reshape(K, D)[a], shares[done[a]])  # -inf (committed) sort last
        chunk.commit(a * D + local, x0, conf)
        done[a] += 1
    return chunk.result()


def decode_parallel_threshold(logits_fn: LogitsFn, K: int, D: int, threshold: float = 0.9,
                              temperature: float = 0.0, generator=None,
                              device="cpu") -> DecodeResult:
    """Fast-dLLM: commit every masked token above ``threshold``, at least the top one."""
    chunk = _Chunk(logits_fn, K, D, temperature, generator, device)
    while bool(chunk.masked.any()):
        x0, conf = chunk.step()
        idx = torch.nonzero(conf > threshold)[:, 0]
        if idx.numel() == 0:
            idx = _top(conf, 1)
        chunk.commit(idx, x0, conf)
    return chunk.result()


def make_generator(seed: Optional[int], device="cpu") -> Optional[torch.Generator]:
    """A seeded generator for the Gumbel noise, or None (torch's global RNG)."""
    if seed is None:
        return None
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


def run_strategy(logits_fn: LogitsFn, K: int, D: int, config: DecodeConfig,
                 device="cpu") -> DecodeResult:
    """Decode one chunk with ``config.strategy`` against any logits function."""
    gen = make_generator(config.seed, device) if config.temperature > 0 else None
    common = dict(temperature=config.temperature, generator=gen, device=device)
    if config.strategy == "vanilla":
        return decode_vanilla(logits_fn, K, D, steps=config.steps, **common)
    if config.strategy == "hierarchical":
        return decode_hierarchical(logits_fn, K, D,
                                   iterations_per_action=config.iterations_per_action, **common)
    return decode_parallel_threshold(logits_fn, K, D, threshold=config.threshold, **common)


# --------------------------------------------------------------------------- the model


class CachedLogits:
    """``logits_fn`` around ``model.action_logits`` with a prefix (prompt K/V) cache.

    Call i (0-based) runs the full forward and refreshes the cache when there is no cache
    yet or when ``refresh_interval > 0`` and ``i % refresh_interval == 0``; otherwise only
    the action positions run, attending to the cached prompt K/V.
    """

    def __init__(self, model, obs, refresh_interval: int = 0):
        self.model, self.obs, self.refresh_interval = model, obs, int(refresh_interval)
        self.cache = None
        self.forward_passes = 0
        self.full_passes = 0

    def __call__(self, classes: torch.Tensor) -> torch.Tensor:
        r, i = self.refresh_interval, self.forward_passes
        self.forward_passes += 1
        if self.cache is None or (r > 0 and i % r == 0):
            self.full_passes += 1
            keep = r != 1  # r=1 never uses the cache: do not build it
            logits, cache = self.model.action_logits(self.obs, classes, cache=None,
                                                     update_cache=keep)
            self.cache = cache if keep else None
            return logits
        logits, _ = self.model.action_logits(self.obs, classes, cache=self.cache)
        return logits


def _device_of(model) -> torch.device:
    device = getattr(model, "device", None)
    if device is None:
        device = next(model.parameters()).device
    return torch.device(device)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode(model, obs, config: Optional[DecodeConfig] = None) -> DecodeResult:
    """Decode one action chunk for a prepared observation (``model.prepare``). A model
    trained autoregressively (``config.autoregressive``, the baseline) always decodes left
    to right with a KV cache, whatever the strategy: it was never trained on masks."""
    config = config or DecodeConfig()
    device = _device_of(model)
    K, D = int(model.config.chunk_size), int(model.config.action_dim)
    if getattr(model.config, "autoregressive", False):
        return _decode_autoregressive(model, obs, K, D, device)
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        fn = CachedLogits(model, obs, config.prompt_refresh_interval)
        result = run_strategy(fn, K, D, config, device=device)
        _sync(device)
        decode_ms = (time.perf_counter() - start) * 1e3
    result.forward_passes, result.full_passes = fn.forward_passes, fn.full_passes
    result.timing = {"vision_ms": 0.0, "decode_ms": decode_ms, "total_ms": decode_ms}
    return result


def _decode_autoregressive(model, obs, K: int, D: int, device) -> DecodeResult:
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        classes, conf, passes = model.generate_autoregressive(obs)
        _sync(device)
        decode_ms = (time.perf_counter() - start) * 1e3
    tok = conf[0].reshape(K, D).cpu().numpy().astype(np.float32)
    return DecodeResult(classes=classes[0].reshape(K, D).cpu().numpy().astype(np.int64),
                        token_confidence=tok, action_confidence=tok.sum(axis=1),
                        forward_passes=passes, steps=passes,
                        timing={"vision_ms": 0.0, "decode_ms": decode_ms,
                                "total_ms": decode_ms},
                        committed_per_step=[1] * passes, full_passes=1)


def generate(model, image_rgb: np.ndarray, instruction: str,
             config: Optional[DecodeConfig] = None, state=None) -> DecodeResult:
    """``model.prepare`` (vision tower, projector, prompt embeddings; the robot state for a
    model that takes one) + ``decode``, timed."""
    device = _device_of(model)
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        obs = (model.prepare(image_rgb, instruction) if state is None
               else model.prepare(image_rgb, instruction, state))
        _sync(device)
        vision_ms = (time.perf_counter() - start) * 1e3
    result = decode(model, obs, config)
    result.timing["vision_ms"] = vision_ms
    result.timing["total_ms"] = vision_ms + result.timing["decode_ms"]
    return result
