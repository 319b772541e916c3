"""llada-vla-eval on a bag whose errors against the scripted policy are known in advance."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import llada_vla_ros
from llada_vla_ros import topics
from llada_vla_ros.action_tokenizer import ActionTokenizer, NormStats
from llada_vla_ros.bag import BagWriter, load_episode
from llada_vla_ros.evaluation import compute_metrics, evaluate, main
from llada_vla_ros.policy import ActionChunk, ScriptedPolicy

SEC = 1_000_000_000
OFFSET = np.array([0.001, -0.002, 0.003, 0.01, -0.02, 0.03, 0.0])
FLIPPED = (0, 3)  # frames whose recorded gripper is the opposite of the scripted one
N_FRAMES = 8


def header(stamp_ns):
    return {"stamp": {"sec": stamp_ns // SEC, "nanosec": stamp_ns % SEC}, "frame_id": "cam"}


def make_bag(path, storage="sqlite3", frames=N_FRAMES, shape=(6, 8)):
    """Frame i records the scripted policy's i-th first action + OFFSET (gripper flipped)."""
    table = ScriptedPolicy.default().table
    h, w = shape
    path.parent.mkdir(parents=True, exist_ok=True)
    with BagWriter(path, storage=storage) as bag:
        bag.add_topic(topics.IMAGE, topics.IMAGE_TYPE)
        bag.add_topic(topics.INSTRUCTION, topics.INSTRUCTION_TYPE, latched=True)
        bag.add_topic(topics.ACTION_CHUNK, topics.ACTION_CHUNK_TYPE)
        bag.write_message(topics.INSTRUCTION, 0, {"data": "draw a square"})
        for i in range(frames):
            t = SEC + i * SEC // 5
            image = np.full((h, w, 3), (10 * i) % 256, np.uint8)
            bag.write_message(topics.IMAGE, t, {
                "header": header(t), "height": h, "width": w, "encoding": "rgb8",
                "step": 3 * w, "data": image.ravel()})
            actions = table[(5 * i + np.arange(5)) % len(table)] + OFFSET
            if i in FLIPPED:
                actions[0, 6] = 1.0 - actions[0, 6]
            bag.write_message(topics.ACTION_CHUNK, t + SEC // 50, {
                "header": header(t), "instruction": "draw a square", "horizon": 5,
                "action_dim": 7, "actions": actions.ravel().astype(np.float32),
                "confidence": np.ones(5, np.float32), "inference_ms": 3.0, "model_id": "rec"})


EXPECTED_MAE = np.abs(OFFSET) + np.array([0] * 6 + [len(FLIPPED) / N_FRAMES])
EXPECTED_RMSE = np.abs(OFFSET) + np.array([0] * 6 + [np.sqrt(len(FLIPPED) / N_FRAMES)])
EXPECTED_GRIPPER_ACCURACY = 1 - len(FLIPPED) / N_FRAMES


