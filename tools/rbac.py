"""Derive the RBAC each component needs from its code (an AST scan), so the manifests' roles can be
checked against what the code really calls, not against a hand-kept list.

How it works:

* A component is its entry module plus every `lbspeaker` module it imports,
  transitively (imports inside functions count: they run too).
* API calls are recognised at their sources, the `lbspeaker.kube` primitives: `Rest` methods
  (`get`, `list`, `list_all`, `iter_list`, `create`, `replace`, `replace_status`, `patch`,
  `patch_status`, `delete`) and `WatchCache(rest, RESOURCE, ...)` (list + watch). The resource
  argument must be a `lbspeaker.kube.resources` constant.
* Wrappers are followed: a function whose parameter reaches a primitive's resource argument
  (`update_status(rest, resource, ...)`, the controller's `write_status(ctx, resource, ...)`) gets a
  summary, and each of its call sites with a constant becomes a need of the calling module.
  Helpers with the resource fixed inside (`EventRecorder`, `LeaseLock`) are plain calls with
  constants in their own modules, which join the component when it imports them.
* Where the code computes the resource at run time, nothing can be derived: such a call site
  is reported as *unresolved* (tests fail on it) unless the module declares what it needs in a
  module-level table next to the call:  `RBAC_DECLARED = ((SERVICES, "get"), ...)`.

Namespaces: a call whose namespace is missing/None on a list or watch spans all namespaces, and
a cluster-scoped resource is cluster-wide: both need a ClusterRole. A namespace written as the
component's own (`NAMESPACE`, `self.namespace`, `cfg.namespace`, `args.namespace`) or as a string
literal is recorded, so a check can insist on a namespaced Role. The derivation is module-grained
(a module imported for one pure helper brings its API calls along): a deliberate over-approximation
that errs towards "needed".

`python -m tools.rbac [controller|speaker]` prints the needs with their call sites.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lbspeaker.kube import resources as R

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("lbspeaker",)
COMPONENTS: dict[str, str] = {
    "controller": "lbspeaker.controller.main",
    "speaker": "lbspeaker.speaker.main",
    "lbctl": "lbspeaker.lbctl.cli",  # run by people: what a read-only role for them must allow
}
# The primitives themselves are modelled, not scanned (their insides are generic over `resource`).
NOT_SCANNED = {"lbspeaker.kube.rest", "lbspeaker.kube.cache", "tools.rbac"}
LIBRARY_PREFIX = "lbspeaker.kube."
RESOURCES_MODULE = "lbspeaker.kube.resources"
WATCHCACHE = "lbspeaker.kube.cache.WatchCache"
DECLARED_TABLE = "RBAC_DECLARED"

# Rest method -> (verb, subresource, index of the namespace argument or None: from the object).
REST_METHODS: dict[str, tuple[str, str | None, int | None]] = {
    "get": ("get", None, 2),
    "list": ("list", None, 1),
    "list_all": ("list", None, 1),
    "iter_list": ("list", None, 1),
    "create": ("create", None, 2),
    "replace": ("update", None, None),
    "replace_status": ("update", "status", None),
    "patch": ("patch", None, 3),
    "patch_status": ("patch", "status", 3),
    "delete": ("delete", None, 2),
}
LIST_VERBS = {"list", "watch"}
OWN_NAMESPACE_ROOTS = {"self", "cfg", "config", "args", "opts", "options"}

# Namespace classifications.
ALL = "*all*"  # every namespace (list/watch without namespace) or a cluster-scoped resource
OWN = "*own*"  # the component's own namespace
UNKNOWN = "*unknown*"  # computed at run time (e.g. the namespace of the object at hand)


@dataclass(frozen=True, order=True)
class Need:
    """One permission: API group, resource (with `/subresource`), verb."""

    group: str
    resource: str
    verb: str


@dataclass(frozen=True, order=True)
class Site:
    """Where a need comes from, and in which namespace the call happens (ALL, OWN, UNKNOWN, or a name)."""

    file: str
    line: int
    namespace: str


@dataclass
class Derivation:
    """What one component needs, why (call sites), and what could not be resolved."""

    component: str
    modules: list[str]
    needs: dict[Need, set[Site]] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)

    def add(self, need: Need, site: Site) -> None:
        self.needs.setdefault(need, set()).add(site)


# -- module discovery ----------------------------------------------------------------------------


def all_modules(root: Path = REPO) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, target] if target else parts)


def import_map(tree: ast.Module, module: str, is_package: bool) -> dict[str, str]:
    """Local name -> fully qualified name (module or module.attribute), from every import statement."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    names[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(module, is_package, node.level, node.module)
                if node.level
                else (node.module or "")
            )
            for alias in node.names:
                names[alias.asname or alias.name] = f"{base}.{alias.name}"
    return names


