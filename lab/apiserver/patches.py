"""Patch application: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge.

Strategic merge patch here is an honest approximation of kube's: lists whose field
name is in `MERGE_KEYS` are merged element-wise by that key (conditions by type,
ports by port/containerPort, containers/env/volumes by name, ...); `finalizers`
is merged as a set; `$patch: delete|replace` in a list element or map and
`$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` directives are
understood; every other list is replaced as in a merge patch. The real thing is
driven by Go struct tags per type; the list below covers the fields this project
and kubectl touch.
"""

from __future__ import annotations

import copy
from typing import Any

from lab.apiserver.errors import ApiError, bad_request

JsonObj = dict[str, Any]

# field name -> merge key (kube's patchMergeKey) for the lists we merge by key.
MERGE_KEYS: dict[str, str] = {
    "conditions": "type",
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "addresses": "type",
    "taints": "key",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "podIPs": "ip",
    "hostIPs": "ip",
    "images": "names",
}
SET_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: JsonObj = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _ports_key(items: list[Any]) -> str:
    for it in items:
        if isinstance(it, dict) and "containerPort" in it:
            return "containerPort"
    return "port"


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Approximate strategic merge (see module docstring)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result: JsonObj = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [x for x in result[field] if x not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, list):
            merge_key = MERGE_KEYS.get(key)
            if key == "ports":
                merge_key = _ports_key(value + (current if isinstance(current, list) else []))
            if key in SET_LISTS and isinstance(current, list):
                result[key] = current + [v for v in value if v not in current]
            elif merge_key and isinstance(current, list):
                result[key] = _merge_list_by_key(current, value, merge_key)
            else:
                result[key] = [copy.deepcopy(v) for v in value if not (isinstance(v, dict) and "$patch" in v)]
        elif isinstance(value, dict):
            merged = strategic_merge_patch(current, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_list_by_key(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    out = [copy.deepcopy(x) for x in current]
    for item in patch:
        if not isinstance(item, dict):
            if item not in out:
                out.append(copy.deepcopy(item))
            continue
        if item.get("$patch") == "replace":
            return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and "$patch" in x)]
        idx = next(
            (i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item.get(key)), None
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(strategic_merge_patch({}, item))
        else:
            out[idx] = strategic_merge_patch(out[idx], item)
    return out


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer: {path!r}")
    return [_unescape(t) for t in path[1:].split("/")]


def _resolve_parent(doc: Any, tokens: list[str]) -> tuple[Any, str]:
    cur = doc
    for tok in tokens[:-1]:
        if isinstance(cur, dict):
            if tok not in cur:
                raise _patch_error(f"path /{'/'.join(tokens)}: missing {tok!r}")
            cur = cur[tok]
        elif isinstance(cur, list):
            cur = cur[_index(cur, tok, False)]
        else:
            raise _patch_error(f"path /{'/'.join(tokens)}: not a container at {tok!r}")
    return cur, tokens[-1]


def _index(lst: list[Any], tok: str, for_add: bool) -> int:
    if tok == "-" and for_add:
        return len(lst)
    try:
        i = int(tok)
    except ValueError:
        raise _patch_error(f"invalid list index {tok!r}") from None
    if i < 0 or i > len(lst) or (i == len(lst) and not for_add):
        raise _patch_error(f"list index {i} out of range")
    return i


def _patch_error(msg: str) -> ApiError:
    return ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {msg}")


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent, last = _resolve_parent(doc, tokens)
    if isinstance(parent, dict):
        if last not in parent:
            raise _patch_error(f"path /{'/'.join(tokens)} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, False)]
    raise _patch_error("not a container")


def _remove(doc: Any, tokens: list[str]) -> Any:
    parent, last = _resolve_parent(doc, tokens)
    if isinstance(parent, dict):
        if last not in parent:
            raise _patch_error(f"unable to remove nonexistent key: {last}")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, False))
    raise _patch_error("not a container")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _resolve_parent(doc, tokens)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, True), value)
    else:
        raise _patch_error("not a container")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 add/remove/replace/move/copy/test on a deep copy of `doc`."""
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _patch_error(f"invalid operation {op!r}")
        kind, tokens = op["op"], _pointer(op["path"])
        if kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind == "replace":
            _get(doc, tokens)
            if not tokens:
                doc = copy.deepcopy(op.get("value"))
            else:
                parent, last = _resolve_parent(doc, tokens)
                if isinstance(parent, list):
                    parent[_index(parent, last, False)] = copy.deepcopy(op.get("value"))
                else:
                    parent[last] = copy.deepcopy(op.get("value"))
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = _remove(doc, src) if kind == "move" else copy.deepcopy(_get(doc, src))
            doc = _add(doc, tokens, value)
        elif kind == "test":
            if _get(doc, tokens) != op.get("value"):
                raise _patch_error(f"testing value {op['path']} failed")
        else:
            raise _patch_error(f"unknown operation {kind!r}")
    return doc
