"""Shared test set-up: offline, one torch thread, one tiny checkpoint per session."""
import os

# Before torch is imported anywhere: tests run several processes on small machines, where
# OpenMP spin-waiting across oversubscribed cores made tiny models up to 50x slower.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny LLaDA-VLA overfit on training.synthetic_examples(), trained once per session
    (make_tiny_checkpoint keeps training until every token is reproduced)."""
    from llada_vla_ros.training import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp("llada_tiny") / "tiny_ckpt")
