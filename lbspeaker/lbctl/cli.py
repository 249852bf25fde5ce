"""`lbctl`: what lbspeaker is doing, what is wrong, and moving over from MetalLB.

    lbctl status            every LoadBalancer Service: IP, pool, mode, who announces it, problems
    lbctl pools             pools with assigned/available counts and conditions
    lbctl check             the usual mistakes; exit status 1 when any is found
    lbctl migrate-metallb -f FILE|-   MetalLB objects / legacy ConfigMap -> lbspeaker YAML

Tables by default, `-o json` / `-o yaml` for scripts. Read-only against the cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

from lbspeaker.api.constants import NAMESPACE

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain aligned columns, kubectl style (no borders, two spaces between columns)."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def emit(data: Any, output: str, render_table: Any, out: TextIO) -> None:
    if output == "json":
        json.dump(data, out, indent=2)
        out.write("\n")
    elif output == "yaml":
        yaml.safe_dump(data, out, sort_keys=False)
    else:
        out.write(render_table())


def _common(p: argparse.ArgumentParser, suppress: bool) -> None:
    """Options accepted before and after the subcommand (`lbctl -o json status` = `lbctl status -o json`)."""

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    p.add_argument("--kubeconfig", default=d(os.environ.get("KUBECONFIG") or None),
                   help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    p.add_argument("--context", default=d(None), help="kubeconfig context")
    p.add_argument("-n", "--namespace", default=d(NAMESPACE), help=f"lbspeaker's namespace ({NAMESPACE})")
    p.add_argument("-o", "--output", choices=["table", "json", "yaml"], default=d("table"),
                   help="output format (table)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbctl",
        description="What lbspeaker is doing, what is wrong, and moving over from MetalLB.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    _common(p, suppress=False)
    sub = p.add_subparsers(dest="command", required=True)
    commands = {
        "status": "every LoadBalancer Service and how it is announced",
        "pools": "IPAddressPools: use, free addresses, conditions",
        "check": "find the usual mistakes (exit status 1 when found)",
        "migrate-metallb": "convert MetalLB configuration to lbspeaker objects (YAML on stdout)",
    }
    for name, text in commands.items():
        sp = sub.add_parser(name, help=text, description=text)
        _common(sp, suppress=True)
        if name == "migrate-metallb":
            sp.add_argument("-f", "--filename", required=True,
                            help="YAML: MetalLB objects or the legacy config ConfigMap (a file, a "
                                 "directory of them, or - for stdin)")
            sp.add_argument("--to-namespace", default=None,
                            help="namespace of the converted objects (default: --namespace)")
    return p


def _rest(args: argparse.Namespace) -> Any:
    from lbspeaker.kube.client import load_api_client
    from lbspeaker.kube.rest import Rest

    return Rest(load_api_client(args.kubeconfig, args.context))


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    from lbspeaker.lbctl.report import service_rows
    from lbspeaker.lbctl.snapshot import fetch

    rows = service_rows(fetch(_rest(args), args.namespace))
    emit(
        [r.as_dict() for r in rows],
        args.output,
        lambda: table(
            ["NAMESPACE", "NAME", "IP", "POOL", "MODE", "ANNOUNCED BY", "PROBLEMS"],
            [
                [r.namespace, r.name, ",".join(r.ips) or "<none>", r.pool or "-", r.mode,
                 ",".join(r.announced_by) or "-", "; ".join(r.problems) or "-"]
                for r in rows
            ],
        ),
        out,
    )
    return EXIT_OK


def cmd_pools(args: argparse.Namespace, out: TextIO) -> int:
    from lbspeaker.lbctl.report import pool_rows
    from lbspeaker.lbctl.snapshot import fetch

    rows = pool_rows(fetch(_rest(args), args.namespace, events=False))
    emit(
        [r.as_dict() for r in rows],
        args.output,
        lambda: table(
            ["NAME", "ADDRESSES", "AUTO-ASSIGN", "ASSIGNED", "AVAILABLE", "CONDITIONS"],
            [
                [r.name, ",".join(r.addresses), str(r.auto_assign).lower(), str(r.assigned),
                 str(r.available), ", ".join(r.conditions) or "-"]
                for r in rows
            ],
        ),
        out,
    )
    return EXIT_OK


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    from lbspeaker.lbctl.report import check
    from lbspeaker.lbctl.snapshot import fetch

    problems = check(fetch(_rest(args), args.namespace))

    def render() -> str:
        if not problems:
            return "No problems found.\n"
        return table(["CHECK", "OBJECT", "PROBLEM"], [[p.check, p.object, p.message] for p in problems])

    emit([p.as_dict() for p in problems], args.output, render, out)
    return EXIT_PROBLEMS if problems else EXIT_OK


def read_manifests(path: str) -> str:
    """A file's text, or every *.yaml / *.yml / *.json of a directory (sorted) as one multi-document
    stream, as `kubectl apply -f DIR` reads it."""
    from pathlib import Path

    p = Path(path)
    if not p.is_dir():
        return p.read_text()
    files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json") and f.is_file())
    return "\n---\n".join(f.read_text() for f in files)


def cmd_migrate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from lbspeaker.lbctl.migrate import convert_text

    if args.filename == "-":
        text = sys.stdin.read()
    else:
        try:
            text = read_manifests(args.filename)
        except OSError as exc:
            err.write(f"lbctl: cannot read {args.filename}: {exc.strerror or exc}\n")
            return EXIT_PROBLEMS
    result = convert_text(text, args.to_namespace or args.namespace)
    if args.output == "json":
        json.dump({"apiVersion": "v1", "kind": "List", "items": result.objects}, out, indent=2)
        out.write("\n")
    else:
        out.write(result.yaml())
    for note in result.notes:
        err.write(f"lbctl: {note}\n")
    if not result.objects:
        err.write("lbctl: no MetalLB configuration found in the input\n")
        return EXIT_PROBLEMS
    return EXIT_OK


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        if args.command == "status":
            return cmd_status(args, out)
        if args.command == "pools":
            return cmd_pools(args, out)
        if args.command == "check":
            return cmd_check(args, out)
        return cmd_migrate(args, out, err)
    except Exception as exc:  # one line for the user, not a traceback
        from lbspeaker.kube.rest import ApiError
        from lbspeaker.lbctl.snapshot import AccessDenied

        if isinstance(exc, AccessDenied):
            err.write(f"lbctl: {exc.text()}\n")
            return EXIT_ERROR

        if isinstance(exc, ApiError | OSError | yaml.YAMLError) or type(exc).__name__ == "ConfigException":
            err.write(f"lbctl: {exc}\n")
            return EXIT_ERROR
        raise
