"""Worker of test_fsdp_cpu.py: one training step of the tiny model sharded with torch's
FSDP2 (fully_shard on every Block and SiglipEncoderLayer, then the root), on CPU with gloo.
Run under torchrun it saves the global loss and the gathered weights to argv[1]."""
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from llada_vla_ros.finetuning.loop import position_masks
from llada_vla_ros.model import LladaVlaConfig, LladaVlaForActions, build_tiny_tokenizer
from llada_vla_ros.training import (TINY_STATS, action_tokenizer_for, diffusion_sums,
                                    synthetic_examples)


def run(world, rank):
    """Loss of the 4 synthetic examples (split over the processes) and the weights after
    one AdamW step."""
    torch.manual_seed(0)
    m = LladaVlaForActions(LladaVlaConfig.tiny())
    m.tokenizer = build_tiny_tokenizer()
    for n, p in m.named_parameters():
        if "post_layernorm" in n:  # unused (features come before it)
            p.requires_grad_(False)
    tok = action_tokenizer_for(m.config, TINY_STATS, "t")
    ex = synthetic_examples(tok)
    core = m
    if world > 1:
        for mod in m.modules():
            if type(mod).__name__ in LladaVlaForActions._no_split_modules:
                fully_shard(mod)
        fully_shard(m)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    G = 4
    micro = G // world
    pos = list(range(rank * micro, (rank + 1) * micro))
    batch = [ex[i] for i in pos]
    masked, t, _ = position_masks(0, pos, 35, 1e-3, 0)
    images = [core.preprocess(e.image) for e in batch]
    prompts = [core.prompt_ids(e.instruction) for e in batch]
    classes = torch.stack([torch.as_tensor(tok.encode(e.actions).reshape(-1)) for e in batch])
    s, n = diffusion_sums(m, core, images, prompts, classes, masked, t)
    loss = s / (G * 35)
    (loss * world).backward()   # FSDP averages gradients over the processes
    opt.step()
    total = loss.detach().clone()
    if world > 1:
        dist.all_reduce(total)
    sd = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v)
          for k, v in m.state_dict().items()}
    return float(total), sd

if __name__ == "__main__":
    dist.init_process_group("gloo")
    loss, sd = run(dist.get_world_size(), dist.get_rank())
    if dist.get_rank() == 0:
        torch.save({"loss": loss, "sd": sd}, sys.argv[1])
    dist.barrier()
    dist.destroy_process_group()
    # torch 2.13 + gloo on CPU: about 1 exit in 15 aborts in a static destructor after
    # destroy_process_group ("terminate called without an active exception", SIGABRT), after
    # all work is done and saved. Leave without running the C++ static destructors.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
