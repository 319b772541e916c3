"""llada-vla-train on Accelerate: 2 processes (gloo) give the 1-process loss curve at equal
global batch, resume continues bit for bit, LoRA overfits and merges like peft, gradient
checkpointing and bf16 autocast run, --plan figures, the paper recipe, --seed, streams."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llada_vla_ros.finetune import main
from llada_vla_ros.finetuning.loop import (RECIPES, FitConfig, _Stream, export_state_dict, fit,
                                           total_steps)
from llada_vla_ros.finetuning.lora import add_lora, target_pattern
from llada_vla_ros.finetuning.plan import GIB, plan
from llada_vla_ros.policy.llada import LladaVlaPolicy
from llada_vla_ros.model import LladaVlaConfig, LladaVlaForActions, build_tiny_tokenizer
from llada_vla_ros.training import (TINY_STATS, action_tokenizer_for, count_mismatches,
                                    diffusion_sums, synthetic_examples)
from test_finetune import make_demo_bag

ROOT = Path(__file__).resolve().parents[1]
# 1 process vs 2: the same sums in another order (float32): agreement to ~1e-6 measured
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return [str(make_demo_bag(root / "push", "push the block right",
                              [0.3, 0.1, -0.1, 0.2, 0.15, -0.3], (200, 40, 40), frames=10,
                              closing=True)),
            str(make_demo_bag(root / "lift", "lift the gripper",
                              [-0.2, -0.15, 0.2, -0.1, -0.2, 0.25], (40, 40, 200), frames=10))]


def tiny(seed=0):
    torch.manual_seed(seed)
    model = LladaVlaForActions(LladaVlaConfig.tiny())
    model.tokenizer = build_tiny_tokenizer()
    return model, action_tokenizer_for(model.config, TINY_STATS, "tiny")


def log_of(out):
    return json.loads((Path(out) / "train_log.json").read_text())


COMMON = ["--init", "tiny", "--steps", "6", "--global-batch", "4", "--lr", "3e-3", "--quiet"]


def test_two_processes_give_the_one_process_loss_curve(bags, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*bags, "--out", str(one), "--micro-batch", "2", *COMMON]) == 0  # 1 x 2 x 2
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
         "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", "29517", "-m", "llada_vla_ros.finetune", *bags, "--out",
         str(two), "--micro-batch", "1", *COMMON],  # 2 processes x 1 x 2 accumulation
        capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "on 2 process(es) (DistributedType.MULTI_CPU)" in run.stdout
    a, b = log_of(one), log_of(two)
    assert (a["processes"], a["micro_batch"], a["accumulation"]) == (1, 2, 2)
    assert (b["processes"], b["micro_batch"], b["accumulation"]) == (2, 1, 2)
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=LOSS_RTOL)
    assert a["losses"][-1] < a["losses"][0]
    wa, wb = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:  # Adam turns ~1e-7 gradient differences near 0 into steps of ~lr: loose
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-3, atol=2e-4)
    LladaVlaPolicy.from_pretrained(two)  # the saved result is a checkpoint the node loads


def test_resume_continues_bit_for_bit(bags, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = [*bags, "--init", "tiny", "--steps", "6", "--global-batch", "4", "--micro-batch",
            "2", "--lr", "3e-3", "--save-every", "3", "--seed", "5", "--quiet"]
    assert main([*args, "--out", str(full)]) == 0
    step3 = full / "checkpoints" / "step-3"
    assert (step3 / "trainer_state.json").is_file() and (full / "checkpoints" / "step-6").is_dir()
    shutil.copytree(step3, resumed / "checkpoints" / "step-3")
    assert main([*args, "--out", str(resumed), "--resume", "latest"]) == 0
    a, b = log_of(full), log_of(resumed)
    assert b["resumed_from"].endswith("step-3") and b["losses"] == a["losses"]  # exactly
    wa, wb = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a different global batch would change the data order: refused
    assert main([*args[:-1], "--global-batch", "8", "--out", str(tmp_path / "x"), "--resume",
                 str(step3), "--quiet"]) == 2


def test_lora_overfits_and_merges_like_peft():
    model, tok = tiny(0)
    examples = synthetic_examples(tok)
    lora = add_lora(model, rank=8)
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "mm_projector" in n for n in trainable)
    assert not any("vision_tower" in n and "lora_" in n for n in trainable)  # SigLIP q/k/v
    result = fit(lora, tok, examples, FitConfig(steps=150, lr=1e-2, global_batch=8,
                                                reweight=False, warmup_steps=20),
                 progress=False)
    assert result.losses[-1] < 0.02 * result.losses[0]
    merged = export_state_dict(result)
    reference = lora.merge_and_unload().state_dict()
    assert merged.keys() == reference.keys()
    for k in merged:
        torch.testing.assert_close(merged[k], reference[k], rtol=0, atol=1e-6)
    plain, _ = tiny(1)
    plain.load_state_dict(merged)
    assert count_mismatches(plain.eval(), tok, examples) == 0


def test_lora_from_the_command_line_saves_a_merged_checkpoint(bags, tmp_path):
    out = tmp_path / "lora"
    assert main([*bags, "--init", "tiny", "--out", str(out), "--steps", "3", "--lora-rank",
                 "4", "--lora-modules", "q_proj", "v_proj", "--global-batch", "4",
                 "--quiet"]) == 0
    weights = load_file(out / "model.safetensors")
    assert not any("lora" in k or "base_layer" in k for k in weights)
    assert weights["lm_head.weight"].dtype == torch.bfloat16  # frozen weights kept in bf16
    LladaVlaPolicy.from_pretrained(out)
    with pytest.raises(ValueError, match="unknown LoRA module"):
        target_pattern(["qkv"])


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model, tok = tiny(0)
        if checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        ex = synthetic_examples(tok)[:2]
        images = [model.preprocess(e.image) for e in ex]
        prompts = [model.prompt_ids(e.instruction) for e in ex]
        classes = torch.stack([torch.as_tensor(tok.encode(e.actions).reshape(-1)) for e in ex])
        masked = torch.rand(2, 35, generator=torch.Generator().manual_seed(0)) < 0.5
        s, n = diffusion_sums(model, model, images, prompts, classes, masked,
                              torch.tensor([0.5, 0.5]))
        (s / n).backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()
                      if p.grad is not None})
    assert model.model.layers[0].gradient_checkpointing
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-5, atol=1e-7)


def test_bf16_autocast_runs():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    try:
        acc = Accelerator(cpu=True, mixed_precision="bf16")
        model, tok = tiny(0)
        result = fit(model, tok, synthetic_examples(tok), FitConfig(steps=4, lr=3e-3,
                                                                    global_batch=4),
                     accelerator=acc, progress=False)
        assert all(np.isfinite(result.losses))
        assert next(model.parameters()).dtype == torch.float32  # fp32 master weights
    finally:
        AcceleratorState._reset_state(True)


def test_plan_figures_follow_the_per_parameter_accounting(capsys):
    full = LladaVlaConfig.full()
    fsdp, ddp, lora = plan(full, gpus=8, gpu_gb=80, params=8.4e9)
    assert fsdp.parts["weights+grads+Adam (16 P / N)"] == 16 * 8.4e9 / 8
    assert ddp.parts["weights+grads+Adam (16 P)"] == 16 * 8.4e9
    assert fsdp.fits and not ddp.fits and fsdp.total < 24 * GIB
    _, _, lora1 = plan(full, gpus=1, gpu_gb=24, params=8.4e9)
    assert lora1.parts["frozen bf16 weights (2 P)"] == 2 * 8.4e9 and lora1.fits
    assert 16 * GIB < lora1.total < 24 * GIB
    assert main(["--plan", "--gpus", "8", "--gpu-memory", "80", "--model-params",
                 "8.4e9"]) == 0
    text = capsys.readouterr().out
    assert "FSDP full shard / ZeRO-3 over 8 GPU(s)" in text and "15.65 GiB" in text
    assert "DDP on 8 GPU(s): 128.6 GiB per GPU -> does NOT fit" in text
    assert main(["--plan", "--gpus", "1", "--gpu-memory", "24", "--model-params",
                 "8.4e9"]) == 0
    assert "LoRA rank 16 (+ projector), 1 GPU or DDP: 20.1 GiB per GPU -> fits" in \
        capsys.readouterr().out


def test_paper_recipe_and_epochs():
    from llada_vla_ros.finetune import build_parser, resolve_args

    args = build_parser().parse_args(["b", "--init", "tiny", "--out", "/nonexistent/o",
                                      "--recipe", "paper"])
    resolve_args(args)
    assert (args.lr, args.global_batch, args.epochs, args.chunk_size, args.steps) == (
        2e-5, 128, 3.0, 5, None)
    assert RECIPES["paper"]["warmup_ratio"] == 0.03
    assert total_steps(FitConfig(epochs=3, global_batch=128), 1000) == 24  # ceil(3000 / 128)
    args = build_parser().parse_args(["b", "--init", "tiny", "--out", "/nonexistent/o",
                                      "--recipe", "paper", "--lr", "1e-5"])
    resolve_args(args)
    assert args.lr == 1e-5  # explicit options win


def test_seed_makes_init_tiny_reproducible(bags, tmp_path):
    runs = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert main([*bags, "--init", "tiny", "--out", str(tmp_path / name), "--steps", "1",
                     "--seed", seed, "--quiet"]) == 0
        runs[name] = load_file(tmp_path / name / "model.safetensors")
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


class Stream:
    """An iterable dataset (what a streaming bag reader provides)."""

    def __init__(self, examples):
        self.examples, self.epochs = examples, []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __iter__(self):
        return iter(self.examples)

    def shard(self, num_shards, index):
        return Stream(self.examples[index::num_shards])


def test_iterable_datasets_train_and_shard():
    model, tok = tiny(0)
    data = Stream(synthetic_examples(tok))
    result = fit(model, tok, data, FitConfig(steps=30, lr=3e-3, global_batch=3, reweight=False),
                 progress=False)
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert data.epochs[:3] == [0, 1, 2]  # 4 examples, 3 per step: a new pass every 4/3 steps
    two = _Stream(data, processes=2, index=1)
    assert [e.instruction for e in two.take(3)] == [data.examples[i].instruction
                                                    for i in (1, 3, 1)]
    with pytest.raises(ValueError, match="shard"):
        _Stream(iter(data.examples), processes=2, index=0)
    with pytest.raises(ValueError, match="epochs need"):
        fit(model, tok, data, FitConfig(epochs=1.0), progress=False)


def test_shipped_accelerate_configs():
    import yaml

    cfgs = {p.name: yaml.safe_load(p.read_text())
            for p in (ROOT / "config" / "accelerate").glob("*.yaml")}
    assert cfgs["ddp.yaml"]["distributed_type"] == "MULTI_GPU"
    fsdp = cfgs["fsdp.yaml"]
    assert fsdp["distributed_type"] == "FSDP" and fsdp["mixed_precision"] == "bf16"
    assert set(fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"].split(",")) == set(
        LladaVlaForActions._no_split_modules)
    ds = cfgs["deepspeed_zero3.yaml"]
    zero3 = json.loads((ROOT / ds["deepspeed_config"]["deepspeed_config_file"]).read_text())
    assert zero3["zero_optimization"]["stage"] == 3 and zero3["bf16"]["enabled"] is True
    assert zero3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]


@pytest.mark.skipif(__import__("importlib").util.find_spec("deepspeed") is None,
                    reason="deepspeed is not installed (it builds from source against the "
                           "local torch; see docs/training.md)")
def test_deepspeed_zero3_two_processes(bags, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    run = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(ROOT / "config/accelerate/deepspeed_zero3.yaml"), "--num_processes", "2",
         "--main_process_port", "29519", "-m", "llada_vla_ros.finetune", *bags, "--out",
         str(tmp_path / "ds"), "--micro-batch", "1", *COMMON],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    log = log_of(tmp_path / "ds")
    assert log["processes"] == 2 and log["losses"][-1] < 0.5 * log["losses"][0]
    LladaVlaPolicy.from_pretrained(tmp_path / "ds")
