"""One BFD session as a pure state machine (RFC 5880 asynchronous mode, sections 6.2 and 6.8).

Nothing here reads a clock, a socket or a random source: every method takes `now` (seconds on
any monotonic clock) and returns an `Output` with the packets to send and the state changes, and
jitter comes from the `rng` callable given at construction. The I/O adapter
(`lbspeaker.bfd.io`) asks `next_deadline()` when to call `tick()` again.

What is implemented: the 6.8.6 reception rules, the 6.2 state diagram (Down -> Init -> Up, back
to Down on a detection timeout or a peer's Down, AdminDown both ways), timer negotiation
(transmit interval = max(DesiredMinTx, remote RequiredMinRx), detection time = remote
DetectMult x max(RequiredMinRx, remote DesiredMinTx)), the Poll/Final sequence on a parameter
change with the 6.8.3 rules for when a new interval takes effect, the 1 s transmit floor while
not Up, transmit jitter (75-100%, 75-90% with detect multiplier 1) and the passive role.
Not implemented: demand mode (never requested; a peer's D bit is ignored), echo, authentication
(packets carrying it are dropped with a reason).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lbspeaker.bfd.packet import ControlPacket, Diag, State

SLOW_TX_US = 1_000_000  # RFC 5880 6.8.3: DesiredMinTxInterval while the session is not Up
_US = 1e-6


@dataclass(frozen=True)
class SessionConfig:
    """What a BFDProfile asks of one session (intervals in microseconds, as on the wire)."""

    desired_min_tx_us: int = 300_000
    required_min_rx_us: int = 300_000
    detect_mult: int = 3
    passive: bool = False

    def __post_init__(self) -> None:
        if self.desired_min_tx_us <= 0:
            raise ValueError("desired_min_tx_us must be positive (RFC 5880 forbids zero)")
        if self.required_min_rx_us < 0 or not 1 <= self.detect_mult <= 255:
            raise ValueError("required_min_rx_us must be >= 0 and detect_mult 1-255")


@dataclass(frozen=True)
class SessionKey:
    """A single-hop session is identified by its peer and, optionally, the local address."""

    peer: str
    local: str | None = None


@dataclass(frozen=True)
class StateChange:
    """The session moved from `old` to `new` at `at`; `diag` says why (RFC 5880 Diag).

    `peer_admin_down`: the peer said AdminDown. RFC 5882 3.2: that is the peer stopping BFD on
    purpose, not a failure, so the client protocol (BGP) must not be taken down for it.
    """

    old: State
    new: State
    diag: int
    at: float
    peer_admin_down: bool = False

    @property
    def failure(self) -> bool:
        """Did the session leave Up because the path failed (what BGP acts on)?"""
        return self.old == State.UP and self.new != State.UP and not self.peer_admin_down


@dataclass
class Output:
    """What one call produced: packets to send now, state changes, and why a packet was dropped."""

    send: list[ControlPacket] = field(default_factory=list)
    changes: list[StateChange] = field(default_factory=list)
    dropped: str | None = None


class Session:
    """RFC 5880 state variables of one session plus the timers the adapter must honour."""

    def __init__(
        self, local_discr: int, config: SessionConfig, now: float, rng: Callable[[], float]
    ) -> None:
        if not 1 <= local_discr <= 0xFFFFFFFF:
            raise ValueError("local discriminator must be a non-zero 32-bit value")
        self.local_discr = local_discr
        self.config = config
        self._rng = rng
        self.state = State.DOWN
        self.local_diag: int = Diag.NONE
        self.remote_state = State.DOWN
        self.remote_discr = 0
        self.remote_min_rx_us = 1  # RFC 5880 6.8.1 initial value
        self.remote_desired_min_tx_us = 0
        self.remote_detect_mult = 0
        self.desired_min_tx_us = max(config.desired_min_tx_us, SLOW_TX_US)
        self.required_min_rx_us = config.required_min_rx_us
        # 6.8.3: during a Poll Sequence the old values stay in force for these two.
        self._tx_in_use_us = self.desired_min_tx_us
        self._rx_for_detect_us = self.required_min_rx_us
        self.poll_active = False
        self.next_tx: float | None = now if self._may_transmit() else None
        self.detect_deadline: float | None = None

    # --- derived values --------------------------------------------------------------------------

    @property
    def tx_interval_us(self) -> int:
        """Periodic transmit interval before jitter (6.8.7)."""
        return max(self._tx_in_use_us, self.remote_min_rx_us)

    @property
    def detection_time_us(self) -> int:
        """Local detection time (6.8.4); 0 until a packet from the peer has been seen."""
        return self.remote_detect_mult * max(self._rx_for_detect_us, self.remote_desired_min_tx_us)

    def next_deadline(self) -> float | None:
        """When `tick` must next be called (None: only a received packet can change anything)."""
        times = [t for t in (self.next_tx, self.detect_deadline) if t is not None]
        return min(times) if times else None

    def _may_transmit(self) -> bool:
        if self.remote_min_rx_us == 0:
            return False  # the peer asked for no periodic packets
        return not (self.config.passive and self.remote_discr == 0)

    def _jittered(self, now: float) -> float:
        """Next periodic transmit time: 75-100% of the interval (75-90% with detect mult 1)."""
        top = 0.90 if self.config.detect_mult == 1 else 1.0
        fraction = top - (top - 0.75) * min(max(self._rng(), 0.0), 1.0)
        return now + self.tx_interval_us * _US * fraction

    def packet(self, final: bool = False) -> ControlPacket:
        """The control packet this session would send now (`final`: the answer to a Poll)."""
        return ControlPacket(
            state=self.state,
            detect_mult=self.config.detect_mult,
            my_discr=self.local_discr,
            your_discr=self.remote_discr,
            desired_min_tx_us=self.desired_min_tx_us,
            required_min_rx_us=self.required_min_rx_us,
            required_min_echo_rx_us=0,  # no echo function
            diag=self.local_diag,
            poll=self.poll_active and not final,
            final=final,
        )

    # --- transitions -----------------------------------------------------------------------------

    def _set_intervals(self, desired: int, required: int) -> None:
        """Change the advertised intervals; while Up this starts a Poll Sequence (6.8.3)."""
        if desired == self.desired_min_tx_us and required == self.required_min_rx_us:
            return
        up = self.state == State.UP
        if up:
            self.poll_active = True
        if not (up and desired > self.desired_min_tx_us):
            self._tx_in_use_us = desired
        if not (up and required < self.required_min_rx_us):
            self._rx_for_detect_us = required
        self.desired_min_tx_us, self.required_min_rx_us = desired, required

    def _end_poll(self) -> None:
        self.poll_active = False
        self._tx_in_use_us = self.desired_min_tx_us
        self._rx_for_detect_us = self.required_min_rx_us

    def _intervals_for_state(self) -> tuple[int, int]:
        desired = self.config.desired_min_tx_us
        if self.state != State.UP:
            desired = max(desired, SLOW_TX_US)
        return desired, self.config.required_min_rx_us

    def _enter(self, new: State, diag: int, now: float, out: Output, peer_admin_down: bool = False) -> None:
        if new == self.state:
            return
        out.changes.append(StateChange(self.state, new, diag, now, peer_admin_down))
        self.state = new
        self.local_diag = diag
        if new != State.UP:
            self.poll_active = False
        self._set_intervals(*self._intervals_for_state())
        if new != State.UP:
            self._end_poll()
        # Tell the peer at once instead of waiting up to a (slow) interval.
        if self._may_transmit():
            self.next_tx = now

    def _forget_remote(self) -> None:
        self.remote_discr = 0
        self.remote_state = State.DOWN
        self.remote_min_rx_us = 1
        self.remote_desired_min_tx_us = 0
        self.remote_detect_mult = 0
        self.detect_deadline = None

    # --- inputs ----------------------------------------------------------------------------------

    def receive(self, pkt: ControlPacket, now: float) -> Output:
        """Apply one decoded control packet (RFC 5880 6.8.6, after the packet-only checks)."""
        out = Output()
        if pkt.your_discr not in (0, self.local_discr):
            out.dropped = f"Your Discriminator {pkt.your_discr} is not this session's {self.local_discr}"
            return out
        if pkt.auth is not None:
            out.dropped = (
                f"packet carries {pkt.auth.auth_type.name} authentication, which lbspeaker does not "
                "support: disable BFD authentication on the peer"
            )
            return out
        self.remote_discr = pkt.my_discr
        self.remote_state = pkt.state
        self.remote_desired_min_tx_us = pkt.desired_min_tx_us
        self.remote_detect_mult = pkt.detect_mult
        old_interval = self.tx_interval_us if self.next_tx is not None else None
        self.remote_min_rx_us = pkt.required_min_rx_us
        if pkt.final and self.poll_active:
            self._end_poll()
        if self.state == State.ADMIN_DOWN:
            out.dropped = "session is AdminDown"
            return out
        if pkt.state == State.ADMIN_DOWN:
            if self.state != State.DOWN:
                self._enter(State.DOWN, Diag.NEIGHBOR_SIGNALED_DOWN, now, out, peer_admin_down=True)
        elif self.state == State.DOWN:
            if pkt.state == State.DOWN:
                self._enter(State.INIT, Diag.NONE, now, out)
            elif pkt.state == State.INIT:
                self._enter(State.UP, Diag.NONE, now, out)
        elif self.state == State.INIT:
            if pkt.state in (State.INIT, State.UP):
                self._enter(State.UP, Diag.NONE, now, out)
        elif pkt.state == State.DOWN:  # Up
            self._enter(State.DOWN, Diag.NEIGHBOR_SIGNALED_DOWN, now, out)
        if pkt.poll:
            out.send.append(self.packet(final=True))
        self.detect_deadline = now + self.detection_time_us * _US
        self._reschedule_tx(now, old_interval)
        return out

    def _reschedule_tx(self, now: float, old_interval: int | None) -> None:
        """Keep the transmit timer consistent after the peer's values or the state changed."""
        if not self._may_transmit():
            self.next_tx = None
        elif self.next_tx is None:
            self.next_tx = now
        elif old_interval is not None and self.tx_interval_us < old_interval:
            self.next_tx = min(self.next_tx, self._jittered(now))

    def tick(self, now: float) -> Output:
        """Handle the detection timer and the periodic transmission due at `now`."""
        out = Output()
        if self.detect_deadline is not None and now >= self.detect_deadline:
            if self.state in (State.INIT, State.UP):
                self._enter(State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, now, out)
            self._forget_remote()
            self._reschedule_tx(now, None)
        if self.next_tx is not None and now >= self.next_tx:
            if self._may_transmit():
                out.send.append(self.packet())
                self.next_tx = self._jittered(now)
            else:
                self.next_tx = None
        return out

    def reconfigure(self, config: SessionConfig, now: float) -> Output:
        """Take a changed profile; interval changes go through a Poll Sequence while Up."""
        out = Output()
        self.config = config
        old = self.tx_interval_us
        self._set_intervals(*self._intervals_for_state())
        self._reschedule_tx(now, old)
        if self.poll_active and self._may_transmit():
            self.next_tx = now  # start the Poll Sequence now
        return out

    def admin_down(self, now: float) -> Output:
        """Stop the session on purpose (the peer sees AdminDown, not a failure)."""
        out = Output()
        self._enter(State.ADMIN_DOWN, Diag.ADMINISTRATIVELY_DOWN, now, out)
        self.detect_deadline = None
        out.send.append(self.packet())
        return out

    def admin_up(self, now: float) -> Output:
        """Leave AdminDown: start over from Down."""
        out = Output()
        if self.state == State.ADMIN_DOWN:
            self._enter(State.DOWN, self.local_diag, now, out)
        return out

