"""``pip install .`` installs the ``lumos_fx`` package and nothing else at the top level: the
benchmarks stay in the source checkout (a top-level ``benchmarks`` package in site-packages
would collide with any other project's)."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_only_lumos_fx_packages_are_installed():
    tomllib = pytest.importorskip("tomllib")
    setuptools = pytest.importorskip("setuptools")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = config["tool"]["setuptools"]["packages"]["find"]
    packages = setuptools.find_packages(str(ROOT), include=find["include"],
                                        exclude=find.get("exclude", ()))
    assert "lumos_fx" in packages and {"lumos_fx.passes", "lumos_fx.rules"} <= set(packages)
    assert {p.split(".")[0] for p in packages} == {"lumos_fx"}, packages
    assert (ROOT / "benchmarks" / "cli.py").is_file()        # still in the checkout
