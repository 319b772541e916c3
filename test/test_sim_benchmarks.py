"""What the learning benchmarks conclude from an episode or a record (benchmarks/*.py are
scripts run for figures, docs/results.md; this checks their judgement cheaply, with the real
simulator and the real safety path)."""
import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import failure_modes  # noqa: E402
import label_stats  # noqa: E402
import open_loop  # noqa: E402
import sim_runs  # noqa: E402
import sim_success  # noqa: E402

from llada_vla_ros.policy import ActionChunk  # noqa: E402


class Constant:
    """A policy that always asks for the same action."""

    def __init__(self, action):
        self.action = np.asarray(action, np.float32)

    def predict(self, image, instruction):
        return ActionChunk(actions=np.tile(self.action, (5, 1)),
                           confidence=np.ones(5, np.float32), inference_ms=0.0,
                           model_id="constant")


@pytest.fixture(scope="module")
def env():
    from llada_vla_ros.sim.env import WidowXTabletopEnv

    return WidowXTabletopEnv(task="carrot", layout="grid", image_size=(64, 48))


def test_episode_endings(env):
    from llada_vla_ros.sim.expert import expert_for

    expert = failure_modes.episode(env, expert_for(env), 0, 20, 0.004)
    assert expert["ending"] == "success" and expert["slipped"] == [], expert
    # the expert lets go once, over the plate: within its radius, above the table
    [(step, dxy_mm, z_mm)] = expert["released"]
    assert step <= expert["steps"] and dxy_mm < 50 and z_mm > 10
    assert failure_modes.cause(expert) is None
    # the expert closes on the object: right above its origin, at its grasp height, the
    # fingers across it, and never pushes it into the table
    close_step, close_dxy_mm, close_dz_mm, close_yaw_deg = expert["first_close"]
    assert close_step < step and close_dxy_mm < 10 and abs(close_dz_mm) < 30, expert
    assert abs(close_yaw_deg) < 2 and expert["pressed"] is None, expert
    still = failure_modes.episode(env, Constant([0, 0, 0, 0, 0, 0, 1]), 0, 20, 0.004)
    assert still["ending"] == "stalled" and not still["grasped"] and still["steps"] == 60
    assert still["released"] == still["slipped"] == []
    assert failure_modes.cause(still) == "never grasped"
    assert still["first_close"] is None
    shut = failure_modes.episode(env, Constant([0, 0, 0, 0, 0, 0, 0]), 0, 20, 0.004)
    assert shut["first_close"][0] == 1 and shut["first_close"][1] > 50  # at the start pose
    # turning the wrist while closing: the yaw error grows by what the arm turned
    turn = failure_modes.episode(env, Constant([0, 0, 0, 0, 0, 0.2, 0]), 0, 20, 0.004)
    assert 5 < abs(turn["first_close"][3] - shut["first_close"][3]) < 12, (turn, shut)
    assert failure_modes.median_close_mm([expert, still, shut]) == round(
        (close_dxy_mm + shut["first_close"][1]) / 2, 1)
    # the same release, had the task not been done; a later slip would be the cause
    assert failure_modes.cause({**expert, "ending": "still moving"}) == "released off target"
    slip_after = {**expert, "ending": "stalled", "slipped": [[step + 3, 0.0, 40.0]]}
    slip_before = {**expert, "ending": "stalled", "slipped": [[step - 3, 0.0, 40.0]]}
    assert failure_modes.cause(slip_after) == "slipped from closed fingers"
    assert failure_modes.cause(slip_before) == "released off target"
    assert failure_modes.cause({**slip_before, "released": [], "slipped": []}) == (
        "held at the end")
    counts = failure_modes.causes([expert, still, slip_after])
    assert counts == {"never grasped": 1, "slipped from closed fingers": 1,
                      "released off target": 0, "held at the end": 0}
    # rolling the wrist on and on: the target leaves what the arm can reach, the safety
    # layer refuses it (and every roll after it) and the arm holds still
    turning = failure_modes.episode(env, Constant([0, 0, 0, 0.3, 0, 0, 1]), 0, 20, 0.004)
    assert turning["ending"] == "held by the safety layer", turning
    assert "IK failed" in turning["first_refusal"][1]


