"""`LabApiServer`: the lab's kube-apiserver stand-in, run on its own event loop in a thread.

NOT part of the product: a test and lab fixture that speaks enough of the real
Kubernetes REST/watch protocol for the official client, kubectl-style clients and
`lbspeaker.kube`. Everything the server stores lives on its event loop; the
thread-safe methods here hop onto that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from lab.apiserver.http import Handlers, build_app
from lab.apiserver.registry import Registry
from lab.apiserver.store import Store
from lab.files import write_atomic

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def listen_socket_in_netns(netns: str, host: str, port: int, backlog: int = 128) -> socket.socket:
    """A TCP listening socket created inside network namespace `netns` (a socket keeps its netns).

    Enters the namespace on a short-lived helper thread (setns is per thread), so the
    calling thread never leaves its own namespace even if something fails half way.
    """
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
            result.append(sock)
        except BaseException as e:  # handed back to the caller's thread
            result.append(e)

    t = threading.Thread(target=work, name=f"netns-listen-{netns}")
    t.start()
    t.join()
    out = result[0]
    if isinstance(out, BaseException):
        raise out
    return out


class LabApiServer:
    """A kube-apiserver stand-in for tests and the lab (not part of the product).

    `start()` runs it in a daemon thread and returns the base URL; `stop()` ends it.
    Test hooks: `expire_history()` (every current resourceVersion becomes too old:
    watches from it get 410 Expired), `cut_watches()` (abort every open watch stream),
    `kill()` (crash; returns the store for `initial_state=`, a restart with etcd kept).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_sockets: Iterable[socket.socket] = (),
        event_history_size: int = 10000,
        bookmark_interval: float = 1.0,
        rv_block_timeout: float = 3.0,
        initial_state: dict[str, Any] | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.extra_sockets = list(extra_sockets)
        self.event_history_size = event_history_size
        self.bookmark_interval = bookmark_interval
        self.rv_block_timeout = rv_block_timeout
        self.initial_state = initial_state  # Store.export_state() of a previous server ("etcd kept")
        self.users = dict(users or {})  # bearer token -> user: requests with these go through RBAC
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopped: asyncio.Event | None = None
        self.store: Store | None = None
        self.handlers: Handlers | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> str:
        """Start serving; returns `http://HOST:PORT`."""
        if self._thread is not None:
            return self.url
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as e:
                failure.append(e)
                ready.set()
            finally:
                # finish whatever handler tasks are left so nothing is collected after the loop closed
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name="lab-apiserver", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            self._thread = None
            raise RuntimeError(f"lab API server failed to start: {failure[0]!r}") from failure[0]
        return self.url

    async def _serve(self, ready: threading.Event) -> None:
        registry = Registry()
        self.store = Store(registry, self.event_history_size)
        if self.initial_state is not None:
            self.store.import_state(self.initial_state)
        app, self.handlers = build_app(
            self.store, registry, self.bookmark_interval, self.rv_block_timeout, self.users
        )
        self._stopped = asyncio.Event()
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=2.0, handler_cancellation=True
        )
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        for sock in self.extra_sockets:
            await web.SockSite(runner, sock).start()
        server = getattr(site, "_server", None)
        port = server.sockets[0].getsockname()[1] if server and server.sockets else self.port
        self.port = port
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}"
        ready.set()
        await self._stopped.wait()
        # end open watches cleanly (terminating chunk) before the sockets close
        self.store.close_watches()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while self.handlers.open_streams and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await runner.cleanup()

    def stop(self) -> None:
        """Stop serving and join the thread (open watches end cleanly)."""
        if self._thread is None or self._loop is None or self._stopped is None:
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(15)
        self._thread = None

    def kill(self) -> dict[str, Any]:
        """Stop as a crash would (every watch aborted mid-stream); returns the store's state."""
        store = self._require_store()
        state = self.call(store.export_state)
        self.call(store.cut_watches)
        self.stop()
        return state

    def __enter__(self) -> LabApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- thread-safe access --------------------------------------------------------------------------
    def call(self, fn: Callable[[], T], timeout: float = 30) -> T:
        """Run `fn` on the server loop and return its result (for test hooks and in-process seeding)."""
        if self._loop is None:
            raise RuntimeError("server not started")

        async def wrapper() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def expire_history(self) -> None:
        """Make every resourceVersion handed out so far too old: watches from them get 410 Expired."""
        store = self._require_store()
        self.call(store.expire_history)

    def cut_watches(self) -> int:
        """Abort every open watch stream mid-stream (no clean end of the chunked body); returns how many."""
        store = self._require_store()
        return self.call(store.cut_watches)

    def add_user(self, token: str, name: str) -> None:
        """Requests bearing `token` act as User `name` and go through RBAC from now on."""
        handlers = self.handlers
        if handlers is None:
            raise RuntimeError("server not started")
        self.users[token] = name
        self.call(lambda: handlers.users.__setitem__(token, name))

    def open_watch_count(self) -> int:
        store = self._require_store()
        return self.call(lambda: sum(len(ws) for ws in store.watchers.values()))

    @property
    def resource_version(self) -> int:
        store = self._require_store()
        return self.call(lambda: store.rv)

    def _require_store(self) -> Store:
        if self.store is None:
            raise RuntimeError("server not started")
        return self.store

    # -- kubeconfig ----------------------------------------------------------------------------------
    def write_kubeconfig(
        self, path: str | os.PathLike[str], server_url: str | None = None, token: str = "lab-token"
    ) -> Path:
        """Write a kubeconfig for this server (plain http; `token` is one of `users` to act as one)."""
        url = server_url or self.url
        if not url:
            raise RuntimeError("server not started and no server_url given")
        return write_kubeconfig(path, url, token)


def write_kubeconfig(path: str | os.PathLike[str], server_url: str, token: str = "lab-token") -> Path:
    """A kubeconfig with one cluster/user/context `lab` pointing at `server_url`."""
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {"server": server_url}}],
        "users": [{"name": "lab", "user": {"token": token}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab", "namespace": "default"}}],
        "current-context": "lab",
        "preferences": {},
    }
    return write_atomic(Path(path), yaml.safe_dump(config, sort_keys=False))
