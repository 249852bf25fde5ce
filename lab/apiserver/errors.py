"""Kubernetes `Status` errors for the lab API server.

Every non-2xx answer of kube-apiserver is a `Status` object; clients (the official
python client, kubectl, our kube layer) read `reason`/`code` from it, so the lab
server raises `ApiError` anywhere and the HTTP layer renders it the same way.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error that becomes a `Status` body with the given HTTP code and reason."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        name: str | None = None,
        group: str | None = None,
        kind: str | None = None,
        causes: list[dict[str, str]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.name = name
        self.group = group
        self.kind = kind
        self.causes = causes
        self.retry_after = retry_after

    def status(self) -> dict[str, Any]:
        """The `Status` object kube-apiserver would send."""
        details: dict[str, Any] = {}
        if self.name is not None:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind is not None:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after:
            details["retryAfterSeconds"] = self.retry_after
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            body["details"] = details
        return body


def qualified(plural: str, group: str) -> str:
    """`services` or `ipaddresspools.lbspeaker.io`: how kube names a resource in messages."""
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{qualified(plural, group)} "{name}" not found', name=name, group=group, kind=plural
    )


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(plural, group)} "{name}" already exists',
        name=name,
        group=group,
        kind=plural,
    )


def conflict(plural: str, group: str, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {why}',
        name=name,
        group=group,
        kind=plural,
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def too_large_resource_version(requested: int, current: int, retry_after: int = 1) -> ApiError:
    """kube's answer to a read at a resourceVersion the store has not reached (storage/errors.go).

    A 504 Timeout whose cause `ResourceVersionTooLarge` is what clients (client-go's reflector)
    look for; the watch cache sends it after waiting 3 s with retryAfterSeconds=1, etcd at once
    with no retry hint.
    """
    return ApiError(
        504,
        "Timeout",
        f"Timeout: Too large resource version: {requested}, current: {current}",
        causes=[{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        retry_after=retry_after,
    )


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 Invalid with kube's message shape: `Kind.group "name" is invalid: field: msg`.

    `causes` are (field, message-after-field) pairs; one cause is printed bare, several in brackets.
    """
    qkind = f"{kind}.{group}" if group else kind
    parts = [f"{f}: {m}" if f else m for f, m in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{qkind} "{name}" is invalid: {joined}',
        name=name,
        group=group,
        kind=kind,
        causes=[{"reason": _cause_reason(m), "message": m, "field": f} for f, m in causes],
    )


def _cause_reason(message: str) -> str:
    """Map the message prefix to kube's `CauseType` (FieldValueRequired, ...)."""
    for prefix, reason in (
        ("Required value", "FieldValueRequired"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Forbidden", "FieldValueForbidden"),
        ("Too long", "FieldValueTooLong"),
        ("Too many", "FieldValueTooMany"),
    ):
        if message.startswith(prefix):
            return reason
    return "FieldValueInvalid"