class StraightDown:
    """Over the object's origin, then straight down to its grasp height, the gripper's yaw
    as it is (privileged state: one move per chunk)."""

    def __init__(self, env):
        self.env = env

    def predict(self, image, instruction):
        world = self.env.world
        d = world.scene_state().source_pos - world.ee_pose()[:3, 3]
        over = np.hypot(d[0], d[1]) < 0.01
        d[2] = world.task.source.grasp_z - world.ee_pose()[2, 3] if over else 0.0
        actions = np.zeros((5, 7), np.float32)
        actions[0, :3], actions[:, 6] = np.clip(d, -0.03, 0.03), 1.0
        return ActionChunk(actions=actions, confidence=np.ones(5, np.float32),
                           inference_ms=0.0, model_id="straight down")


def test_fingers_coming_down_on_the_object(env):
    """At the start pose's yaw the open fingers straddle grid layout 0's carrot; layout 1's
    lies ~83 degrees from that (the expert turns the wrist there): coming straight down
    without turning, the fingers go down beside it in 0 and land on it in 1 and push it."""
    beside = failure_modes.episode(env, StraightDown(env), 0, 20, 0.004)
    on_top = failure_modes.episode(env, StraightDown(env), 1, 20, 0.004)
    assert beside["pressed"] is None, beside
    step, dxy_mm, height_mm = on_top["pressed"]
    assert dxy_mm < 10 and height_mm > 15, on_top  # stopped above the object, over it


def test_open_loop_sorts_wrist_turns_by_direction():
    # (recorded, policy) summed yaw, degrees: one agreeing turn, one turned the wrong way,
    # one still, one turning where the demonstrator did not
    turns = open_loop.yaw_turn([[10, 9], [-10, 8], [0, 1], [1, -20]], 5.0)
    assert turns["counts"] == [[0, 0, 1], [1, 1, 0], [0, 0, 1]]
    assert turns["agrees"] == 0.5 and turns["correlation"] < 0.5
    # of the two chunks where the recording turns: one the same way, one the other way
    assert turns["of_turning"] == {"right": 0.5, "wrong": 0.5, "none": 0.0}
    same = open_loop.yaw_turn([[-30, -28], [12, 11], [2, -3]], 5.0)
    assert same["agrees"] == 1.0 and same["correlation"] > 0.99
    assert same["of_turning"] == {"right": 1.0, "wrong": 0.0, "none": 0.0}
    still = open_loop.yaw_turn([[-30, 2], [40, 41], [20, -1], [0, 30]], 5.0)["of_turning"]
    assert still == {"right": 1 / 3, "wrong": 0.0, "none": 2 / 3}


def test_open_loop_reads_the_bags_as_the_checkpoint_was_trained(tmp_path):
    """A model trained on labels read one frame ahead is compared with labels read so."""
    assert open_loop.trained_gripper_label(tmp_path) == "step"  # no training log
    log = tmp_path / "train_log.json"
    log.write_text('{"args": {"lr": 0.001}}')  # from before the option
    assert open_loop.trained_gripper_label(tmp_path) == "step"
    log.write_text('{"args": {"gripper_label": "ahead"}}')
    assert open_loop.trained_gripper_label(tmp_path) == "ahead"


