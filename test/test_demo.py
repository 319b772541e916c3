"""`make demo`'s program with the scripted policy (the README's `--model-path scripted`):
simulators + node + recording + offline evaluation, end to end, in a process of its own."""
import subprocess
import sys

from ros_harness import new_domain_id, require_ros, ros_env


def test_demo_with_the_scripted_policy(tmp_path):
    require_ros()
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-c", "import sys; from llada_vla_ros.ros.demo import main; "
         "sys.exit(main(sys.argv[1:]))", "--model-path", "scripted", "--seconds", "5",
         "--out", str(out)],
        env=ros_env(new_domain_id()), cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "=== demo summary ===" in r.stdout
    sent = int(r.stdout.split("commands received:")[1].split()[0])
    assert sent >= 10, r.stdout
    assert (out / "bag" / "metadata.yaml").is_file()
    assert (out / "report" / "report.json").is_file()
