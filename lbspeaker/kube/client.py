"""Building the `kubernetes` ApiClient that every other `lbspeaker.kube` module talks through.

Only transport, config loading, auth and TLS come from the official client; request
building and JSON decoding are ours (see `rest.py`), so objects stay plain dicts.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config


@dataclass(frozen=True)
class Timeouts:
    """Per-request timeouts in seconds; watches get their own read timeout (see `cache.py`)."""

    connect: float = 5.0
    read: float = 30.0


DEFAULT_TIMEOUTS = Timeouts()


REFRESH_EVERY_S = 5.0


def throttle_refresh(configuration: k8s_client.Configuration, every: float = REFRESH_EVERY_S,
                     clock: Callable[[], float] = time.monotonic) -> None:
    """Run the loader's credential refresh hook at most once per `every` seconds.

    Why: the client calls it before every request, and the kubeconfig loader's hook re-applies
    the whole kubeconfig each time (setting `host` re-reads every proxy variable of the
    environment): about half of a request's client CPU, measured with 1,000 GETs against the
    lab API server. Tokens live for minutes (exec plugins, bound service account tokens), so
    a few seconds of staleness costs nothing.
    """
    if configuration.refresh_api_key_hook is None:
        return
    lock = threading.Lock()
    last = [float("-inf")]
    inner = [configuration.refresh_api_key_hook]

    def throttled(conf: k8s_client.Configuration) -> None:
        with lock:
            now = clock()
            if now - last[0] < every:
                return
            last[0] = now
        hook = inner[0]
        if hook is not None:
            hook(conf)
        # The kubeconfig loader's hook installs itself again on each call: keep wrapping it.
        if conf.refresh_api_key_hook is not throttled:
            inner[0] = conf.refresh_api_key_hook
            conf.refresh_api_key_hook = throttled

    configuration.refresh_api_key_hook = throttled


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s_client.ApiClient:
    """Return an ApiClient for `kubeconfig`, else the in-cluster service account, else $KUBECONFIG
    or ~/.kube/config.

    A kubeconfig given explicitly always wins, so a controller run out of cluster
    from inside a pod still talks to the cluster it was told to.
    """
    configuration = k8s_client.Configuration()
    if kubeconfig:
        k8s_config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration, persist_config=False
        )
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        # $KUBECONFIG is read here, not at import time as the client's default does.
        k8s_config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    throttle_refresh(configuration)
    # TCP keepalive so a half-open watch connection is noticed even between bookmarks.
    configuration.keep_alive = True
    # Our own code retries with backoff; urllib3 retrying under it would multiply delays.
    configuration.retries = False
    # Several caches each hold one streaming connection plus the writers share the rest.
    configuration.connection_pool_maxsize = 32
    api_client = k8s_client.ApiClient(configuration)
    api_client.user_agent = "lbspeaker/0.1"
    return api_client