def test_run_names_and_the_success_table():
    assert sim_runs.recipe_tag([]) == "-data2"  # data version 2 (docs/results.md section 5)
    assert sim_runs.recipe_tag(["--lr", "1e-3"]) == "-lr-1e-3-data2"
    # a JSON option keeps its keys and values, not its braces and quotes
    assert (sim_runs.recipe_tag(["--config", 'vision_config={"image_size":96}'])
            == "-config-vision_configimage_size96-data2")

    def summary(successes, episodes, grasps):
        return {"summary": {"successes": successes, "episodes": episodes,
                            "success_rate": successes / episodes, "wilson_95": [0.0, 0.5],
                            "grasp_rate": grasps / episodes}}

    record = {"demos_per_task": 10, "train_seed": 0, "steps": 100, "lr": 1e-3,
              "random_shift": 4, "training_seconds": 120.0, "data": 2,
              "final_val": {"loss": 1.5, "token_accuracy": 0.4},
              "evaluations": {f"{t}/random": summary(1, 4, 2) for t in sim_success.TASKS}}
    table = sim_success.markdown({"runs": {"r": record}, "cpu_seconds": 3600})
    row = table.splitlines()[2]
    assert "| lr 0.001, shift 4 px, 1 thread(s) | 2 | 1.500 / 40.0 |" in row
    assert row.count("25.0 (0-50)") == 4 and row.count("not run") == 4 + 1  # grid not run
    assert row.endswith("| 50, - |")
    record["train_options"] = ["--init", "small", "--config", "state_dim=10", "depth=2",
                               "--max-minutes", "118"]
    row = sim_success.markdown({"runs": {"r": record}, "cpu_seconds": 3600}).splitlines()[2]
    assert "| lr 0.001, shift 4 px, 1 thread(s), state_dim 10, depth 2 | 2 |" in row
    record["demo_rotation_noise"] = [0.0, 0.0, 0.004]
    row = sim_success.markdown({"runs": {"r": record}, "cpu_seconds": 3600}).splitlines()[2]
    assert "depth 2, demos' roll/pitch/yaw noise 0/0/0.004 rad | 2 |" in row
    del record["data"]  # recorded before the data had a version: the first
    row = sim_success.markdown({"runs": {"r": record}, "cpu_seconds": 3600}).splitlines()[2]
    assert "0.004 rad, data 1 (early gripper labels) | 2 |" in row
    record["train_options"] += ["--gripper-label", "ahead"]  # the bags read another way
    row = sim_success.markdown({"runs": {"r": record}, "cpu_seconds": 3600}).splitlines()[2]
    assert "state_dim 10, depth 2, gripper_label ahead, demos' roll" in row
    # demonstrations collected with other noise never share a run (or its cache) with the
    # default ones, whose names stay as they were
    args = argparse.Namespace(
        config="small", tasks=["carrot"], steps=100, train_options=["--lr", "1e-3"],
        rotation_noise=None, after_success=None)
    assert sim_success.run_name(args, 50, 1) == "small-carrot-n50-steps100-lr-1e-3-data2-seed1"
    args.rotation_noise = (0.0, 0.0, 0.004)
    assert sim_success.run_name(args, 50, 1) == (
        "small-carrot-n50-steps100-lr-1e-3-data2-rot0,0,0.004-seed1")
    args.rotation_noise, args.after_success = None, 0  # demonstrations ending at the success
    assert sim_success.run_name(args, 50, 1) == (
        "small-carrot-n50-steps100-lr-1e-3-data2-after0-seed1")
    record["demo_after_success"] = 0
    row = sim_success.markdown({"runs": {"r": record}, "cpu_seconds": 3600}).splitlines()[2]
    assert "0.004 rad, demos end 0 steps past the success, data 1" in row


def test_demonstrations_ending_at_the_success_are_cached_apart(tmp_path, monkeypatch):
    """sim_success --after-success 0: the bags stop at the first success, in a cache of
    their own (the default's bags, recorded past it, are never taken for them)."""
    monkeypatch.setattr(sim_runs, "WORK", tmp_path)
    frames = {}
    for after in (None, 0):
        bags = sim_runs.demos("carrot", 1, image_size="32x24", after_success=after,
                              log=lambda *a: None)
        assert len(bags) == 1 and Path(bags[0]).name == "carrot_seed0000"
        frames[after] = label_stats.label_stats(bags)["frames"]
    default = "carrot_random_s0_32x24_noise0.002_data2"
    assert sorted(p.name for p in (tmp_path / "demos").iterdir()) == [default,
                                                                      default + "_after0"]
    assert frames[None] - frames[0] == 5  # the same expert episode, its 5 last steps cut
    with pytest.raises(SystemExit):
        sim_success.main(["--after-success", "-1"])


def test_ablation_tables_never_pool_different_budgets():
    import ablations

    def row(steps, seed, wins):
        s = {"episodes": 24, "successes": wins, "success_rate": wins / 24,
             "wilson_95": [0.0, 0.5], "grasp_rate": 0.5, "latency_ms": {"median": 20.0}}
        return {"group": "ar", "label": "LLaDA-VLA (lsc + HAD)", "task": "carrot",
                "demos": 500, "steps": steps, "train_seed": seed, "grid": s, "random": s,
                "final_val": None}
    key = "ar|LLaDA-VLA (lsc + HAD)|carrot|n500|{}-lr-1e-3-data2|{}"
    # seed 1 recorded first (two sweeps, one per core): the table lists seeds in order
    doc = {"rows": {key.format(12000, 1): row(12000, 1, 0), key.format(12000, 0): row(12000, 0, 0),
                    key.format(30000, 0): row(30000, 0, 6),
                    # the same budget on the first data version: a row of its own, marked
                    key.replace("-data2", "").format(30000, 0): row(30000, 0, 1)}}
    lines = [ln for ln in ablations.markdown(doc).splitlines() if "LLaDA-VLA" in ln]
    assert len(lines) == 3, lines
    assert "| 12000 | 0,1 | 0.0 " in lines[0] and "| 30000 | 0 | 25.0 " in lines[2]
    assert "| 30000, data 1 (early gripper labels) | 0 | 4.2 " in lines[1]
    # the peer, never run at these budgets, is listed as such under each
    peer = [ln for ln in ablations.markdown(doc).splitlines() if "autoregressive" in ln]
    assert len(peer) == 3 and all("not yet run" in ln for ln in peer)
    assert "| 12000 | not yet run |" in peer[0] and "| 30000 | not yet run |" in peer[2]
    assert "| 30000, data 1 (early gripper labels) | not yet run |" in peer[1]