def imported_modules(tree: ast.Module, module: str, is_package: bool, known: dict[str, Path]) -> set[str]:
    """Project modules this module imports (a `from pkg import sub` imports the submodule too)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(module, is_package, node.level, node.module)
                if node.level
                else (node.module or "")
            )
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # parents' __init__ run first
                prefix = ".".join(parts[:i])
                if prefix in known:
                    found.add(prefix)
    return found


def closure(entry: str, known: dict[str, Path], trees: dict[str, ast.Module]) -> list[str]:
    seen: set[str] = set()
    todo = [entry]
    parts = entry.split(".")
    todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    while todo:
        mod = todo.pop()
        if mod in seen or mod not in known:
            continue
        seen.add(mod)
        todo.extend(imported_modules(trees[mod], mod, known[mod].name == "__init__.py", known) - seen)
    return sorted(seen)


# -- per-function summaries ----------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """Where an argument value comes from: a Resource constant, a parameter, a namespace class."""

    resource: R.Resource | None = None
    param: str | None = None
    namespace: str | None = None


@dataclass(frozen=True)
class Effect:
    """A function's parameterised effect: `param` is the resource; namespace is a class or a param."""

    resource_param: str
    verb: str
    subresource: str | None
    namespace: str  # a classification, or "param:<name>"


@dataclass
class Function:
    module: str
    qualname: str
    node: ast.FunctionDef | ast.AsyncFunctionDef
    params: list[str]
    class_name: str | None


class _ModuleInfo:
    def __init__(self, module: str, path: Path, tree: ast.Module) -> None:
        self.module = module
        self.path = path
        self.tree = tree
        self.imports = import_map(tree, module, path.name == "__init__.py")
        self.aliases: dict[str, str] = {}  # module-level NAME = <resource constant>
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                fq = self.qualify(node.value)
                if fq:
                    self.aliases[node.targets[0].id] = fq

    def qualify(self, expr: ast.expr) -> str | None:
        """Fully qualified name of a Name/Attribute chain, through imports and local definitions."""
        if isinstance(expr, ast.Name):
            if expr.id in self.imports:
                return self.imports[expr.id]
            if expr.id in getattr(self, "aliases", {}):
                return self.aliases[expr.id]
            return f"{self.module}.{expr.id}"
        if isinstance(expr, ast.Attribute):
            base = self.qualify(expr.value)
            return f"{base}.{expr.attr}" if base else None
        return None


def resource_constant(fq: str | None) -> R.Resource | None:
    if not fq or not fq.startswith(RESOURCES_MODULE + "."):
        return None
    value = getattr(R, fq.rsplit(".", 1)[1], None)
    return value if isinstance(value, R.Resource) else None


def _params(node: ast.FunctionDef | ast.AsyncFunctionDef, is_method: bool) -> list[str]:
    args = [a.arg for a in [*node.args.posonlyargs, *node.args.args]]
    if is_method and args:
        args = args[1:]
    return args + [a.arg for a in node.args.kwonlyargs]


def _functions(info: _ModuleInfo) -> Iterator[Function]:
    for node in info.tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield Function(info.module, node.name, node, _params(node, False), None)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    static = any(
                        isinstance(d, ast.Name) and d.id == "staticmethod" for d in item.decorator_list
                    )
                    yield Function(
                        info.module, f"{node.name}.{item.name}", item, _params(item, not static), node.name
                    )


def _expr_text(expr: ast.expr) -> str:
    try:
        return ast.unparse(expr)
    except Exception:  # pragma: no cover - ast.unparse handles every expression we parse
        return "?"


