"""`kernels`, `nas` and `serving` are generic names: the installed project must be the one found."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def test_recsys_resolves_inside_the_repo():
    spec = importlib.util.find_spec("recsys")
    assert spec is not None and spec.origin is not None
    assert spec.origin.startswith(str(REPO / "recsys"))


def test_console_scripts_resolve():
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["recsys-train"] == "recsys.cli.train:main"
    for name, target in scripts.items():
        if name.startswith("recsys-"):
            module = target.split(":")[0]
            assert importlib.util.find_spec(module) is not None, f"{name} -> {target} is missing"