def test_recovery_table_labels_rounds_and_pools_layouts():
    import recovery

    def s(wins, n):
        return {"episodes": n, "successes": wins, "success_rate": wins / n,
                "wilson_95": [0.0, 0.5], "grasp_rate": 0.5}
    rows = {"base": {"round": 0, "data": "500 demonstrations", "steps": 0,
                     "grid": s(6, 24), "random": s(11, 50)},
            "stem-r1": {"round": 1, "data": "500 + 362", "steps": 8000, "grid": s(6, 24),
                        "random": s(17, 50), "final_val": {"loss": 1.6, "token_accuracy": 0.4}},
            "stem-control1": {"round": 1, "data": "500", "steps": 8000, "grid": s(8, 24),
                              "random": s(12, 50), "final_val": None}}
    table = recovery.markdown({"runs": {"stem": {"base": "/x/F", "train_options": ["--lr", "3e-4"],
                                                 "rows": rows}}})
    lines = [ln for ln in table.splitlines() if ln.startswith("| ") and "round |" not in ln]
    assert [ln.split(" | ")[0] for ln in lines] == [
        "| base", "| with recoveries (DAgger-style)", "| control (demonstrations only)"]
    assert [ln.split(" | ")[6] for ln in lines] == ["17/74", "23/74", "20/74"]
    assert "`F`" in table and "`--lr 3e-4`" in table


def test_execution_table_has_one_row_per_variant_and_pools_layouts():
    import execution

    todo = execution.variants([1, 5], [0.0, 0.5])
    assert todo == {"receding horizon, 1 action(s) per chunk": {"actions_per_chunk": 1},
                    "receding horizon, 5 action(s) per chunk": {"actions_per_chunk": 5},
                    "temporal ensemble, decay 0": {"ensemble_decay": 0.0},
                    "temporal ensemble, decay 0.5": {"ensemble_decay": 0.5}}

    def s(wins, n, steps):
        return {"episodes": n, "successes": wins, "success_rate": wins / n,
                "wilson_95": [0.0, 0.5], "grasp_rate": 0.5,
                "mean_steps_to_success": steps, "latency_ms": {"median": 21.0}}
    rows = [{"label": label, "task": "carrot", "grid": s(w, 24, 30.0), "random": s(2 * w, 50, 45.0)}
            for label, w in zip(todo, (0, 6, 3, 1))]
    rows[0]["grid"]["mean_steps_to_success"] = rows[0]["random"]["mean_steps_to_success"] = None
    lines = [ln for ln in execution.markdown({"checkpoints": {"F": rows}}).splitlines()
             if ln.startswith("| receding") or ln.startswith("| temporal")]
    assert [ln.split(" | ")[3] for ln in lines] == ["0/74", "18/74", "9/74", "3/74"]
    # steps to success: weighted by each layout's successes (6 x 30 + 12 x 45) / 18 = 40
    assert lines[0].split(" | ")[5] == "-" and lines[1].split(" | ")[5] == "40.0"


