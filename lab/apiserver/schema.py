"""Custom-resource defaulting, pruning and validation against a CRD's `openAPIV3Schema`.

Mirrors what kube-apiserver does for structural schemas, in its order: apply
`default`s, prune fields the schema does not know (unless
`x-kubernetes-preserve-unknown-fields`), validate the OpenAPI keywords (with
`jsonschema`, messages in kube's wording), then `x-kubernetes-validations` (CEL)
through `lab.cel.validate_rules` when that module is present.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema

JsonObj = dict[str, Any]

_ROOT_KEYS = ("apiVersion", "kind", "metadata")


def apply_defaults(schema: JsonObj, obj: Any) -> Any:
    """Structural defaulting: fill missing object properties from `default`, recursively (in place)."""
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        for name, sub in props.items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                obj[name] = apply_defaults(sub, obj[name])
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for k in list(obj):
                if k not in props:
                    obj[k] = apply_defaults(addl, obj[k])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            obj[i] = apply_defaults(schema["items"], item)
    return obj


def prune(
    schema: JsonObj, obj: Any, root: bool = False, removed: list[str] | None = None, path: str = ""
) -> Any:
    """Drop unknown object fields (in place), honouring x-kubernetes-preserve-unknown-fields.

    The paths of dropped fields are appended to `removed` (strict field validation reports them).
    """
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        for k in list(obj):
            if root and k in _ROOT_KEYS:
                continue
            sub = f"{path}.{k}" if path else k
            if k in props:
                prune(props[k], obj[k], removed=removed, path=sub)
            elif isinstance(addl, dict):
                prune(addl, obj[k], removed=removed, path=sub)
            elif addl is True or preserve:
                continue
            else:
                del obj[k]
                if removed is not None:
                    removed.append(sub)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            prune(schema["items"], item, removed=removed, path=f"{path}[{i}]")
    return obj


_DROP_KEYS = {
    "default",
    "format",
    "example",
    "externalDocs",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-preserve-unknown-fields",
    "nullable",
    "x-kubernetes-int-or-string",
}


def to_json_schema(schema: Any) -> Any:
    """Translate OpenAPI v3 (kube flavour) into plain JSON Schema for `jsonschema`."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: JsonObj = {}
    for k, v in schema.items():
        if k in _DROP_KEYS:
            continue
        if k == "properties":
            out[k] = {name: to_json_schema(sub) for name, sub in v.items()}
        elif (k in ("items", "additionalProperties", "not") and isinstance(v, dict)) or k in (
            "allOf",
            "anyOf",
            "oneOf",
        ):
            out[k] = to_json_schema(v)
        else:
            out[k] = v
    if schema.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True  # kube-apiserver: "Duplicate value" on a repeated entry of a set
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def field_path(path: list[Any] | tuple[Any, ...]) -> str:
    """`spec.addresses[0]`-style path as kube prints it."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def _fmt(value: Any) -> str:
    return (
        json.dumps(value)
        if isinstance(value, str)
        else (json.dumps(value) if value is None or isinstance(value, bool) else str(value))
    )


_TYPE_NAMES = {
    "integer": "integer",
    "number": "number",
    "string": "string",
    "boolean": "boolean",
    "object": "object",
    "array": "array",
}


def _kube_message(err: jsonschema.ValidationError) -> tuple[str, str]:
    """(field, message) for one jsonschema error in kube-apiserver's wording."""
    path = list(err.absolute_path)
    v = err.validator
    val = err.instance
    if v == "required":
        missing = str(err.message).split("'")[1] if "'" in str(err.message) else "?"
        return field_path([*path, missing]), "Required value"
    f = field_path(path)
    where = f or "<root>"
    if v == "type":
        want = err.validator_value
        want = want[0] if isinstance(want, list) else want
        return (
            f,
            f'Invalid value: "{_type_of(val)}": {where} in body must be of type '
            f'{_TYPE_NAMES.get(want, want)}: "{_type_of(val)}"',
        )
    if v == "enum":
        supported = ", ".join(_fmt(x) for x in err.validator_value)
        return f, f"Unsupported value: {_fmt(val)}: supported values: {supported}"
    if v == "minimum":
        return (
            f,
            f"Invalid value: {_fmt(val)}: {where} in body should be greater than or equal to "
            f"{err.validator_value}",
        )
    if v == "maximum":
        return (
            f,
            f"Invalid value: {_fmt(val)}: {where} in body should be less than or equal to "
            f"{err.validator_value}",
        )
    if v == "exclusiveMinimum":
        return f, f"Invalid value: {_fmt(val)}: {where} in body should be greater than {err.validator_value}"
    if v == "exclusiveMaximum":
        return f, f"Invalid value: {_fmt(val)}: {where} in body should be less than {err.validator_value}"
    if v == "maxLength":
        return f, f"Too long: may not be more than {err.validator_value} bytes"
    if v == "minLength":
        return (
            f,
            f"Invalid value: {_fmt(val)}: {where} in body should be at least "
            f"{err.validator_value} chars long",
        )
    if v == "maxItems":
        return f, f"Too many: {len(val)}: must have at most {err.validator_value} items"
    if v == "minItems":
        return (
            f,
            f"Invalid value: {len(val)}: {where} in body should have at least {err.validator_value} items",
        )
    if v == "pattern":
        return f, f"Invalid value: {_fmt(val)}: {where} in body should match '{err.validator_value}'"
    if v == "uniqueItems" and isinstance(val, list):
        seen: list[Any] = []
        for i, item in enumerate(val):
            if item in seen:  # kube names the repeated entry: spec.namespaces[2]: Duplicate value: "a"
                return field_path([*path, i]), f"Duplicate value: {json.dumps(item, sort_keys=True)}"
            seen.append(item)
        return f, f"Duplicate value: {_fmt(val)}"
    if v == "maxProperties":
        return f, f"Too many: {len(val)}: must have at most {err.validator_value} items"
    return (
        f,
        f"Invalid value: {_fmt(val) if not isinstance(val, dict | list) else _type_of(val)}: {err.message}",
    )


