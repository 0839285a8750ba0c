"""Every ``from playground... import name`` in the app, the engine and the benchmarks names something
that exists, function-level imports included: those run only when their function does, so a moved or
renamed name would otherwise surface only in the middle of ``make bench`` or a click in the app."""

from __future__ import annotations

import ast
import importlib

import pytest

from tests.conftest import ROOT

FILES = sorted([ROOT / "app.py", *(ROOT / "playground").glob("*.py"), *(ROOT / "ui").glob("*.py"),
                *(ROOT / "bench").glob("*.py")])


def _imports(path):
    package = path.parent.name if path.parent.name in ("playground", "ui") else None
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in ("playground", "ui")):
            module = f"{package}.{node.module}" if node.level and node.module else package if node.level else node.module
            yield node.lineno, module, [a.name for a in node.names]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_imported_name_exists(path):
    for line, module, names in _imports(path):
        mod = importlib.import_module(module)
        for name in names:
            submodule = hasattr(mod, "__path__") and importlib.util.find_spec(f"{module}.{name}")
            assert name == "*" or hasattr(mod, name) or submodule, \
                f"{path.relative_to(ROOT)}:{line}: {module} has no {name}"
