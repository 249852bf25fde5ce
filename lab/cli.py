"""`lbspeaker-lab`: the lab (a kind-like cluster in network namespaces) and its API server.

The lab is a test stand-in, not part of the product. Each subcommand lives in its
own module, which exposes `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "apiserver": (
        "lab.apiserver.command",
        "run the lab API server (a kube-apiserver stand-in) in the foreground",
    ),
    # lab.commands registers one module-like object per subcommand (lab.commands.up, ...).
    "up": ("lab.commands.up", "build the lab (namespaces, router, API server, nodes, controller, speakers)"),
    "down": ("lab.commands.down", "remove every namespace and process the lab started (idempotent)"),
    "exec": ("lab.commands.exec", "run a command in client, router, ext-client or a node namespace"),
    "status": ("lab.commands.status", "what runs where: namespaces, addresses, processes, BGP neighbours"),
}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each subparser's `run` is stored as its default `_run`."""
    parser = argparse.ArgumentParser(prog="lbspeaker-lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
