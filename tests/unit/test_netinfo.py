"""links (pure interface selection) and netinfo (message conversion, sysctl helpers on a fake procfs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lbspeaker.links import (
    IFF_LOOPBACK,
    IFF_LOWER_UP,
    IFF_NOARP,
    IFF_UP,
    LinkInfo,
    missing_interfaces,
    select_interfaces,
)
from lbspeaker.netinfo import (
    RTM_DELLINK,
    RTM_NEWLINK,
    arp_sysctl_name,
    enforce_strict_arp,
    get_arp_settings,
    link_from_message,
    parse_link_events,
    sysctl_get,
    sysctl_set,
)

UP = IFF_UP | IFF_LOWER_UP

LINKS = [
    LinkInfo("lo", 1, UP | IFF_LOOPBACK, link_type=772),
    LinkInfo("eth0", 2, UP, kind="veth"),  # a kind node's uplink is a veth named eth0
    LinkInfo("eth1", 3, 0),  # down
    LinkInfo("ens3", 4, UP),
    LinkInfo("bond0", 5, UP, kind="bond"),
    LinkInfo("ens4", 6, UP, master=5),  # bond member
    LinkInfo("br0", 7, UP, kind="bridge"),
    LinkInfo("ens5", 8, UP, master=7),  # bridge member
    LinkInfo("vethabc", 9, UP, kind="veth"),
    LinkInfo("kube-ipvs0", 10, UP | IFF_NOARP, kind="dummy"),
    LinkInfo("cni0", 11, UP, kind="bridge"),
    LinkInfo("docker0", 12, UP, kind="bridge"),
    LinkInfo("flannel.1", 13, UP, kind="vxlan"),
    LinkInfo("cali123", 14, UP, kind="veth"),
    LinkInfo("tunl0", 15, UP | IFF_NOARP, kind="ipip", link_type=768),
    LinkInfo("myvx", 16, UP, kind="vxlan"),
    LinkInfo("noarp0", 17, UP | IFF_NOARP),
    LinkInfo("wg0", 18, UP, kind="wireguard", link_type=65534),
    LinkInfo("lxc00", 19, UP),
]


def test_default_selection() -> None:
    assert select_interfaces(LINKS, None) == ["bond0", "br0", "ens3", "eth0"]
    assert select_interfaces(LINKS, []) == ["bond0", "br0", "ens3", "eth0"]


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        (["eth0"], ["eth0"]),
        (["eth1"], []),  # down
        (["ens4"], []),  # bond member
        (["cni0", "ens3"], ["cni0", "ens3"]),  # named explicitly: virtual-name rule off
        (["noarp0", "lo", "kube-ipvs0"], []),
        (["nope"], []),
    ],
)
def test_allowed_selection(allowed: list[str], expected: list[str]) -> None:
    assert select_interfaces(LINKS, allowed) == expected


def test_missing_interfaces() -> None:
    assert missing_interfaces(LINKS, ["eth0", "nope", "zz"]) == ["nope", "zz"]
    assert missing_interfaces(LINKS, None) == []


def test_custom_skip_prefixes() -> None:
    got = select_interfaces(LINKS, None, skip_prefixes=("lo", "eth"))
    # kinds (vxlan flannel.1/myvx, ...) are still skipped; names no longer are
    assert got == ["bond0", "br0", "cali123", "cni0", "docker0", "ens3", "lxc00", "vethabc"]


class FakeAttrs:
    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


class FakeMsg(FakeAttrs):
    def __init__(self, fields: dict[str, Any], attrs: dict[str, Any]) -> None:
        super().__init__(attrs)
        self.fields = fields

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def test_link_from_message() -> None:
    msg = FakeMsg(
        {"index": 4, "flags": 0x11043, "ifi_type": 1},
        {
            "IFLA_IFNAME": "eth0",
            "IFLA_ADDRESS": "02:00:00:00:00:01",
            "IFLA_OPERSTATE": "UP",
            "IFLA_LINKINFO": FakeAttrs({"IFLA_INFO_KIND": "veth"}),
            "IFLA_MASTER": None,
        },
    )
    link = link_from_message(msg)
    assert link == LinkInfo("eth0", 4, 0x11043, "veth", None, "02:00:00:00:00:01", 1, "UP")
    assert link.up and not link.noarp and not link.loopback


def fake_proc(tmp_path: Path, ifname: str, ignore: int, announce: int) -> Path:
    d = tmp_path / "net" / "ipv4" / "conf" / ifname
    d.mkdir(parents=True)
    (d / "arp_ignore").write_text(f"{ignore}\n")
    (d / "arp_announce").write_text(f"{announce}\n")
    return tmp_path


def test_enforce_strict_arp(tmp_path: Path) -> None:
    root = fake_proc(tmp_path, "eth0", 0, 0)
    fake_proc(tmp_path, "eth1", 2, 2)
    changed = enforce_strict_arp(["eth0", "eth1"], root=str(root))
    assert changed == {"eth0": {"arp_ignore": 1, "arp_announce": 2}}  # never lowers eth1's 2
    assert get_arp_settings("eth0", str(root)) == {"arp_ignore": 1, "arp_announce": 2}
    assert get_arp_settings("eth1", str(root)) == {"arp_ignore": 2, "arp_announce": 2}
    assert enforce_strict_arp(["eth0"], root=str(root)) == {}


def test_sysctl_get_set(tmp_path: Path) -> None:
    root = fake_proc(tmp_path, "eth0", 0, 0)
    assert sysctl_get("net.ipv4.conf.eth0.arp_ignore", str(root)) == "0"
    sysctl_set("net.ipv4.conf.eth0.arp_ignore", 1, str(root))
    assert sysctl_get("net.ipv4.conf.eth0.arp_ignore", str(root)) == "1"
    with pytest.raises(ValueError):
        sysctl_get("net..ipv4/../x", str(root))


def test_arp_sysctl_name_validation() -> None:
    assert arp_sysctl_name("eth0.100", "arp_ignore") == "net.ipv4.conf.eth0.100.arp_ignore"
    with pytest.raises(ValueError):
        arp_sysctl_name("eth0", "rp_filter")
    with pytest.raises(ValueError):
        arp_sysctl_name("../x", "arp_ignore")


def _encoded_link(mtype: int, name: str, index: int, flags: int) -> bytes:
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    m = ifinfmsg()
    m["index"] = index
    m["flags"] = flags
    m["ifi_type"] = 1
    m["attrs"] = [("IFLA_IFNAME", name)]
    m["header"]["type"] = mtype
    m.encode()
    return bytes(m.data)


def test_parse_link_events() -> None:
    data = _encoded_link(RTM_NEWLINK, "eth0", 2, IFF_UP) + _encoded_link(RTM_DELLINK, "eth1", 3, 0)
    events = parse_link_events(data)
    assert [(e, link.name, link.index, link.up) for e, link in events] == [
        ("NEWLINK", "eth0", 2, True),
        ("DELLINK", "eth1", 3, False),
    ]
    assert parse_link_events(b"") == []
    assert parse_link_events(b"\x01\x00\x00\x00" + bytes(12)) == []  # length < header: stop
    assert parse_link_events(data[:-3]) == [("NEWLINK", events[0][1])]  # truncated tail ignored
