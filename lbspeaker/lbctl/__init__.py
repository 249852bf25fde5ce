"""`lbctl`, lbspeaker's command-line tool (status, pools, check, migrate-metallb).

`main` is the console-script entry point; the pure parts live in `report` (what
status/pools/check say) and `migrate` (MetalLB conversion), `snapshot` does the reads,
`kustomize` renders the install manifests for tests and tooling.
"""

from lbspeaker.lbctl.cli import main

__all__ = ["main"]
