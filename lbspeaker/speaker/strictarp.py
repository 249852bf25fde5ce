"""kube-proxy's strictARP: parse `kube-system/kube-proxy` and decide what to say or do.

In IPVS mode kube-proxy binds every LoadBalancer IP to `kube-ipvs0` on every node,
so with the kernel's default ARP sysctls *every* node answers ARP for every VIP and
layer-2 election means nothing. kube-proxy's `ipvs.strictARP: true` sets
`arp_ignore=1`/`arp_announce=2`, which stops that. Pure parsing here (`check`),
the sysctl writes are `netinfo.enforce_strict_arp`.

Where the warning goes: a Warning Event `StrictARPDisabled` on this speaker's Node
object (every node is affected, and `kubectl describe node` is where an operator
looks at a node's networking), a log line, the metric
`lbspeaker_speaker_strictarp_ok` (0/1) and a line in the `/readyz` body (readiness
itself stays OK: the speaker works, the cluster config is what is wrong).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

CONFIGMAP_NAMESPACE = "kube-system"
CONFIGMAP_NAME = "kube-proxy"
CONFIG_KEY = "config.conf"


@dataclass(frozen=True)
class StrictArpState:
    """What kube-proxy's configuration means for layer 2.

    `ok` is False only when kube-proxy runs IPVS without strictARP; an absent or
    unreadable ConfigMap is `ok` with `known=False` (iptables/nftables modes, or a
    cluster without kube-proxy, need nothing).
    """

    mode: str
    strict_arp: bool
    known: bool
    ok: bool
    detail: str


def parse_config(text: str) -> tuple[str, bool]:
    """(mode, strictARP) from a KubeProxyConfiguration YAML text. Raises ValueError if unparsable."""
    try:
        doc = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config.conf is not YAML: {exc}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ValueError("config.conf is not a mapping")
    mode = str(doc.get("mode") or "").strip().lower() or "iptables"
    ipvs = doc.get("ipvs") or {}
    strict = bool(isinstance(ipvs, dict) and ipvs.get("strictARP") is True)
    return mode, strict


def check(configmap: Mapping[str, Any] | None) -> StrictArpState:
    """The kube-proxy ConfigMap (dict or None) -> StrictArpState."""
    if configmap is None:
        return StrictArpState("", False, False, True, "no kube-system/kube-proxy ConfigMap: nothing to check")
    text = str((configmap.get("data") or {}).get(CONFIG_KEY) or "")
    try:
        mode, strict = parse_config(text)
    except ValueError as exc:
        return StrictArpState("", False, False, True, f"kube-proxy {CONFIG_KEY} unreadable ({exc})")
    if mode != "ipvs":
        return StrictArpState(mode, strict, True, True, f"kube-proxy mode {mode}: strictARP not needed")
    if strict:
        return StrictArpState(mode, True, True, True, "kube-proxy mode ipvs with strictARP: ok")
    return StrictArpState(
        mode, False, True, False,
        "kube-proxy runs in IPVS mode without ipvs.strictARP: every node answers ARP for every "
        "LoadBalancer IP; set strictARP: true in kube-system/kube-proxy or run the speaker with "
        "--enforce-strict-arp",
    )
