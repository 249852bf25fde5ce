"""`Rest` talks urllib3 directly: what the official client did for it must still happen.

The bearer token reaches the server (the lab API server runs RBAC only for its `users`' tokens,
so a lost Authorization header would turn a 403 into a 200), the credential refresh hook is
consulted on each request (throttled by `throttle_refresh`), a proxy from the configuration
is used, and the path part of the server URL is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import urllib3

from lab.apiserver import LabApiServer
from lbspeaker.kube import client as kube_client
from lbspeaker.kube.resources import CONFIGMAPS, NAMESPACES
from lbspeaker.kube.rest import ApiError, Rest

NOBODY = "nobody-token"  # a user without any binding: every request is forbidden


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_bearer_token_is_sent(lab_apiserver_factory: Any, tmp_path: Path) -> None:
    server: LabApiServer = lab_apiserver_factory(users={NOBODY: "nobody"})
    rest = Rest(kube_client.load_api_client(str(server.write_kubeconfig(tmp_path / "kc", token=NOBODY))))
    with pytest.raises(ApiError) as err:
        rest.get(NAMESPACES, "default")
    assert err.value.status == 403
    admin = Rest(kube_client.load_api_client(str(server.write_kubeconfig(tmp_path / "kc2"))))
    assert admin.get(NAMESPACES, "default")["metadata"]["name"] == "default"


def test_the_refresh_hook_is_honoured_and_throttled(lab_apiserver_factory: Any, tmp_path: Path) -> None:
    server: LabApiServer = lab_apiserver_factory(users={NOBODY: "nobody"})
    api = kube_client.load_api_client(str(server.write_kubeconfig(tmp_path / "kc", token=NOBODY)))
    conf = api.configuration
    current = [NOBODY]
    refreshes: list[float] = []
    clock = Clock()

    def hook(c: Any) -> None:  # an exec plugin handing out a new token
        refreshes.append(clock.t)
        c.api_key["BearerToken"] = current[0]

    conf.refresh_api_key_hook = hook
    kube_client.throttle_refresh(conf, every=5.0, clock=clock)
    rest = Rest(api)
    with pytest.raises(ApiError) as err:
        rest.get(NAMESPACES, "default")
    assert err.value.status == 403
    current[0] = "admin-token"  # not one of the server's users: acts as cluster admin
    clock.t = 1.0
    with pytest.raises(ApiError) as err:  # within the period: the old token still
        rest.get(NAMESPACES, "default")
    assert err.value.status == 403
    clock.t = 6.0
    assert rest.get(NAMESPACES, "default")["metadata"]["name"] == "default"
    assert refreshes == [0.0, 6.0]


def test_a_configured_proxy_is_used(apiserver: LabApiServer, tmp_path: Path) -> None:
    """The cluster URL is unreachable; only the proxy (the lab server itself, which serves
    absolute-form requests) gets the request through."""
    kc = apiserver.write_kubeconfig(tmp_path / "kc", server_url="http://unreachable.invalid:1")
    api = kube_client.load_api_client(str(kc))
    api.configuration.proxy = apiserver.url
    api.configuration.no_proxy = None
    api.rest_client = type(api.rest_client)(api.configuration)
    assert isinstance(api.rest_client.pool_manager, urllib3.ProxyManager)
    rest = Rest(api)
    created = rest.create(CONFIGMAPS, {"metadata": {"name": "via-proxy", "namespace": "default"}})
    assert created["metadata"]["name"] == "via-proxy"
    assert rest.list(CONFIGMAPS, "default", field_selector="metadata.name=via-proxy")["items"]


def test_the_server_url_path_is_kept(apiserver: LabApiServer, tmp_path: Path) -> None:
    """A server URL with a path (e.g. behind Rancher) prefixes every request path."""
    kc = apiserver.write_kubeconfig(tmp_path / "kc", server_url=apiserver.url + "/prefix")
    rest = Rest(kube_client.load_api_client(str(kc)))
    with pytest.raises(ApiError) as err:
        rest.get(NAMESPACES, "default")
    assert err.value.status == 404  # /prefix/api/v1/... is not served: the prefix was sent
    conf = rest.api_client.configuration
    conf.refresh_api_key_hook = None  # so the kubeconfig is not re-applied over the new host
    conf.host = apiserver.url  # the cached pool follows host changes
    assert rest.get(NAMESPACES, "default")["metadata"]["name"] == "default"
