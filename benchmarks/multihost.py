"""The policy on another computer: camera frames, latency and control rate across a link.

Two network namespaces joined by a veth pair stand for the robot computer (camera, driver,
a command observer) and the policy computer (policy_node); Fast DDS over UDP with each
shipped profile (config/fastdds*.xml, shared memory removed: the namespaces share
/dev/shm, two computers do not), on an unlimited link and on a link shaped with tc tbf.
Per run: frames/s arriving at the policy, image latency (camera stamp -> arrival), commands/s
at the driver. Needs root, iproute2 and the colcon install space (source scripts/env.sh).

    python benchmarks/multihost.py [--seconds 10] [--out-dir benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))

import netns  # noqa: E402
from ros_harness import NodeProcess, new_domain_id, wait_for  # noqa: E402
from test_multihost import read_arrivals, udp_only  # noqa: E402

PROFILES = {"fastdds.xml": "fastdds.xml",
            "fastdds_lan.xml": "fastdds_lan.xml", "fastdds_lossy.xml": "fastdds_lossy.xml"}
LINKS = {"unlimited veth": "", "100 Mbit/s (tbf)": "100mbit", "30 Mbit/s (tbf)": "30mbit"}
# (profile, link, image transport) runs: every profile with raw frames on every link, and
# compressed frames (JPEG quality 80) on the slow links with the profiles meant for them.
RUNS = [(p, link, "raw") for p in PROFILES for link in LINKS] + [
    (p, link, "compressed") for p in ("fastdds_lan.xml", "fastdds_lossy.xml")
    for link in LINKS]


def run_once(hosts, profile: Path, rate: str, transport: str, seconds: float,
             tmp: Path) -> dict:
    domain = new_domain_id()
    udp = udp_only(profile, tmp / f"{profile.stem}_udp.xml")
    arrivals, diag = tmp / "arrivals.txt", tmp / "diagnostics.json"
    for f in (arrivals, diag):
        f.unlink(missing_ok=True)
    hosts.shape(rate)
    world = {"fps": 30.0, "moving_time": 0.25}
    if transport == "compressed":
        world["jpeg_quality"] = 80
    robot = [NodeProcess("sim_world", domain, tmp, world, profile=udp),
             NodeProcess("recorder", domain, tmp, profile=udp, command=[
                 sys.executable, str(ROOT / "test" / "record_commands.py"), str(arrivals),
                 "--diagnostics", str(diag)])]
    node = NodeProcess("policy_node", domain, tmp, {
        "execute": True, "instruction": "go", "max_image_age": 2.0,
        "image_transport": transport}, netns=hosts.ns, profile=udp)
    try:
        try:
            wait_for(lambda: diag.exists(), 60, what="diagnostics across the link")
        except AssertionError:
            return {"error": "no diagnostics across the link in 60 s"}
        time.sleep(3.0)
        t0 = time.time()
        time.sleep(seconds)
        got = [t for t, _ in read_arrivals(arrivals)] if arrivals.exists() else []
        got = [t for t in got if t > t0]
        d = json.loads(diag.read_text())
    finally:
        node.stop()
        for p in robot:
            p.stop()
        hosts.shape("")
    return {"frames_per_s": float(d.get("image_hz") or 0.0),
            "image_latency_ms": float(d["image_latency_ms_median"]) if d.get(
                "image_latency_ms_median") else None,
            "commands_per_s": (len(got) - 1) / (got[-1] - got[0]) if len(got) > 1 else 0.0,
            "hold_reason": d.get("hold_reason", "")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)
    reason = netns.unavailable()
    if reason:
        print(f"multihost: cannot run: {reason}", file=sys.stderr)
        return 2
    import tempfile
    rows = []
    hosts = netns.TwoHosts()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, link, transport in RUNS:
                r = run_once(hosts, ROOT / "config" / PROFILES[label], LINKS[link], transport,
                             a.seconds, Path(tmp))
                r.update(profile=label, link=link, transport=transport)
                print(json.dumps(r), flush=True)
                rows.append(r)
    finally:
        hosts.close()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": str(date.today()), "machine": f"{platform.machine()}, "
            f"{__import__('os').cpu_count()} CPUs", "camera": "sim_world 640x480 rgb8 30 Hz",
            "seconds": a.seconds}
    (out / "multihost.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"Date {meta['date']}, {meta['machine']}, {meta['camera']}, {a.seconds:.0f} s per run.",
             "", "| profile | link | images | frames/s at the policy | image latency ms "
             "(median) | commands/s at the driver | holding |", "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['profile']} | {r['link']} | {r['transport']} | - | - | - | "
                         f"{r['error']} |")
            continue
        lat = f"{r['image_latency_ms']:.1f}" if r["image_latency_ms"] is not None else "-"
        lines.append(f"| {r['profile']} | {r['link']} | {r['transport']} | "
                     f"{r['frames_per_s']:.1f} | {lat} | "
                     f"{r['commands_per_s']:.2f} | {r['hold_reason'] or '-'} |")
    (out / "multihost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
