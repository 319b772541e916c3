"""benchmarks/decode_latency.py runs end to end and reports what each row counts (forward
passes, full passes, tokens per forward, bounds); timings themselves are not asserted."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "decode_latency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("decode_latency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_count_passes_per_strategy_and_cache_mode(bench, tiny_checkpoint, tmp_path):
    assert bench.main(["--checkpoint", str(tiny_checkpoint), "--runs", "2", "--warmup", "0",
                       "--threads", "1", "--out-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "decode_latency_checkpoint_cpu.json").read_text())
    rows = {(r["strategy"], r["cache"]): r for r in report["latency"]}
    assert len(rows) == 3 * 3 + 1
    for strategy in ("hierarchical", "vanilla"):
        # 10 steps; the prompt runs every step, once, or every 5th step
        for cache, full in (("exact (no cache)", 10), ("prefix cache", 1), ("refresh every 5", 2)):
            r = rows[(strategy, cache)]
            assert (r["forward_passes"], r["full_passes"]) == (10, full), (strategy, cache)
            assert r["tokens_per_forward"] == pytest.approx(3.5)
    ar = rows[("autoregressive (causal + KV cache)", "KV cache")]
    assert (ar["forward_passes"], ar["full_passes"], ar["tokens_per_forward"]) == (35, 1, 1.0)
    for r in report["latency"]:
        assert r["runs"] == 2 and r["bound_ms"] > 0 and r["median_ms"] > 0
        assert r["x_bound"] == pytest.approx(r["median_ms"] / r["bound_ms"])
    # more passes over the prompt can only raise the floor
    assert (rows[("hierarchical", "exact (no cache)")]["bound_ms"]
            > rows[("hierarchical", "refresh every 5")]["bound_ms"]
            > rows[("hierarchical", "prefix cache")]["bound_ms"])
    meta = report["meta"]
    assert meta["prompt_len"] > meta["action_tokens"] == 35 and meta["bandwidth_GBps"] > 0
    table = (tmp_path / "decode_latency_checkpoint_cpu.md").read_text()
    assert "| hierarchical | prefix cache |" in table and "median / bound" in table


def test_bad_arguments_are_refused(bench):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--runs", "0"])
    assert exc.value.code == 2
