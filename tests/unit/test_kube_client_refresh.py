"""The credential refresh hook runs at most once per `REFRESH_EVERY_S`, not before every request.

Why: the kubeconfig loader's hook re-applies the whole kubeconfig each time (setting `host`
re-reads every proxy variable of the environment); measured against the lab API server that
was ~40 % of a request's client CPU (GET 590 -> 323 us, create 798 -> 493 us).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from lbspeaker.kube import client as kube_client


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_throttled_hook_runs_once_per_period_and_survives_reinstalling_itself() -> None:
    conf = k8s_client.Configuration()
    calls: list[float] = []
    clock = Clock()

    def loader_hook(c: Any) -> None:  # as kube_config's: it sets itself as the hook again
        calls.append(clock.t)
        c.refresh_api_key_hook = loader_hook

    conf.refresh_api_key_hook = loader_hook
    kube_client.throttle_refresh(conf, every=5.0, clock=clock)
    for step in range(0, 121):  # 12 s in 0.1 s steps, one "request" each
        clock.t = step / 10
        conf.refresh_api_key_hook(conf)
    assert calls == [0.0, 5.0, 10.0]


def test_no_hook_stays_no_hook() -> None:
    conf = k8s_client.Configuration()
    kube_client.throttle_refresh(conf)
    assert conf.refresh_api_key_hook is None


def test_a_token_kubeconfig_does_not_reload_itself_per_request(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    kc = tmp_path / "kubeconfig"
    kc.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: secret-token}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    api = kube_client.load_api_client(str(kc))
    conf = api.configuration
    reads = []
    monkeypatch.setattr("kubernetes.client.configuration.getproxies", lambda: reads.append(1) or {})
    for _ in range(200):  # what the client does before each request
        auth = conf.auth_settings()
    assert auth["BearerToken"]["value"] == "Bearer secret-token"
    assert len(reads) <= 1, f"the kubeconfig was re-applied {len(reads)} times for 200 requests"
