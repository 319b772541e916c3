"""FSDP on CPU: Accelerate (1.15) enables FSDP only for GPU processes, so its fsdp.yaml is
checked on GPUs; here torch's own FSDP2 shards the model over 2 gloo processes and one
training step matches the unsharded one."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fsdp_worker import run

HERE = Path(__file__).resolve().parent


def test_fsdp2_sharded_step_matches_one_process(tmp_path):
    out = tmp_path / "fsdp.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29523", str(HERE / "fsdp_worker.py"), str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = torch.load(out)
    loss, weights = run(1, 0)
    assert sharded["loss"] == pytest.approx(loss, rel=1e-5)
    assert weights.keys() == sharded["sd"].keys()
    for k in weights:  # one AdamW step of lr 1e-3 from equal gradients up to rounding
        torch.testing.assert_close(sharded["sd"][k], weights[k], rtol=1e-3, atol=2e-3)