def test_ablation_sweep_restricted_to_one_model_trains_only_that_model(tmp_path, monkeypatch):
    """--variants splits a table's trainings between sweeps (one per core)."""
    import ablations

    trained = []
    s = {"episodes": 24, "successes": 1, "success_rate": 1 / 24, "wilson_95": [0.0, 0.2],
         "grasp_rate": 0.5, "latency_ms": {"median": 20.0}}

    def run(args, variant, seed, log=print):
        trained.append((variant, seed))
        return variant, [], ("ckpt", {"training_seconds": 1.0, "evals": []})
    monkeypatch.setattr(ablations, "run", run)
    monkeypatch.setattr(ablations.R, "score", lambda *a, **k: {"grid": s, "random": s})
    monkeypatch.setattr(ablations, "RESULTS", tmp_path / "ablations.json")
    monkeypatch.setattr(ablations, "MARKDOWN", tmp_path / "ablations.md")
    assert ablations.main(["--groups", "table6", "--variants", "chunk3,chunk8",
                           "--seeds", "0"]) == 0
    assert trained == [("chunk3", 0), ("chunk8", 0)]
    table = (tmp_path / "ablations.md").read_text()
    assert table.count("not yet run") == 3  # chunks 1, 5 and 10
    with pytest.raises(SystemExit):
        ablations.main(["--groups", "table6", "--variants", "chunk4"])


def test_two_sweeps_saving_one_results_file_keep_each_others_runs(tmp_path):
    path = tmp_path / "ablations.json"
    first, second = (sim_runs.load_results(path, "rows") for _ in range(2))  # both start
    first["rows"]["a"] = {"steps": 1}
    sim_runs.record(path, first, sim_runs._cpu())
    second["rows"]["b"] = {"steps": 2}
    sim_runs.record(path, second, sim_runs._cpu())
    assert set(sim_runs.load_results(path)["rows"]) == {"a", "b"} == set(second["rows"])
    first["rows"]["a"] = {"steps": 3}  # the first sweep's newer entry wins, b stays
    sim_runs.record(path, first, sim_runs._cpu() - 10.0)
    doc = sim_runs.load_results(path)
    assert doc["rows"] == {"a": {"steps": 3}, "b": {"steps": 2}}
    assert "runs" not in doc  # only the table the benchmark files its entries under
    assert doc["cpu_seconds"] >= 10.0 and doc["machine"]
    assert [p.name for p in tmp_path.iterdir()] == ["ablations.json"]  # no temporary left


def test_success_plot_takes_two_runs_with_as_many_demonstrations(tmp_path):
    """Two budgets at 500 demonstrations (it raised TypeError comparing summaries)."""
    def run(steps, rate):
        s = {"successes": 1, "episodes": 4, "success_rate": rate, "wilson_95": [0.0, 0.5],
             "grasp_rate": 0.5}
        return {"demos_per_task": 500, "steps": steps,
                "evaluations": {f"{t}/{lay}": {"summary": s} for t in sim_success.TASKS
                                for lay in ("random", "grid")}}
    path = tmp_path / "plot.png"
    sim_success.plot({"runs": {"short": run(16000, 0.0), "long": run(72000, 0.4)}}, path)
    assert path.stat().st_size > 1000


def test_label_stats_measure_how_spread_each_dimension_is(tmp_path):
    """The expert's roll/pitch noise spreads those labels over the bins (entropy near
    log 32); without it (--rotation-noise 0,0,Y) they concentrate. The gripper takes two
    values."""
    from llada_vla_ros.sim import collect

    sets = {}
    for name, extra in (("default", []), ("yaw", ["--rotation-noise", "0,0,0.004"])):
        out = tmp_path / name
        # up to the success: with the steps after it (moving away) recorded, the set without
        # roll/pitch noise measured a 1-99 % roll range as wide as the default's (0.028 rad
        # both, three episodes): those few frames decide it
        assert collect.main(["--task", "carrot", "--episodes", "3", "--out", str(out),
                             "--image-size", "32x24", "--noise", "0.002", "--quiet",
                             "--after-success", "0", *extra]) == 0
        sets[name] = label_stats.label_stats(sorted(str(p) for p in out.glob("carrot_seed*")))
    default, yaw = sets["default"], sets["yaw"]
    assert default["frames"] > 50 and yaw["frames"] > 50  # ~27 frames per episode
    for e in (default, yaw):
        assert all(0.0 <= h <= np.log(32) for h in e["entropy_nats"])
        assert e["entropy_nats"][6] <= np.log(2) + 1e-9  # open or closed
    for d in (3, 4):  # roll, pitch
        assert yaw["entropy_nats"][d] < default["entropy_nats"][d] - 0.5
        assert yaw["q99"][d] - yaw["q01"][d] < default["q99"][d] - default["q01"][d]
    table = label_stats.markdown({"sets": {f"carrot {k}": v for k, v in sets.items()}})
    assert table.count("\n") == 4 and "| carrot yaw | " in table
