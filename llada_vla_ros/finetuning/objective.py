"""The training objective: masked-diffusion loss with localized special-token
classification (LSC, paper eq. 5-7) over (image, instruction, action chunk) examples.

The loss is written as a (sum, count) pair: sums over examples add up, so a global batch
split across processes and micro-batches gives exactly the loss of the whole batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

LOSS_TYPES = ("lsc", "full_vocab")


@dataclass
class Example:
    """One training sample: uint8 HxWx3 RGB image, instruction, (K, D) actions (robot units)
    and the robot state at the image (``kinematics.robot_state``; None when the recording
    has none: models with ``state_dim`` need it)."""

    image: np.ndarray
    instruction: str
    actions: np.ndarray
    state: Optional[np.ndarray] = None


def as_example(x) -> Example:
    if isinstance(x, Example):
        return x
    if isinstance(x, dict):
        return Example(x["image"], x["instruction"], np.asarray(x["actions"]), x.get("state"))
    image, instruction, actions, *state = x
    return Example(image, instruction, np.asarray(actions), state[0] if state else None)


# ----------------------------------------------------------------------------- loss (eq. 5-7)

def localize_labels(token_ids: torch.Tensor, action_token_ids: Sequence[int]) -> torch.Tensor:
    """Eq. 6: vocabulary ids -> local class 0..V_a-1 for action tokens, -100 otherwise."""
    table = torch.as_tensor(list(action_token_ids), device=token_ids.device)
    hit = token_ids[..., None] == table
    return torch.where(hit.any(-1), hit.long().argmax(-1), torch.full_like(token_ids, -100))


def masked_diffusion_loss(logits: torch.Tensor, labels: torch.Tensor, masked: torch.Tensor,
                          t: torch.Tensor, reweight: bool = True) -> torch.Tensor:
    """Cross-entropy over the masked positions whose label is not -100.

    logits (B, L, C), labels (B, L) in 0..C-1 or -100, masked (B, L) bool, t (B,) mask ratio.
    reweight=True: eq. 5, the sum of CE / t over masked positions divided by the number of
    labelled positions (LLaDA's estimator); False: eq. 7, the mean CE over masked positions.
    Positions labelled -100 count in neither.
    """
    total, count = masked_diffusion_sums(logits, labels, masked, t, reweight)
    return total / count.clamp(min=1)


def masked_diffusion_sums(logits, labels, masked, t, reweight: bool = True) -> tuple:
    """(sum, count) with ``masked_diffusion_loss = sum / count``: sums over examples add up,
    so a batch split across processes and micro-batches gives the same loss (finetuning)."""
    labelled = (labels != -100).sum()
    labels = torch.where(masked, labels, torch.full_like(labels, -100))
    ce = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                         reduction="none").view(labels.shape)
    keep = (labels != -100).float()
    if reweight:
        return (ce * keep / t[:, None]).sum(), labelled
    return (ce * keep).sum(), keep.sum()


def lsc_loss(local_logits: torch.Tensor, token_labels: torch.Tensor, masked: torch.Tensor,
             t: torch.Tensor, action_token_ids: Sequence[int], reweight: bool = True):
    """LSC (eq. 6-7 with eq. 5 weighting): labels mapped to local classes, CE over the V_a
    action logits, non-action labels ignored."""
    return masked_diffusion_loss(local_logits, localize_labels(token_labels, action_token_ids),
                                 masked, t, reweight)


def sample_mask(batch: int, length: int, eps: float, generator: torch.Generator):
    """t ~ U(eps, 1) per sample; each position masked with probability t, independently
    (LLaDA's forward process). A row may have no masked position: forcing one there would
    weight it by 1/t (up to 1/eps) and bias the estimator of eq. 5 upwards."""
    t = eps + (1.0 - eps) * torch.rand(batch, generator=generator)
    return torch.rand(batch, length, generator=generator) < t[:, None], t


def diffusion_step_loss(model, pixel_values, prompts, classes,
                        generator: torch.Generator, loss_type: str = "lsc", eps: float = 1e-3,
                        reweight: bool = True) -> torch.Tensor:
    """Mask the (B, K*D) target classes at random and return the loss of one batch."""
    masked, t = sample_mask(classes.shape[0], classes.shape[1], eps, generator)
    total, count = diffusion_sums(model, model, pixel_values, prompts, classes,
                                  masked.to(classes.device), t.to(classes.device), loss_type,
                                  reweight)
    return total / count.clamp(min=1)


def diffusion_sums(forward, model, images, prompts, classes, masked, t,
                   loss_type: str = "lsc", reweight: bool = True) -> tuple:
    """(sum, count) of the masked-diffusion loss of (B, K*D) target ``classes`` with the
    positions ``masked`` (B, K*D) masked at ratio ``t`` (B,). ``forward`` runs the model
    (the model itself, or its DDP/FSDP/DeepSpeed/LoRA wrapper); ``model`` is the bare one.
    An autoregressive model gets the cross-entropy of every token given the true earlier
    ones (teacher forcing; ``masked`` and ``t`` are not used)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    targets = model.classes_to_ids(classes)  # vocabulary ids of the true action tokens
    if model.config.autoregressive:  # next-token prediction of every token: no mask
        masked, t = torch.ones_like(masked), torch.ones_like(t)
        inputs = targets
    else:
        inputs = model.classes_to_ids(torch.where(masked, torch.full_like(classes, -1),
                                                  classes))
    logits = forward(images, prompts, inputs, localized=(loss_type == "lsc"))
    if loss_type == "lsc":
        targets = localize_labels(targets, model.config.action_token_ids)
    return masked_diffusion_sums(logits, targets, masked, t, reweight)
