"""Batched packet I/O: `recvmmsg(2)` / `sendmmsg(2)` through ctypes.

Python's socket module has no batch calls, and at tens of thousands of ARP requests
a second the two system calls per request (recv + send) cost more than the Python
that decides the answer. These two calls move up to `batch` frames each, into and
out of buffers allocated once, so a burst costs two system calls per batch instead
of two per frame. Linux only; `MmsgIO.available()` says whether libc has them, and
the responders fall back to plain recv/send when it does not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
from typing import Final

MSG_DONTWAIT: Final = 0x40


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint))


def _libc() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.recvmmsg.argtypes = (ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_void_p)
        lib.sendmmsg.argtypes = (ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int)
    except (OSError, AttributeError):
        return None
    return lib


_LIBC = _libc()


class _Slots:
    """`count` buffers of `size` bytes, each behind its own iovec and mmsghdr."""

    def __init__(self, count: int, size: int) -> None:
        self.size = size
        self.buf = (ctypes.c_ubyte * (count * size))()
        self.view = memoryview(self.buf).cast("B")
        self.iovs = (_Iovec * count)()
        self.msgs = (_Mmsghdr * count)()
        base = ctypes.addressof(self.buf)
        for i in range(count):
            self.iovs[i].iov_base = base + i * size
            self.iovs[i].iov_len = size
            self.msgs[i].msg_hdr.msg_iov = ctypes.pointer(self.iovs[i])
            self.msgs[i].msg_hdr.msg_iovlen = 1


class MmsgIO:
    """Batch receive/send on one (non-blocking, bound) packet socket."""

    def __init__(self, sock: socket.socket, batch: int = 64, frame_size: int = 256) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg not available")
        self.fd = sock.fileno()
        self.batch = batch
        self._rx = _Slots(batch, frame_size)
        self._tx = _Slots(batch, frame_size)

    @staticmethod
    def available() -> bool:
        return _LIBC is not None

    def recv(self) -> list[bytes]:
        """Up to `batch` frames waiting now ([] when none); OSError for real errors."""
        assert _LIBC is not None
        n = _LIBC.recvmmsg(self.fd, self._rx.msgs, self.batch, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return []
            raise OSError(err, os.strerror(err))
        size, view, msgs = self._rx.size, self._rx.view, self._rx.msgs
        return [bytes(view[i * size : i * size + msgs[i].msg_len]) for i in range(n)]

    def send(self, frames: list[bytes]) -> int:
        """Send `frames` (each at most frame_size bytes) in batches; return how many went out."""
        assert _LIBC is not None
        sent = 0
        size, view, iovs, msgs = self._tx.size, self._tx.view, self._tx.iovs, self._tx.msgs
        for start in range(0, len(frames), self.batch):
            chunk = frames[start : start + self.batch]
            for i, frame in enumerate(chunk):
                view[i * size : i * size + len(frame)] = frame
                iovs[i].iov_len = len(frame)
            n = _LIBC.sendmmsg(self.fd, msgs, len(chunk), 0)
            if n < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            sent += n
            if n < len(chunk):
                break  # the socket buffer is full: the rest is dropped, as a failed send() would be
        return sent