def check_report(out: Path):
    for name in ("report.json", "report.md", "report.html", "actions.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    assert m["frames"] == N_FRAMES and report["action_source"] == "action_chunk"
    np.testing.assert_allclose(list(m["mae"].values()), EXPECTED_MAE, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(list(m["rmse"].values()), EXPECTED_RMSE, rtol=1e-4, atol=1e-7)
    assert m["gripper_accuracy"] == pytest.approx(EXPECTED_GRIPPER_ACCURACY)
    assert m["token_accuracy"] is None and "not available" in report["token_accuracy_note"]
    assert set(m["latency_ms"]) == {"median", "p90", "max", "mean"}
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert "| gripper |" in (out / "report.md").read_text()
    return report


def test_cli_in_process(tmp_path, capsys):
    make_bag(tmp_path / "bag", storage="mcap")
    out = tmp_path / "report"
    assert main([str(tmp_path / "bag"), "--policy", "scripted", "--out", str(out),
                 "--quiet"]) == 0
    check_report(out)
    assert "gripper accuracy 0.750" in capsys.readouterr().out


def test_cli_subprocess(tmp_path):
    make_bag(tmp_path / "bag")
    out = tmp_path / "report"
    package_parent = Path(llada_vla_ros.__file__).resolve().parents[1]  # same package as here
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(package_parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "llada_vla_ros.evaluation", str(tmp_path / "bag"),
         "--out", str(out), "--max-frames", "100"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    check_report(out)


def test_cli_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llada-vla-eval: error:") and "not found" in err


def test_cli_default_out_and_scripted_csv(tmp_path, monkeypatch):
    make_bag(tmp_path / "bag")
    csv = tmp_path / "table.csv"
    np.savetxt(csv, ScriptedPolicy.default().table, delimiter=",")
    monkeypatch.chdir(tmp_path)
    assert main([str(tmp_path / "bag"), "--policy", f"scripted:{csv}", "--quiet"]) == 0
    report = check_report(tmp_path / "bag_eval")
    assert report["model_id"] == "scripted:table.csv"


def test_metrics_pure_function():
    rec = np.zeros((4, 7))
    rec[:, 6] = [1, 1, 0, 0]
    pred = rec.copy()
    pred[:, 0] = [0.1, -0.1, 0.3, -0.3]
    pred[:, 6] = [0.9, 0.4, 0.6, 0.1]  # frames 1 and 2 on the wrong side of 0.5
    m = compute_metrics(pred, rec, inference_ms=[10, 20, 30, 40, 1000][:4])
    assert m["mae"]["dx"] == pytest.approx(0.2)
    assert m["rmse"]["dx"] == pytest.approx(np.sqrt(0.05))
    assert m["mae"]["dy"] == 0.0
    assert m["gripper_accuracy"] == 0.5
    assert m["latency_ms"]["median"] == 25 and m["latency_ms"]["max"] == 40
    assert m["latency_ms"]["p90"] == pytest.approx(37.0)
    assert m["token_accuracy"] is None
    tokens = np.zeros((4, 7), int)
    other = tokens.copy()
    other[0, :] = 1
    m = compute_metrics(pred, rec, predicted_tokens=tokens, recorded_tokens=other)
    assert m["token_accuracy"] == pytest.approx(0.75)
    assert m["token_accuracy_per_dim"]["gripper"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="N x 7"):
        compute_metrics(pred[:, :6], rec[:, :6])
    with pytest.raises(ValueError, match="no frames"):
        compute_metrics(np.zeros((0, 7)), np.zeros((0, 7)))


class TokenPolicy:
    """Predicts the recorded table exactly, with tokens; a stand-in for LladaVlaPolicy."""

    model_id = "tokens"
    chunk_size = 5

    def __init__(self, tokenizer, wrong_dim=None):
        self.tokenizer = tokenizer
        self.inner = ScriptedPolicy.default()
        self.wrong_dim = wrong_dim

    def predict(self, image, instruction):
        chunk = self.inner.predict(image, instruction)
        tokens = self.tokenizer.encode(chunk.actions)
        if self.wrong_dim is not None:
            tokens[:, self.wrong_dim] = (tokens[:, self.wrong_dim] + 1) % self.tokenizer.num_bins
        return ActionChunk(chunk.actions, chunk.confidence, 1.0, self.model_id, tokens=tokens)


def test_token_accuracy_with_tokenizer(tmp_path):
    make_bag(tmp_path / "bag")
    episode = load_episode(tmp_path / "bag")
    stats = NormStats(q01=[-0.05] * 3 + [-0.25] * 3 + [0], q99=[0.05] * 3 + [0.25] * 3 + [1],
                      mask=[True] * 6 + [False])
    tok = ActionTokenizer(stats)
    report, _ = evaluate(episode, TokenPolicy(tok, wrong_dim=2), progress=False)
    per_dim = report["metrics"]["token_accuracy_per_dim"]
    expected = tok.encode(episode.actions) == tok.encode(
        np.array([ScriptedPolicy.default().table[(5 * i) % 20] for i in range(N_FRAMES)]))
    assert per_dim["dz"] == 0.0  # every dz token was shifted by one class
    assert per_dim["dx"] == pytest.approx(expected[:, 0].mean())
    assert per_dim["gripper"] == pytest.approx(expected[:, 6].mean())
    assert report["token_accuracy_note"] == ""


# --- several bags, streaming, errors first ----------------------------------------------------

def test_several_bags_and_a_directory_of_bags(tmp_path, capsys):
    root = tmp_path / "trials"
    make_bag(root / "a")
    make_bag(root / "b", storage="mcap")
    (root / "b" / "metadata.yaml").unlink()  # a recording that did not finish
    out = tmp_path / "report"
    assert main([str(root), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{root / 'a'}: 8 of 8 frames evaluated" in printed
    assert f"{root / 'b'}: 8 of 8 frames evaluated" in printed and "no metadata.yaml" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["bag"] == "2 bags" and report["metrics"]["frames"] == 2 * N_FRAMES
    assert [b["bag"] for b in report["bags"]] == [str(root / "a"), str(root / "b")]
    for b in report["bags"]:  # the same recording twice: the same errors per bag
        assert b["gripper_accuracy"] == pytest.approx(EXPECTED_GRIPPER_ACCURACY)
    np.testing.assert_allclose(list(report["metrics"]["mae"].values()), EXPECTED_MAE,
                               rtol=1e-4, atol=1e-7)
    assert report["per_frame"]["bag_index"] == [0] * N_FRAMES + [1] * N_FRAMES
    t = report["per_frame"]["t_s"]
    assert t == sorted(t)  # the second bag's time follows the first's
    assert "## Per bag" in (out / "report.md").read_text()
    # the same bags named one by one
    assert main([str(root / "a"), str(root / "b"), "--out", str(tmp_path / "r2"),
                 "--quiet"]) == 0
    again = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert [b["bag"] for b in again["bags"]] == [b["bag"] for b in report["bags"]]
    assert again["metrics"]["mae"] == report["metrics"]["mae"]


def test_bad_policy_is_reported_before_the_bag_is_decoded(tmp_path, capsys, monkeypatch):
    make_bag(tmp_path / "bag")
    from llada_vla_ros.data import episode

    def no_decoding(self, *args):
        raise AssertionError("an image was decoded before the policy was checked")

    monkeypatch.setattr(episode.EpisodeStream, "_decode", no_decoding)
    assert main([str(tmp_path / "bag"), "--policy", str(tmp_path / "no_ckpt"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint directory not found" in err and str(tmp_path / "no_ckpt") in err
    assert main([str(tmp_path / "missing_bag"), "--policy", "/no/ckpt", "--quiet"]) == 2
    assert "missing_bag: bag not found" in capsys.readouterr().err  # both cheap: bag first


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_memory_stays_bounded_while_the_bag_grows(tmp_path, storage):
    """Peak traced memory of evaluating a 240-frame bag is close to that of a 30-frame
    bag: frames stream one at a time (holding them would add 210 x 57.6 KB = 12 MB)."""
    import tracemalloc

    from llada_vla_ros.bag import open_episode
    from llada_vla_ros.evaluation import evaluate_bags

    h, w = 120, 160
    for n in (10, 30, 240):
        make_bag(tmp_path / f"bag{n}", storage=storage, frames=n, shape=(h, w))

    def peak(n):
        tracemalloc.start()
        try:
            evaluate_bags([open_episode(tmp_path / f"bag{n}")], ScriptedPolicy.default(),
                          progress=False)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(10)  # one-time allocations (caches, lazy imports)
    small, big = peak(30), peak(240)
    frame_bytes = h * w * 3
    # what grows: ~1 KB of results per frame; mcap reads 1 MiB chunks
    assert big - small < 0.2 * 210 * frame_bytes, (small, big)
