"""`make demo`'s program with the scripted expert as the policy (no training): sim_world and
policy_node processes over DDS, a task episode, the printed summary, video and report."""
import json
import subprocess
import sys

from ros_harness import new_domain_id, require_ros, ros_env


def test_demo_runs_a_task_through_the_node(tmp_path):
    require_ros()
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-c", "import sys; from llada_vla_ros.ros.demo import main; "
         "sys.exit(main(sys.argv[1:]))", "--model-path", "expert", "--episodes", "1",
         "--task", "stack", "--out", str(out)],
        env=ros_env(new_domain_id()), cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "=== demo summary ===" in r.stdout
    assert "success rate:        1/1" in r.stdout, r.stdout
    assert "policy ready after" in r.stdout  # waited for the node before the episode
    report = json.loads((out / "report.json").read_text())
    assert report["episodes"][0]["success"] and report["mode"] == "through ROS"
    assert (out / "videos" / "stack_seed0.mp4").stat().st_size > 1000
    assert str(out / "videos" / "stack_seed0.mp4") in r.stdout
