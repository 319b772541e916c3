"""Two "hosts" on one machine for multi-host tests: this network namespace and a second one,
joined by a veth pair like two computers on one Ethernet segment. Needs root and iproute2
(`ip netns`); ``unavailable()`` says why not, for a skip.

DDS between them must not use shared memory (/dev/shm is common to both namespaces): give
every process a UDP profile and check that traffic really stops when the link is cut.
"""
from __future__ import annotations

import os
import shutil
import subprocess


def _ip(*args, netns=None):
    cmd = (["ip", "netns", "exec", netns, "ip"] if netns else ["ip"]) + list(args)
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


def unavailable() -> str:
    """'' when network namespaces can be made here, else the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"llada_probe_{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except subprocess.CalledProcessError as err:
        return f"`ip netns add` failed: {err.stderr.strip()}"
    return ""


class TwoHosts:
    """This namespace ("robot" host, 10.<a>.<b>.1) and ``self.ns`` ("policy" host, .2)."""

    def __init__(self):
        tag = os.getpid() % 10000
        self.ns = f"llada_pol_{tag}"
        self.here, self.there = f"llr{tag}", f"llp{tag}"  # veth ends (<= 15 characters)
        subnet = f"10.{100 + tag // 250 % 100}.{tag % 250}"
        self.ip_here, self.ip_there = f"{subnet}.1", f"{subnet}.2"
        self.close()  # leftovers of a killed run with the same pid
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.here, "type", "veth", "peer", "name", self.there)
        _ip("link", "set", self.there, "netns", self.ns)
        _ip("addr", "add", f"{self.ip_here}/24", "dev", self.here)
        _ip("link", "set", self.here, "up")
        _ip("addr", "add", f"{self.ip_there}/24", "dev", self.there, netns=self.ns)
        _ip("link", "set", self.there, "up", netns=self.ns)
        _ip("link", "set", "lo", "up", netns=self.ns)
        _ip("route", "add", "default", "dev", self.there, netns=self.ns)  # multicast discovery

    def cut(self) -> None:
        """Unplug the cable: both ends lose the link, as two NICs do."""
        _ip("link", "set", self.here, "down")
        _ip("link", "set", self.there, "down", netns=self.ns)

    def restore(self) -> None:
        _ip("link", "set", self.there, "up", netns=self.ns)
        _ip("link", "set", self.here, "up")
        _ip("route", "replace", "default", "dev", self.there, netns=self.ns)

    def shape(self, rate: str = "") -> None:
        """Limit both directions to ``rate`` (tc tbf, e.g. "100mbit"); "" removes the limit."""
        for dev, ns in ((self.here, None), (self.there, self.ns)):
            prefix = ["ip", "netns", "exec", ns] if ns else []
            subprocess.run(prefix + ["tc", "qdisc", "del", "dev", dev, "root"],
                           capture_output=True)
            if rate:
                subprocess.run(prefix + ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                                         rate, "burst", "256kb", "latency", "50ms"],
                               check=True, capture_output=True)

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.here], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
