"""BFD control packet codec: RFC 5880 4.1 layout, 6.8.6 packet-only checks, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbspeaker.bfd.packet import (
    Authentication,
    AuthType,
    ControlPacket,
    Diag,
    ParseError,
    State,
    decode,
    encode,
)

# An Up packet as FRR's bfdd sends it: vers 1, diag 0, state Up, mult 3, len 24, discrs 1/2,
# 300 ms / 300 ms / echo 50 ms.
FRR_UP = bytes.fromhex("20c00318" "00000001" "00000002" "000493e0" "000493e0" "0000c350")


def header(
    vers_diag: int = 0x20, flags: int = 0x40, mult: int = 3, length: int = 24,
    my: int = 1, your: int = 0, tx: int = 1_000_000, rx: int = 1_000_000, echo: int = 0,
) -> bytes:
    return struct.pack("!BBBBIIIII", vers_diag, flags, mult, length, my, your, tx, rx, echo)


def test_decodes_a_known_packet() -> None:
    pkt = decode(FRR_UP)
    assert pkt == ControlPacket(
        state=State.UP, detect_mult=3, my_discr=1, your_discr=2,
        desired_min_tx_us=300_000, required_min_rx_us=300_000, required_min_echo_rx_us=50_000,
    )
    assert encode(pkt) == FRR_UP


def test_flags_and_diag_are_placed_as_rfc_5880_draws_them() -> None:
    pkt = ControlPacket(
        state=State.INIT, detect_mult=1, my_discr=7, your_discr=9, desired_min_tx_us=1,
        required_min_rx_us=2, diag=Diag.NEIGHBOR_SIGNALED_DOWN, poll=True,
        control_plane_independent=True, demand=True,
    )
    raw = encode(pkt)
    assert raw[0] == (1 << 5) | 3
    assert raw[1] == (2 << 6) | 0x20 | 0x08 | 0x02
    assert decode(raw) == pkt


def test_trailing_bytes_after_length_are_ignored() -> None:
    assert decode(FRR_UP + b"\0\0\0\0") == decode(FRR_UP)


def test_authentication_section_is_read() -> None:
    auth = bytes((1, 7, 5)) + b"pass"  # simple password, key id 5
    raw = header(flags=0x40 | 0x04, length=24 + 7) + auth
    pkt = decode(raw)
    assert pkt.auth == Authentication(AuthType.SIMPLE_PASSWORD, bytes((5,)) + b"pass")
    assert encode(pkt) == raw


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "shorter than"),
        (FRR_UP[:23], "shorter than"),
        (header(vers_diag=0x40), "version 2"),
        (header(length=25), "longer than"),
        (header(length=20), "without authentication"),
        (header(mult=0), "detect multiplier 0"),
        (header(flags=0x41), "multipoint"),
        (header(flags=0x40 | 0x30), "both set"),
        (header(my=0), "My Discriminator is zero"),
        (header(flags=0xC0, your=0), "zero in state UP"),
        (header(flags=0x80, your=0), "zero in state INIT"),
        (header(flags=0x44, length=25) + b"\x01", "no room"),
        (header(flags=0x44, length=26) + bytes((9, 2)), "unknown authentication type 9"),
        (header(flags=0x44, length=30) + bytes((2, 24)) + bytes(4), "does not match"),
        (header(flags=0x44, length=26) + bytes((2, 2)), "KEYED_MD5 needs a section of 24-24"),
        (header(flags=0x44, length=26) + bytes((1, 2)), "SIMPLE_PASSWORD needs a section of 4-19"),
    ],
)
def test_rejected(raw: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        decode(raw)


def test_unknown_diag_is_kept_not_rejected() -> None:
    pkt = decode(header(vers_diag=0x20 | 20))
    assert pkt.diag == 20
    assert encode(pkt)[0] == 0x20 | 20


def test_encode_refuses_what_decode_would_refuse() -> None:
    with pytest.raises(ParseError, match="My Discriminator"):
        encode(ControlPacket(State.DOWN, 3, 0, 0, 1, 1))


@given(st.binary(max_size=80))
def test_any_bytes_decode_or_raise_parse_error(data: bytes) -> None:
    try:
        pkt = decode(data)
    except ParseError:
        return
    assert encode(pkt) == data[: pkt.length]


@given(st.binary(min_size=24, max_size=24))
def test_header_shaped_bytes_decode_or_raise_parse_error(data: bytes) -> None:
    # Version 1 and Length 24 make most random headers reach the later checks.
    data = bytes((0x20 | (data[0] & 0x1F), data[1] & ~0x04 & 0xFF, data[2], 24)) + data[4:]
    try:
        pkt = decode(data)
    except ParseError:
        return
    assert encode(pkt) == data


u32 = st.integers(0, 0xFFFFFFFF)
auths = st.one_of(
    st.none(),
    st.builds(Authentication, st.just(AuthType.SIMPLE_PASSWORD), st.binary(min_size=2, max_size=17)),
    st.builds(Authentication, st.sampled_from([AuthType.KEYED_MD5, AuthType.METICULOUS_KEYED_MD5]),
              st.binary(min_size=22, max_size=22)),
    st.builds(Authentication, st.sampled_from([AuthType.KEYED_SHA1, AuthType.METICULOUS_KEYED_SHA1]),
              st.binary(min_size=26, max_size=26)),
)


@given(
    state=st.sampled_from(State), mult=st.integers(1, 255), my=st.integers(1, 0xFFFFFFFF),
    your=st.integers(1, 0xFFFFFFFF), tx=u32, rx=u32, echo=u32, diag=st.integers(0, 31),
    pf=st.sampled_from([(False, False), (True, False), (False, True)]), c=st.booleans(),
    d=st.booleans(), auth=auths,
)
def test_round_trip(
    state: State, mult: int, my: int, your: int, tx: int, rx: int, echo: int, diag: int,
    pf: tuple[bool, bool], c: bool, d: bool, auth: Authentication | None,
) -> None:
    pkt = ControlPacket(
        state=state, detect_mult=mult, my_discr=my, your_discr=your, desired_min_tx_us=tx,
        required_min_rx_us=rx, required_min_echo_rx_us=echo, diag=diag, poll=pf[0], final=pf[1],
        control_plane_independent=c, demand=d, auth=auth,
    )
    raw = encode(pkt)
    assert len(raw) == pkt.length == raw[3]
    assert decode(raw) == pkt
