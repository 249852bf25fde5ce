"""netinfo's pyroute2/procfs shell inside a throwaway network namespace (root only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"),
]

SCRIPT = r"""
import json, subprocess, threading, time
from lbspeaker.links import select_interfaces
from lbspeaker.netinfo import LinkWatcher, list_links, enforce_strict_arp, get_arp_settings

events = []
seen = threading.Event()
def cb(event, link):
    events.append((event, link.name, link.up))
    if event == "DELLINK" and link.name == "eth7":
        seen.set()

w = LinkWatcher(cb)
w.start()
run = lambda *a: subprocess.run(a, check=True)
run("ip", "link", "add", "eth7", "type", "veth", "peer", "name", "veth7")
run("ip", "link", "set", "eth7", "up")
run("ip", "link", "set", "veth7", "up")
time.sleep(0.2)
links = list_links()
selected = select_interfaces(links, None)
changed = enforce_strict_arp(["eth7"])
settings = get_arp_settings("eth7")
run("ip", "link", "del", "eth7")
ok = seen.wait(3)
w.stop()
print(json.dumps({"events": events, "selected": selected, "names": sorted(l.name for l in links),
                  "changed": changed, "settings": settings, "dellink_seen": ok}))
"""


def test_link_watcher_list_links_and_sysctls() -> None:
    ns = f"lbt-h-{uuid.uuid4().hex[:6]}-nl"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        res = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert out["names"] == ["eth7", "lo", "veth7"]
    assert out["selected"] == ["eth7"]  # lo and veth* skipped by default
    assert out["changed"] == {"eth7": {"arp_ignore": 1, "arp_announce": 2}}
    assert out["settings"] == {"arp_ignore": 1, "arp_announce": 2}
    assert out["dellink_seen"]
    assert ["NEWLINK", "eth7", True] in out["events"]
