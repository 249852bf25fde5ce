"""The wheel ships the product only: `lbspeaker`, never the lab, the development tools or the tests."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[2]
NOT_SHIPPED = ("lab", "tools", "tests", "bench", "controller")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_wheel_ships_only_lbspeaker() -> None:
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = setuptools.find_packages(str(REPO), include=include)
    assert "lbspeaker" in packages
    assert [p for p in packages if p.split(".")[0] != "lbspeaker"] == []


def test_console_scripts_point_into_the_product() -> None:
    for name, target in pyproject()["project"]["scripts"].items():
        assert target.startswith("lbspeaker."), f"{name} = {target} would not exist in the wheel"


def test_product_never_imports_what_is_not_shipped() -> None:
    bad: list[str] = []
    for path in sorted((REPO / "lbspeaker").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{path.relative_to(REPO)}:{node.lineno} imports {n}" for n in names
                    if n.split(".")[0] in NOT_SHIPPED]
    assert bad == []
