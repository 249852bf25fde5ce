"""Development tools: RBAC derivation and reference generation (not shipped in the wheel)."""
