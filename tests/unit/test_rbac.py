"""The manifests' RBAC grants each component exactly what its code calls, where it calls it.

The needs come from `tools.rbac` (an AST scan of the code, see its docstring); the
grants from the rendered kustomize base. When this fails after a code change, run
`python -m tools.rbac --rules` and update manifests/base/rbac-*.yaml with a comment
saying why each new verb is needed.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lbspeaker.api.constants import NAMESPACE
from lbspeaker.lbctl.kustomize import render
from tools.rbac import ALL, OWN, UNKNOWN, Analyzer, Grant, Need, grants_for, placement

REPO = Path(__file__).resolve().parents[2]
SERVICE_ACCOUNTS = {"controller": "controller", "speaker": "speaker"}


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer()


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render(REPO / "manifests")


def derived(analyzer: Analyzer, component: str):
    try:
        return analyzer.derive(component)
    except LookupError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("component", sorted(SERVICE_ACCOUNTS))
def test_no_unresolved_call_sites(analyzer: Analyzer, component: str) -> None:
    d = derived(analyzer, component)
    assert not d.unresolved, (
        "API calls whose resource is computed at run time: declare them in RBAC_DECLARED next to the "
        "call:\n" + "\n".join(d.unresolved)
    )


@pytest.mark.parametrize("component", sorted(SERVICE_ACCOUNTS))
def test_roles_grant_exactly_what_the_code_needs(
    analyzer: Analyzer, objects: list[dict], component: str
) -> None:
    d = derived(analyzer, component)
    want = placement(d, NAMESPACE)
    have = grants_for(objects, NAMESPACE, SERVICE_ACCOUNTS[component])
    missing = sorted(want - have)
    extra = sorted(have - want)

    def why(g: Grant) -> str:
        sites = ", ".join(f"{s.file}:{s.line}" for s in sorted(d.needs.get(g.need, ())))
        return f"  {g.scope}: {g.need.group or 'core'} {g.need.resource} {g.need.verb}  ({sites})"

    assert not missing and not extra, (
        f"{component}: run `python -m tools.rbac --rules {component}`\n"
        + ("missing (the code calls it, no role grants it):\n" + "\n".join(map(why, missing)) + "\n"
           if missing else "")
        + ("extra (granted, no code calls it):\n" + "\n".join(map(why, extra)) if extra else "")
    )


def test_speaker_cannot_write_services(objects: list[dict]) -> None:
    have = grants_for(objects, NAMESPACE, "speaker")
    writes = {"create", "update", "patch", "delete", "deletecollection", "*"}
    assert not [g for g in have if g.need.resource.startswith("services") and g.need.verb in writes
                and g.need.group == ""]


def bound_rules(objects: list[dict], service_account: str) -> list[dict]:
    """The raw rules (with resourceNames) of every role bound to the service account."""
    roles = {(o["kind"], o["metadata"].get("namespace") or "", o["metadata"]["name"]): o.get("rules") or []
             for o in objects if o.get("kind") in ("Role", "ClusterRole")}
    out: list[dict] = []
    for b in objects:
        if b.get("kind") not in ("RoleBinding", "ClusterRoleBinding") or not any(
            s.get("kind") == "ServiceAccount" and s.get("name") == service_account
            and s.get("namespace") == NAMESPACE for s in b.get("subjects") or []
        ):
            continue
        ref = b["roleRef"]
        ns = "" if ref["kind"] == "ClusterRole" else b["metadata"].get("namespace") or ""
        out += roles[(ref["kind"], ns, ref["name"])]
    return out


def test_controller_cannot_touch_pods_or_other_secrets(objects: list[dict]) -> None:
    """No Pods ever. Of Secrets, the controller reads only the speakers' heartbeat key, by name, and may
    create (RBAC cannot limit create by name: the admission policy does, see test_admission_policy)."""
    have = grants_for(objects, NAMESPACE, "controller")
    assert not [g for g in have if g.need.resource.split("/")[0] == "pods"]
    for rule in bound_rules(objects, "controller"):
        if "secrets" not in rule["resources"]:
            continue
        assert rule["resources"] == ["secrets"], rule
        assert rule["verbs"] == ["create"] or (
            set(rule["verbs"]) <= {"get"} and rule.get("resourceNames") == ["lbspeaker-memberlist"]), rule


@pytest.mark.parametrize("service_account, resource, verbs, names", [
    # The controller's own Lease only, by name (create: see the admission policy).
    ("controller", "leases", {"get", "update"}, ["lbspeaker-controller"]),
    # The speakers watch only the heartbeat key Secret (get stays open: BGP passwords by any name).
    ("speaker", "secrets", {"list", "watch"}, ["lbspeaker-memberlist"]),
])
def test_narrowed_by_resource_name(objects: list[dict], service_account: str, resource: str,
                                   verbs: set[str], names: list[str]) -> None:
    rules = [r for r in bound_rules(objects, service_account) if resource in r["resources"]]
    for verb in verbs:
        granting = [r for r in rules if verb in r["verbs"]]
        assert granting and all(r.get("resourceNames") == names for r in granting), (verb, granting)


def test_no_wildcards(objects: list[dict]) -> None:
    for obj in objects:
        for rule in obj.get("rules") or []:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in (rule.get(key) or []), (obj["metadata"]["name"], rule)


def test_controller_derivation_sees_its_calls(analyzer: Analyzer) -> None:
    """Anchors: the calls the controller is known to make are found (guards the scanner itself)."""
    needs = set(derived(analyzer, "controller").needs)
    for need in (
        Need("", "services", "watch"),
        Need("", "services/status", "update"),
        Need("", "services", "patch"),
        Need("", "events", "create"),
        Need("coordination.k8s.io", "leases", "update"),
        Need("lbspeaker.io", "ipaddresspools/status", "update"),
    ):
        assert need in needs, need


# -- the scanner on a synthetic tree ------------------------------------------------------------------


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def fake_tree(tmp_path: Path) -> Path:
    for pkg in ("lbspeaker", "lbspeaker/kube", "controller", "lbspeaker/speaker"):
        write(tmp_path, f"{pkg}/__init__.py", "")
    write(tmp_path, "lbspeaker/kube/status.py", """
        def update_status(rest, resource, namespace, name, mutate):
            obj = rest.get(resource, name, namespace)
            return rest.replace_status(resource, obj)
    """)
    write(tmp_path, "lbspeaker/kube/events.py", """
        from lbspeaker.kube.resources import EVENTS
        class EventRecorder:
            def _write(self, ns):
                self.rest.create(EVENTS, {}, ns)
    """)
    write(tmp_path, "lbspeaker/unused.py", """
        from lbspeaker.kube.resources import PODS
        def f(rest):
            rest.delete(PODS, "x", "y")
    """)
    write(tmp_path, "lbspeaker/controller/main.py", """
        from lbspeaker.api.constants import NAMESPACE
        from lbspeaker.kube import resources as R
        from lbspeaker.kube.cache import WatchCache
        from lbspeaker.kube.status import update_status

        class C:
            def __init__(self, rest, cfg):
                self.rest = rest
                ns = cfg.namespace
                WatchCache(rest, R.SERVICES)
                WatchCache(rest, R.LEASES, namespace=ns)
                self._write(R.IPADDRESSPOOLS, {})

            def _write(self, resource, obj):
                update_status(self.rest, resource, NAMESPACE, "n", None)

            def odd(self, kind):
                self.rest.get(pick(kind), "n", "ns")

        def g():
            from lbspeaker.kube.events import EventRecorder
    """)
    return tmp_path


def test_scanner_follows_wrappers_imports_and_namespaces(fake_tree: Path) -> None:
    import tools.rbac as rbac

    analyzer = rbac.Analyzer(fake_tree)
    d = analyzer.derive("controller", "lbspeaker.controller.main")
    got = {(n.resource, n.verb): {s.namespace for s in sites} for n, sites in d.needs.items()}
    assert got == {
        ("services", "list"): {ALL},
        ("services", "watch"): {ALL},
        ("leases", "list"): {OWN},
        ("leases", "watch"): {OWN},
        ("ipaddresspools", "get"): {OWN},
        ("ipaddresspools/status", "update"): {UNKNOWN},
        ("events", "create"): {UNKNOWN},
    }
    assert "lbspeaker.unused" not in d.modules
    assert len(d.unresolved) == 1 and "pick(kind)" in d.unresolved[0]
    scopes = {(g.need.resource, g.scope) for g in placement(d, "ns1")}
    assert ("services", "cluster") in scopes
    assert ("leases", "ns1") in scopes
    assert ("ipaddresspools/status", "ns1") in scopes
    assert ("events", "cluster") in scopes


def test_declared_table(fake_tree: Path) -> None:
    import tools.rbac as rbac

    write(fake_tree, "lbspeaker/controller/main.py", """
        from lbspeaker.kube.resources import SECRETS
        RBAC_DECLARED = ((SECRETS, "get"), (SECRETS, "update", "status"))
    """)
    d = rbac.Analyzer(fake_tree).derive("controller", "lbspeaker.controller.main")
    assert {(n.resource, n.verb) for n in d.needs} == {("secrets", "get"), ("secrets/status", "update")}


def test_lbctl_is_read_only(analyzer: Analyzer) -> None:
    """lbctl imports lease.py only for its pure helpers: LeaseLock's writes must not count for it."""
    needs = derived(analyzer, "lbctl").needs
    assert needs
    writes = sorted(n for n in needs if n.verb not in ("get", "list"))
    assert not writes, writes


def test_lbctl_role_grants_what_lbctl_reads(analyzer: Analyzer, objects: list[dict]) -> None:
    """`lbspeaker:lbctl` (for people to bind to themselves) allows exactly lbctl's reads."""
    role = next(
        o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "lbspeaker:lbctl"
    )
    granted = {
        Need(group, res, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == set(derived(analyzer, "lbctl").needs)
