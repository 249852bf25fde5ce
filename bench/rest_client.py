"""Client CPU per API request of `lbspeaker.kube.rest.Rest` against the lab API server.

The server runs in its own process (`python -m lab.cli apiserver`), so `time.process_time()`
here is the client's CPU only: N ConfigMap creates, N GETs, N merge patches of a Service's
/status (alternating ingress IPs so every patch changes something).

    python bench/rest_client.py [--n 2000] [--label NAME] [--out FILE]

Results are merged into ``bench/results/rest_client.json`` under `--label` and printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lbspeaker.kube.client import load_api_client  # noqa: E402
from lbspeaker.kube.resources import CONFIGMAPS, SERVICES  # noqa: E402
from lbspeaker.kube.rest import Rest  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "rest_client.json"


def _phase(name: str, n: int, fn: Any) -> dict[str, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"n": n, "client_cpu_us_per_request": round(cpu / n * 1e6, 1),
            "wall_us_per_request": round(wall / n * 1e6, 1)}


def _ingress(ip: str) -> dict[str, Any]:
    return {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}


def run(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        kc = Path(tmp) / "kubeconfig"
        proc = subprocess.Popen(
            [sys.executable, "-m", "lab.cli", "apiserver", "--port", "0", "--kubeconfig-out", str(kc)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "listening on" not in line:
                raise RuntimeError(f"lab API server did not start: {line!r}")
            rest = Rest(load_api_client(str(kc)))
            rest.create(SERVICES, {"metadata": {"name": "lb", "namespace": "default"},
                                   "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
            results = {
                "create": _phase("create", n, lambda i: rest.create(
                    CONFIGMAPS, {"metadata": {"name": f"cm-{i}", "namespace": "default"},
                                 "data": {"k": "v" * 32}})),
                "get": _phase("get", n, lambda i: rest.get(CONFIGMAPS, f"cm-{i}", "default")),
                "patch_status": _phase("patch_status", n, lambda i: rest.patch_status(
                    SERVICES, "lb", _ingress(f"10.0.0.{i % 2 + 1}"), "default")),
            }
        finally:
            proc.terminate()
            proc.wait(10)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--label", default="current")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    results = run(args.n)
    for name, r in results.items():
        print(f"{name:13s} {r['client_cpu_us_per_request']:8.1f} us client CPU/request"
              f"  ({r['wall_us_per_request']:.0f} us wall, n={r['n']})")
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data[args.label] = {"python": platform.python_version(), "results": results,
                        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