class Analyzer:
    """Scans every project module once; `derive(component)` then reads off one component's needs."""

    def __init__(self, root: Path = REPO) -> None:
        self.root = root
        self.known = all_modules(root)
        self.trees = {m: ast.parse(p.read_text(), str(p)) for m, p in self.known.items()}
        self.infos = {m: _ModuleInfo(m, self.known[m], t) for m, t in self.trees.items()}
        self.functions: dict[str, Function] = {}
        for mod, info in self.infos.items():
            if mod in NOT_SCANNED:
                continue
            for fn in _functions(info):
                self.functions[f"{mod}.{fn.qualname}"] = fn
        self.summaries: dict[str, set[Effect]] = {k: set() for k in self.functions}
        # Per module: concrete (need, site) and unresolved call sites.
        self.concrete: dict[str, set[tuple[Need, Site]]] = {}
        self.unresolved: dict[str, set[str]] = {}
        self.owner_of: dict[tuple[str, int], str | None] = {}
        self.declaring: set[str] = set()  # modules with an RBAC_DECLARED table cover their run-time calls
        self._solve()
        self._declared()

    # -- argument classification ------------------------------------------------------------

    def _string_constant(self, fq: str) -> str | None:
        """Value of a module-level `NAME = "literal"` anywhere in the project, by qualified name."""
        mod, _, name = fq.rpartition(".")
        info = self.infos.get(mod)
        if info is None:
            return None
        for node in info.tree.body:
            target = node.target if isinstance(node, ast.AnnAssign) else (
                node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
            )
            value = getattr(node, "value", None)
            if (
                isinstance(target, ast.Name)
                and target.id == name
                and isinstance(value, ast.Constant)
                and isinstance(value.value, str)
            ):
                return value.value
        return None

    @staticmethod
    def _local_value(fn: Function, name: str) -> ast.expr | None:
        """The expression a local variable is set from, when the function assigns it exactly once."""
        values = [
            node.value
            for node in ast.walk(fn.node)
            if isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == name
        ]
        return values[0] if len(values) == 1 else None

    def _arg(self, fn: Function | None, info: _ModuleInfo, expr: ast.expr | None, depth: int = 0) -> Arg:
        if expr is None:
            return Arg(namespace=None)
        if isinstance(expr, ast.Constant):
            if expr.value is None:
                return Arg(namespace=None)
            if isinstance(expr.value, str):
                return Arg(namespace=expr.value)
        if isinstance(expr, ast.Name) and fn is not None and expr.id in fn.params:
            return Arg(param=expr.id)
        if isinstance(expr, ast.Name) and fn is not None and depth < 5:
            local = self._local_value(fn, expr.id)
            if local is not None:
                return self._arg(fn, info, local, depth + 1)
        res = resource_constant(info.qualify(expr))
        if res is not None:
            return Arg(resource=res)
        fq = info.qualify(expr) or ""
        literal = self._string_constant(fq) if fq else None
        if literal is not None:
            return Arg(namespace=OWN if fq.endswith("constants.NAMESPACE") else literal)
        if fq.endswith(".NAMESPACE") and "constants" in fq:
            return Arg(namespace=OWN)
        if isinstance(expr, ast.Attribute) and expr.attr == "namespace":
            root = expr.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in OWN_NAMESPACE_ROOTS:
                return Arg(namespace=OWN)
        return Arg(namespace=UNKNOWN)

    @staticmethod
    def _pick(call: ast.Call, index: int | None, keyword: str) -> ast.expr | None:
        for kw in call.keywords:
            if kw.arg == keyword:
                return kw.value
        if index is not None and index < len(call.args):
            arg = call.args[index]
            return None if isinstance(arg, ast.Starred) else arg
        return None

    def _callee(self, fn: Function | None, info: _ModuleInfo, call: ast.Call) -> str | None:
        func = call.func
        if (
            fn is not None
            and fn.class_name
            and isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in ("self", "cls")
        ):
            return f"{info.module}.{fn.class_name}.{func.attr}"
        fq = info.qualify(func)
        if fq and fq not in self.functions and f"{fq}.__init__" in self.functions:
            return f"{fq}.__init__"
        return fq

    # -- the fixpoint -----------------------------------------------------------------------

    def _calls(self) -> Iterator[tuple[_ModuleInfo, Function | None, ast.Call]]:
        for mod, info in self.infos.items():
            if mod in NOT_SCANNED:
                continue
            fns = list(_functions(info))
            inside: set[int] = set()
            for fn in fns:
                for node in ast.walk(fn.node):
                    if isinstance(node, ast.Call):
                        inside.add(id(node))
                        yield info, fn, node
            for node in ast.walk(info.tree):
                if isinstance(node, ast.Call) and id(node) not in inside:
                    yield info, None, node

    def _effects_of_call(
        self, info: _ModuleInfo, fn: Function | None, call: ast.Call
    ) -> Iterator[tuple[ast.expr | None, str, str | None, ast.expr | None, str | None]]:
        """(resource expr, verb, subresource, namespace expr, fixed namespace class) per effect."""
        func = call.func
        callee = self._callee(fn, info, call)
        if callee == WATCHCACHE:
            res = self._pick(call, 1, "resource")
            ns = self._pick(call, 2, "namespace")
            for verb in ("list", "watch"):
                yield res, verb, None, ns, None
            return
        if isinstance(func, ast.Attribute) and func.attr in REST_METHODS:
            res = self._pick(call, 0, "resource")
            receiver = func.value
            last = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
            is_rest = "rest" in last.lower() or (
                res is not None and resource_constant(info.qualify(res)) is not None
            )
            if is_rest and res is not None:
                verb, sub, ns_index = REST_METHODS[func.attr]
                if func.attr == "patch":
                    sub_expr = self._pick(call, 5, "subresource")
                    if isinstance(sub_expr, ast.Constant) and isinstance(sub_expr.value, str):
                        sub = sub_expr.value
                ns_expr = self._pick(call, ns_index, "namespace") if ns_index is not None else None
                fixed = UNKNOWN if ns_index is None else None
                if func.attr == "create" and ns_expr is None:
                    fixed = UNKNOWN  # from the object's metadata
                yield res, verb, sub, ns_expr, fixed
                return
        if callee and callee in self.summaries:
            target = self.functions[callee]
            for eff in list(self.summaries[callee]):
                index = target.params.index(eff.resource_param)
                res = self._pick(call, index, eff.resource_param)
                if eff.namespace.startswith("param:"):
                    pname = eff.namespace[6:]
                    ns = self._pick(call, target.params.index(pname), pname)
                    yield res, eff.verb, eff.subresource, ns, None
                else:
                    yield res, eff.verb, eff.subresource, None, eff.namespace

    def _solve(self) -> None:
        changed = True
        while changed:
            changed = False
            self.concrete = {}
            self.unresolved = {}
            for info, fn, call in self._calls():
                for res_expr, verb, sub, ns_expr, fixed in self._effects_of_call(info, fn, call):
                    res = self._arg(fn, info, res_expr)
                    if fixed is not None:
                        ns_class: str | None = fixed
                        ns_param = None
                    else:
                        ns = self._arg(fn, info, ns_expr)
                        ns_param = ns.param
                        ns_class = ns.namespace if ns.param is None and ns.resource is None else UNKNOWN
                    if res.param is not None and fn is not None:
                        key = f"{fn.module}.{fn.qualname}"
                        eff = Effect(
                            res.param, verb, sub, f"param:{ns_param}" if ns_param else (ns_class or ALL)
                        )
                        if eff not in self.summaries[key]:
                            self.summaries[key].add(eff)
                            changed = True
                        continue
                    if res.resource is not None:
                        if ns_param is not None:
                            ns_class = UNKNOWN
                        self._record(info, call, res.resource, verb, sub, ns_class)
                        continue
                    if not info.module.startswith(LIBRARY_PREFIX):
                        self.unresolved.setdefault(info.module, set()).add(
                            f"{info.path.relative_to(self.root)}:{call.lineno}: "
                            f"{_expr_text(call.func)}({_expr_text(res_expr) if res_expr else '?'}) "
                            f"-> {verb}"
                        )

    def _record(
        self,
        info: _ModuleInfo,
        node: ast.AST,
        resource: R.Resource,
        verb: str,
        sub: str | None,
        ns: str | None,
    ) -> None:
        if not resource.namespaced:
            namespace = ALL
        elif ns is None:
            namespace = ALL if verb in LIST_VERBS else UNKNOWN
        else:
            namespace = ns
        name = f"{resource.plural}/{sub}" if sub else resource.plural
        line = getattr(node, "lineno", 0)
        site = Site(str(info.path.relative_to(self.root)), line, namespace)
        self.concrete.setdefault(info.module, set()).add((Need(resource.group, name, verb), site))
        self.owner_of[(info.module, line)] = _owner(info.tree, line)

    def _declared(self) -> None:
        """`RBAC_DECLARED = ((RESOURCE, "verb"), (RESOURCE, "verb", "status"), ...)` at module level."""
        for info in self.infos.values():
            for node in info.tree.body:
                if not (
                    isinstance(node, ast.Assign | ast.AnnAssign)
                    and isinstance(node.targets[0] if isinstance(node, ast.Assign) else node.target, ast.Name)
                ):
                    continue
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                if not isinstance(target, ast.Name) or target.id != DECLARED_TABLE or node.value is None:
                    continue
                if not isinstance(node.value, ast.Tuple | ast.List):
                    raise ValueError(f"{info.path}: {DECLARED_TABLE} must be a literal tuple/list")
                self.declaring.add(info.module)
                for entry in node.value.elts:
                    if not isinstance(entry, ast.Tuple | ast.List) or len(entry.elts) not in (2, 3):
                        raise ValueError(f"{info.path}:{entry.lineno}: entries are (RESOURCE, verb[, sub])")
                    res = resource_constant(info.qualify(entry.elts[0]))
                    consts = [e.value for e in entry.elts[1:] if isinstance(e, ast.Constant)]
                    if res is None or len(consts) != len(entry.elts) - 1:
                        raise ValueError(f"{info.path}:{entry.lineno}: cannot read {ast.unparse(entry)}")
                    sub = str(consts[1]) if len(consts) > 1 else None
                    self._record(info, entry, res, str(consts[0]), sub, UNKNOWN)

    # -- results ----------------------------------------------------------------------------

    def derive(self, component: str, entry: str | None = None) -> Derivation:
        entry = entry or COMPONENTS[component]
        if entry not in self.known:
            raise LookupError(f"entry module {entry} of {component} does not exist")
        modules = closure(entry, self.known, self.trees)
        result = Derivation(component, modules)
        used = self._used_library_defs(modules)
        for mod in modules:
            for need, site in self.concrete.get(mod, ()):
                owner = self.owner_of.get((mod, site.line))
                if mod.startswith(LIBRARY_PREFIX) and owner is not None and (mod, owner) not in used:
                    continue  # e.g. lease.py imported only for its pure helpers: LeaseLock unused
                result.add(need, site)
            if mod not in self.declaring:
                result.unresolved.extend(sorted(self.unresolved.get(mod, ())))
        return result

    def _used_library_defs(self, modules: list[str]) -> set[tuple[str, str]]:
        """Top-level classes/functions of `lbspeaker.kube` the component's own code names, directly or
        through other used ones (LeaderElector -> LeaseLock). Name-based, so errs towards "used"."""
        defs: dict[tuple[str, str], set[str]] = {}
        for mod in modules:
            if not mod.startswith(LIBRARY_PREFIX):
                continue
            for node in self.trees[mod].body:
                if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    defs[(mod, node.name)] = _names_in(node)
        names: set[str] = set()
        for mod in modules:
            if not mod.startswith(LIBRARY_PREFIX):
                names |= _names_in(self.trees[mod])
        used: set[tuple[str, str]] = set()
        changed = True
        while changed:
            changed = False
            for key, refs in defs.items():
                if key not in used and key[1] in names:
                    used.add(key)
                    names |= refs
                    changed = True
        return used


