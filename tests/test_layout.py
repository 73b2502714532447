"""The README's layout section names every package of the tree, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layout_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def test_every_sidecar_package_is_in_the_readme_layout_and_exists() -> None:
    listed = set(re.findall(r"^\s{2}(\w+)/", _layout_block(), re.MULTILINE))
    packages = {
        p.parent.name for p in (ROOT / "sidecar").glob("*/__init__.py") if p.parent.name != "api"
    }
    assert listed == packages


def test_every_top_level_module_of_sidecar_is_in_the_readme_layout() -> None:
    block = _layout_block()
    modules = {
        p.name
        for p in (ROOT / "sidecar").glob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert {m for m in modules if m not in block} == set()
