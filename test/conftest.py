"""Shared test set-up: offline, one torch thread, one tiny checkpoint per session."""
import os

# Before torch is imported anywhere: tests run several processes on small machines, where
# OpenMP spin-waiting across oversubscribed cores made tiny models up to 50x slower.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``longest`` first: under scripts/run_tests.sh's two workers the longest
    file then runs beside all the others instead of alone at the end.

    Tests of modules that run ROS graphs between processes (they import ``require_ros``) get
    one rerun when they fail (pytest-rerunfailures; the summary lists every rerun): their
    deadlines are real time over DDS, and beside another worker on two cores a delivery
    now and then comes late (seen: a policy's first 1 Hz diagnostic, a command received
    0.8 s after the camera died). A deterministic failure still fails twice."""
    items.sort(key=lambda item: item.get_closest_marker("longest") is None)
    if config.pluginmanager.hasplugin("rerunfailures"):
        for item in items:
            if getattr(getattr(item, "module", None), "require_ros", None) is not None:
                item.add_marker(pytest.mark.flaky(reruns=1))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny LLaDA-VLA overfit on training.synthetic_examples(), trained once per session
    (make_tiny_checkpoint keeps training until every token is reproduced)."""
    from llada_vla_ros.training import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp("llada_tiny") / "tiny_ckpt")


@pytest.fixture(scope="session")
def tiny_state_checkpoint(tmp_path_factory):
    """A tiny LLaDA-VLA that takes the robot state (``--config state_dim=10``), trained a
    few steps with llada-vla-train on one simulated expert recording (its joint states give
    the state): a real checkpoint of that kind, not a competent one."""
    from llada_vla_ros import finetune
    from llada_vla_ros.sim import collect

    root = tmp_path_factory.mktemp("llada_tiny_state")
    assert collect.main(["--task", "carrot", "--layout", "grid", "--episodes", "1",
                         "--out", str(root / "demos"), "--image-size", "64x48",
                         "--quiet"]) == 0
    bags = sorted(str(p) for p in (root / "demos").iterdir() if p.is_dir())
    ckpt = root / "tiny_state_ckpt"
    assert finetune.main([*bags, "--init", "tiny", "--config", "state_dim=10", "--steps", "20",
                          "--val-split", "0", "--out", str(ckpt), "--quiet"]) == 0
    return ckpt
