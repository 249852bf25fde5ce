"""A small kustomize renderer for the subset lbspeaker's manifests use: `resources`, `images`, and
`patches` given as inline JSON 6902 operations with a kind/name target.

Why our own: the install must be checked on machines without kubectl (CI installs only
Debian and PyPI packages), and `kubectl kustomize` from Debian is too old to trust. Any
kustomization key outside the subset is an error, never silently ignored, so what this
renders is what `kubectl apply -k` applies (tests compare both when kubectl is present).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "images", "patches"}


class KustomizeError(ValueError):
    """A kustomization this renderer cannot render faithfully."""


def kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise KustomizeError(f"{directory}: no kustomization.yaml")


def _load_documents(path: Path) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise KustomizeError(f"{path}: a document is not a mapping")
        yield doc


def _split_image(image: str) -> tuple[str, str, str]:
    """`name[:tag][@digest]` -> (name, tag, digest); a ':' in a registry host:port is not a tag."""
    digest = ""
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = ""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        image, tag = image[:colon], image[colon + 1 :]
    return image, tag, digest


def _apply_images(obj: dict[str, Any], images: list[dict[str, Any]]) -> None:
    """Rewrite `image:` of containers/initContainers in Pod templates (kustomize `images:`)."""
    spec = obj.get("spec") or {}
    pod_specs = []
    if obj.get("kind") == "Pod":
        pod_specs.append(spec)
    template = spec.get("template") if isinstance(spec, dict) else None
    if isinstance(template, dict):
        pod_specs.append(template.get("spec") or {})
    job_template = spec.get("jobTemplate") if isinstance(spec, dict) else None
    if isinstance(job_template, dict):
        pod_specs.append(((job_template.get("spec") or {}).get("template") or {}).get("spec") or {})
    for pod_spec in pod_specs:
        for key in ("containers", "initContainers"):
            for container in pod_spec.get(key) or []:
                name, tag, digest = _split_image(str(container.get("image", "")))
                for rule in images:
                    if rule.get("name") != name:
                        continue
                    new_name = rule.get("newName") or name
                    if rule.get("digest"):
                        container["image"] = f"{new_name}@{rule['digest']}"
                    elif rule.get("newTag"):
                        container["image"] = f"{new_name}:{rule['newTag']}"
                    else:
                        suffix = f":{tag}" if tag else ""
                        suffix += f"@{digest}" if digest else ""
                        container["image"] = new_name + suffix
                    break


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON patch path {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json_patch(obj: Any, ops: list[dict[str, Any]]) -> None:
    """RFC 6902 add / replace / remove (what our overlays use); anything else is an error."""
    for op in ops:
        *parents, last = _pointer(str(op.get("path", "")))
        target = obj
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        kind = op.get("op")
        if isinstance(target, list):
            if kind == "add":
                index = len(target) if last == "-" else int(last)
                target.insert(index, copy.deepcopy(op["value"]))
            elif kind == "replace":
                target[int(last)] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del target[int(last)]
            else:
                raise KustomizeError(f"unsupported JSON patch op {kind!r}")
        else:
            if kind in ("replace", "remove") and last not in target:
                raise KustomizeError(f"JSON patch {kind} of missing {op.get('path')}")
            if kind in ("add", "replace"):
                target[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del target[last]
            else:
                raise KustomizeError(f"unsupported JSON patch op {kind!r}")


def _apply_patches(objects: list[dict[str, Any]], patches: list[dict[str, Any]], where: Path) -> None:
    for entry in patches:
        target = entry.get("target") or {}
        if set(entry) - {"target", "patch"} or set(target) - {"kind", "name", "namespace"}:
            raise KustomizeError(f"{where}: only inline patches with a kind/name/namespace target")
        ops = yaml.safe_load(entry.get("patch") or "")
        if not isinstance(ops, list):
            raise KustomizeError(f"{where}: only JSON 6902 patches (a list of operations)")
        matched = [
            o for o in objects
            if all((o.get("kind") if k == "kind" else (o.get("metadata") or {}).get(k)) == v
                   for k, v in target.items())
        ]
        if not matched:
            raise KustomizeError(f"{where}: patch target {target} matches nothing")
        for obj in matched:
            _json_patch(obj, ops)


def render(directory: str | Path) -> list[dict[str, Any]]:
    """All objects of the kustomization in `directory`, in kustomize's order (depth-first, as listed)."""
    directory = Path(directory)
    kfile = kustomization_file(directory)
    spec = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(spec) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported kustomization keys {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources") or []:
        target = (directory / str(entry)).resolve()
        if target.is_dir():
            objects.extend(render(target))
        elif target.is_file():
            objects.extend(_load_documents(target))
        else:
            raise KustomizeError(f"{kfile}: resource {entry!r} not found")
    images = [dict(i) for i in spec.get("images") or []]
    out = []
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        obj = copy.deepcopy(obj)
        if images:
            _apply_images(obj, images)
        meta = obj.get("metadata") or {}
        ident = (
            str(obj.get("apiVersion")),
            str(obj.get("kind")),
            str(meta.get("namespace") or ""),
            str(meta.get("name")),
        )
        if ident in seen:
            raise KustomizeError(f"{kfile}: duplicate object {ident}")
        seen.add(ident)
        out.append(obj)
    _apply_patches(out, list(spec.get("patches") or []), kfile)
    return out