def _type_of(val: Any) -> str:
    if isinstance(val, bool):
        return "boolean"
    if isinstance(val, int):
        return "integer"
    if isinstance(val, float):
        return "number"
    if isinstance(val, str):
        return "string"
    if isinstance(val, list):
        return "array"
    if isinstance(val, dict):
        return "object"
    return "null"


def validate(schema: JsonObj, obj: JsonObj, old: JsonObj | None = None) -> list[tuple[str, str]]:
    """All (field, message) validation errors of `obj` (root metadata is not schema-checked)."""
    body = {k: v for k, v in obj.items() if k != "metadata"}
    js = to_json_schema(schema)
    if isinstance(js.get("properties"), dict):
        js["properties"] = {k: v for k, v in js["properties"].items() if k != "metadata"}
    validator = jsonschema.Draft7Validator(js)
    errors: list[tuple[str, str]] = []
    for err in sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path]):
        if err.validator in ("anyOf", "oneOf", "allOf") and err.context:
            # report the most specific branch error, as kube does for int-or-string etc.
            best = jsonschema.exceptions.best_match(err.context)
            if best is not None:
                best_path = list(err.absolute_path) + list(best.relative_path)
                field, msg = _kube_message(best)
                field = field_path(best_path) if best.validator != "required" else field
                errors.append((field, msg))
                continue
        errors.append(_kube_message(err))
    if not errors:
        errors.extend(_cel(schema, obj, old))
    return errors


def _cel(schema: JsonObj, obj: JsonObj, old: JsonObj | None) -> list[tuple[str, str]]:
    """Evaluate x-kubernetes-validations with lab.cel when available (it is written separately)."""
    if "x-kubernetes-validations" not in json.dumps(schema):
        return []
    try:
        from lab.cel import validate_rules  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return []
    out: list[tuple[str, str]] = []
    for msg in validate_rules(schema, obj, old):
        field, sep, rest = msg.partition(": ")
        if sep and " " not in field and rest:
            out.append((field, rest))
        else:
            out.append(("", msg))
    return out
