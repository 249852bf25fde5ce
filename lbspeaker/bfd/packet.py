"""BFD control packet codec (RFC 5880 section 4.1): bytes <-> ControlPacket, nothing else.

`decode` applies the reception checks that depend on the packet alone (RFC 5880 6.8.6, first
bullets: version, length, detect multiplier, multipoint bit, discriminators, authentication
section shape) and raises `ParseError` for anything else, so a socket loop can feed it any
datagram and catch one exception type. Checks that need a session (which discriminator, whether
authentication is in use) belong to `lbspeaker.bfd.session`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

VERSION = 1
HEADER_LEN = 24
_HEADER = struct.Struct("!BBBBIIIII")
UINT32_MAX = 0xFFFFFFFF

# Flag bits of the second byte (after the 2 state bits).
_P, _F, _C, _A, _D, _M = 0x20, 0x10, 0x08, 0x04, 0x02, 0x01


class ParseError(ValueError):
    """A datagram that is not a valid BFD control packet (the reason says which rule failed)."""


class State(enum.IntEnum):
    """Session states (RFC 5880 4.1, `Sta`)."""

    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3


class Diag(enum.IntEnum):
    """Diagnostic codes (RFC 5880 4.1, `Diag`): why the session last left Up."""

    NONE = 0
    CONTROL_DETECTION_TIME_EXPIRED = 1
    ECHO_FUNCTION_FAILED = 2
    NEIGHBOR_SIGNALED_DOWN = 3
    FORWARDING_PLANE_RESET = 4
    PATH_DOWN = 5
    CONCATENATED_PATH_DOWN = 6
    ADMINISTRATIVELY_DOWN = 7
    REVERSE_CONCATENATED_PATH_DOWN = 8


def diag_name(code: int) -> str:
    """`Diag` name of a code, `DIAG_<n>` for codes RFC 5880 does not assign."""
    return Diag(code).name if code in Diag._value2member_map_ else f"DIAG_{code}"


class AuthType(enum.IntEnum):
    """Authentication types (RFC 5880 4.2) with the section lengths they require."""

    SIMPLE_PASSWORD = 1
    KEYED_MD5 = 2
    METICULOUS_KEYED_MD5 = 3
    KEYED_SHA1 = 4
    METICULOUS_KEYED_SHA1 = 5


# Allowed Auth Len per type (RFC 5880 4.2-4.4): simple password has 1-16 password bytes.
_AUTH_LENGTHS: dict[int, range] = {
    AuthType.SIMPLE_PASSWORD: range(4, 20),
    AuthType.KEYED_MD5: range(24, 25),
    AuthType.METICULOUS_KEYED_MD5: range(24, 25),
    AuthType.KEYED_SHA1: range(28, 29),
    AuthType.METICULOUS_KEYED_SHA1: range(28, 29),
}


@dataclass(frozen=True)
class Authentication:
    """The optional authentication section, kept as raw bytes after type and length.

    lbspeaker verifies no authentication (MetalLB's BFDProfile has no key either); the session
    drops packets that carry one, but the codec still reads them so the reason can be reported.
    """

    auth_type: AuthType
    data: bytes  # everything after Auth Type and Auth Len

    def __post_init__(self) -> None:
        length = len(self.data) + 2
        if length not in _AUTH_LENGTHS[self.auth_type]:
            raise ParseError(
                f"authentication type {self.auth_type.name} needs a section of "
                f"{_AUTH_LENGTHS[self.auth_type].start}-{_AUTH_LENGTHS[self.auth_type].stop - 1} bytes, "
                f"got {length}"
            )


@dataclass(frozen=True)
class ControlPacket:
    """One BFD control packet; intervals in microseconds, as on the wire."""

    state: State
    detect_mult: int
    my_discr: int
    your_discr: int
    desired_min_tx_us: int
    required_min_rx_us: int
    required_min_echo_rx_us: int = 0
    diag: int = Diag.NONE
    """A `Diag` (codes this codec does not know stay plain ints)."""
    poll: bool = False
    final: bool = False
    control_plane_independent: bool = False
    demand: bool = False
    multipoint: bool = False
    auth: Authentication | None = None
    version: int = VERSION

    @property
    def length(self) -> int:
        """Value of the Length field: header plus the authentication section."""
        return HEADER_LEN + (len(self.auth.data) + 2 if self.auth else 0)


_U32_FIELDS = ("my_discr", "your_discr", "desired_min_tx_us", "required_min_rx_us", "required_min_echo_rx_us")


def _check(packet: ControlPacket) -> None:
    """The packet-only reception rules of RFC 5880 6.8.6, shared by `encode` and `decode`."""
    if packet.version != VERSION:
        raise ParseError(f"BFD version {packet.version} is not supported (only version {VERSION})")
    if not 1 <= packet.detect_mult <= 255:
        raise ParseError(f"detect multiplier {packet.detect_mult} is outside 1-255 (zero is invalid)")
    if packet.multipoint:
        raise ParseError("multipoint (M) bit is set: point-to-multipoint BFD is not supported")
    if not 0 <= packet.diag <= 31:
        raise ParseError(f"diagnostic code {packet.diag} does not fit in 5 bits")
    if packet.poll and packet.final:
        raise ParseError("poll (P) and final (F) bits are both set")
    if packet.my_discr == 0:
        raise ParseError("My Discriminator is zero")
    if packet.your_discr == 0 and packet.state not in (State.DOWN, State.ADMIN_DOWN):
        raise ParseError(f"Your Discriminator is zero in state {packet.state.name}")
    for name in _U32_FIELDS:
        if not 0 <= getattr(packet, name) <= UINT32_MAX:
            raise ParseError(f"{name} {getattr(packet, name)} does not fit in 32 bits")


def encode(packet: ControlPacket) -> bytes:
    """Wire bytes of `packet` (raises ParseError for a packet `decode` would refuse)."""
    _check(packet)
    flags = (
        (packet.state << 6)
        | (_P if packet.poll else 0)
        | (_F if packet.final else 0)
        | (_C if packet.control_plane_independent else 0)
        | (_A if packet.auth else 0)
        | (_D if packet.demand else 0)
    )
    head = _HEADER.pack(
        (packet.version << 5) | packet.diag,
        flags,
        packet.detect_mult,
        packet.length,
        packet.my_discr,
        packet.your_discr,
        packet.desired_min_tx_us,
        packet.required_min_rx_us,
        packet.required_min_echo_rx_us,
    )
    if packet.auth is None:
        return head
    return head + bytes((packet.auth.auth_type, len(packet.auth.data) + 2)) + packet.auth.data


def decode(data: bytes) -> ControlPacket:
    """ControlPacket in `data` (a UDP payload, which may be longer than the packet).

    Raises ParseError, and only ParseError, when the bytes break RFC 5880 4.1 / 6.8.6.
    """
    if len(data) < HEADER_LEN:
        raise ParseError(f"{len(data)} bytes is shorter than a BFD control packet ({HEADER_LEN})")
    vers_diag, flags, mult, length, my, your, tx, rx, echo = _HEADER.unpack_from(data)
    version, diag_code = vers_diag >> 5, vers_diag & 0x1F
    if version != VERSION:
        raise ParseError(f"BFD version {version} is not supported (only version {VERSION})")
    if length > len(data):
        raise ParseError(f"Length field {length} is longer than the {len(data)}-byte payload")
    # Codes 9-31 are unassigned here but not a reason to drop a packet (RFC 5880 6.8.6 does not).
    diag: int = Diag(diag_code) if diag_code in Diag._value2member_map_ else diag_code
    auth: Authentication | None = None
    if flags & _A:
        if length < HEADER_LEN + 2:
            raise ParseError(f"Length {length} leaves no room for the authentication section")
        auth_type, auth_len = data[HEADER_LEN], data[HEADER_LEN + 1]
        if auth_type not in _AUTH_LENGTHS:
            raise ParseError(f"unknown authentication type {auth_type}")
        if HEADER_LEN + auth_len != length:
            raise ParseError(f"Length {length} does not match the {auth_len}-byte authentication section")
        auth = Authentication(AuthType(auth_type), bytes(data[HEADER_LEN + 2 : length]))
    elif length != HEADER_LEN:
        raise ParseError(f"Length {length} without authentication (expected {HEADER_LEN})")
    packet = ControlPacket(
        state=State(flags >> 6),
        detect_mult=mult,
        my_discr=my,
        your_discr=your,
        desired_min_tx_us=tx,
        required_min_rx_us=rx,
        required_min_echo_rx_us=echo,
        diag=diag,
        poll=bool(flags & _P),
        final=bool(flags & _F),
        control_plane_independent=bool(flags & _C),
        demand=bool(flags & _D),
        multipoint=bool(flags & _M),
        auth=auth,
        version=version,
    )
    _check(packet)
    return packet
