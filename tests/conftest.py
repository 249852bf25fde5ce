"""Shared fixtures: the lab API server (a kube-apiserver stand-in), kubeconfigs and API clients.

`lab_apiserver_factory` starts as many servers as a test wants (with options) and
stops them at teardown; `apiserver` is the common one-per-test instance and
`apiserver_with_crds` also applies every CRD in `manifests/crds/` over HTTP, the
way CRDs reach a real cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.apiserver import LabApiServer

REPO = Path(__file__).resolve().parent.parent
CRD_DIR = REPO / "manifests" / "crds"

ServerFactory = Callable[..., LabApiServer]


def crd_documents(directory: Path = CRD_DIR) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document under `directory` (empty if none yet)."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs


def apply_crds(url: str, docs: list[dict[str, Any]]) -> None:
    """POST each CRD (replace on 409) and wait until the server serves it, as `kubectl apply` would."""
    import json
    import urllib.error
    import urllib.request

    for doc in docs:
        data = json.dumps(doc).encode()
        req = urllib.request.Request(
            f"{url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            data=data,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(req, timeout=10).read()
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise AssertionError(f"creating CRD {doc['metadata']['name']}: {e.code} {e.read()!r}") from e
            name = doc["metadata"]["name"]
            req = urllib.request.Request(
                f"{url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                data=data,
                method="PUT",
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(req, timeout=10).read()


@pytest.fixture
def lab_apiserver_factory() -> Iterator[ServerFactory]:
    """Factory: `factory(**LabApiServer kwargs)` -> a started server, stopped at teardown."""
    servers: list[LabApiServer] = []

    def make(**kwargs: Any) -> LabApiServer:
        server = LabApiServer(**kwargs)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def apiserver(lab_apiserver_factory: ServerFactory) -> LabApiServer:
    """A fresh lab API server for one test (bookmarks every 0.2 s so watch tests stay quick)."""
    return lab_apiserver_factory(bookmark_interval=0.2)


@pytest.fixture
def apiserver_with_crds(apiserver: LabApiServer) -> LabApiServer:
    """`apiserver` with every CRD of `manifests/crds/` applied over HTTP (none yet: nothing applied)."""
    apply_crds(apiserver.url, crd_documents())
    return apiserver


@pytest.fixture
def kubeconfig(apiserver: LabApiServer, tmp_path: Path) -> Path:
    """Path of a kubeconfig pointing at `apiserver`."""
    return apiserver.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def api_client(kubeconfig: Path) -> Iterator[Any]:
    """An official `kubernetes.client.ApiClient` configured from `kubeconfig`."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    api = client.ApiClient(configuration=cfg)
    yield api
    api.close()