def _owner(tree: ast.Module, line: int) -> str | None:
    """Name of the top-level class/function that contains `line` (None at module level)."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and (
            node.lineno <= line <= (node.end_lineno or node.lineno)
        ):
            return node.name
    return None


def _names_in(node: ast.AST) -> set[str]:
    """Every identifier a piece of code mentions: names, attribute names, imported names."""
    out: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            out.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            out.add(sub.attr)
        elif isinstance(sub, ast.ImportFrom | ast.Import):
            out.update(a.name.split(".")[-1] for a in sub.names)
    return out


def derive(component: str, root: Path = REPO) -> Derivation:
    return Analyzer(root).derive(component)


# -- comparing with manifests ---------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Grant:
    """One (group, resource, verb) granted to a service account, and where: "cluster" or a namespace."""

    need: Need
    scope: str


def grants_for(objects: Iterable[dict], namespace: str, service_account: str) -> set[Grant]:
    """Everything bound to `namespace/service_account` by the RBAC objects among `objects`."""
    objects = list(objects)
    roles: dict[tuple[str, str, str], list[dict]] = {}
    for obj in objects:
        if obj.get("kind") in ("ClusterRole", "Role"):
            meta = obj.get("metadata") or {}
            roles[(obj["kind"], meta.get("namespace") or "", meta["name"])] = obj.get("rules") or []
    out: set[Grant] = set()
    for obj in objects:
        kind = obj.get("kind")
        if kind not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = obj.get("subjects") or []
        if not any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == service_account
            and s.get("namespace") == namespace
            for s in subjects
        ):
            continue
        meta = obj.get("metadata") or {}
        ref = obj["roleRef"]
        role_ns = "" if ref["kind"] == "ClusterRole" else meta.get("namespace") or ""
        rules = roles.get((ref["kind"], role_ns, ref["name"]))
        if rules is None:
            raise LookupError(f"{kind} {meta.get('name')} refers to missing {ref['kind']} {ref['name']}")
        scope = "cluster" if kind == "ClusterRoleBinding" else str(meta.get("namespace"))
        for rule in rules:
            for group in rule.get("apiGroups") or [""]:
                for res in rule.get("resources") or []:
                    for verb in rule.get("verbs") or []:
                        out.add(Grant(Need(group, res, verb), scope))
    return out


def placement(derivation: Derivation, own_namespace: str) -> set[Grant]:
    """Where each need must be granted: "cluster" (ClusterRole + ClusterRoleBinding) or one namespace.

    Decided per resource (its subresources and verbs go together): cluster-wide when any call
    spans all namespaces or the resource is cluster-scoped, or when no call names a namespace
    (e.g. Events, written to the namespace of the object they are about); a namespaced Role when
    every call that names a namespace names the same one.
    """
    classes: dict[tuple[str, str], set[str]] = {}
    for need, sites in derivation.needs.items():
        base = (need.group, need.resource.split("/", 1)[0])
        for site in sites:
            classes.setdefault(base, set()).add(own_namespace if site.namespace == OWN else site.namespace)
    scope_of: dict[tuple[str, str], str] = {}
    for base, found in classes.items():
        known = found - {ALL, UNKNOWN}
        scope_of[base] = "cluster" if ALL in found or len(known) != 1 else next(iter(known))
    return {
        Grant(need, scope_of[(need.group, need.resource.split("/", 1)[0])]) for need in derivation.needs
    }


def rules_by_scope(grants: Iterable[Grant]) -> dict[str, list[dict[str, list[str]]]]:
    """RBAC `rules:` per scope, one rule per (group, resource) with its verbs, for pasting into YAML."""
    verbs: dict[str, dict[tuple[str, str], set[str]]] = {}
    for g in grants:
        verbs.setdefault(g.scope, {}).setdefault((g.need.group, g.need.resource), set()).add(g.need.verb)
    order = ["get", "list", "watch", "create", "update", "patch", "delete"]
    return {
        scope: [
            {"apiGroups": [group], "resources": [res], "verbs": sorted(v, key=order.index)}
            for (group, res), v in sorted(by_res.items())
        ]
        for scope, by_res in sorted(verbs.items())
    }


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.rbac", description=__doc__.split("\n")[0])
    parser.add_argument("components", nargs="*", default=list(COMPONENTS))
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--rules", action="store_true", help="print the RBAC rules per scope as YAML")
    parser.add_argument("--namespace", default="lbspeaker-system", help="the components' own namespace")
    args = parser.parse_args(argv)
    analyzer = Analyzer()
    out: dict[str, object] = {}
    for comp in args.components:
        d = analyzer.derive(comp)
        if args.rules:
            import yaml

            print(f"# {comp}")
            print(yaml.safe_dump(rules_by_scope(placement(d, args.namespace)), sort_keys=False))
            continue
        if args.json:
            out[comp] = {
                "needs": [
                    {"group": n.group, "resource": n.resource, "verb": n.verb,
                     "sites": [f"{s.file}:{s.line} ns={s.namespace}" for s in sorted(sites)]}
                    for n, sites in sorted(d.needs.items())
                ],
                "unresolved": d.unresolved,
            }
            continue
        print(f"# {comp} ({len(d.modules)} modules)")
        for need, sites in sorted(d.needs.items()):
            where = ", ".join(f"{s.file}:{s.line}[{s.namespace}]" for s in sorted(sites))
            print(f"{need.group or 'core'} {need.resource} {need.verb}: {where}")
        for u in d.unresolved:
            print(f"UNRESOLVED {u}")
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
