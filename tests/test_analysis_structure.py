"""The structure of analysis/: no import cycle, and one registry that every consumer reads."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import console, report
from analysis.chunked import BROADCAST, LOCAL_CHECKS
from analysis.registry import CHECK_NAMES, CHECKS, Chunking

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "analysis"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imports(module: str) -> set[str]:
    """The analysis modules ``module`` imports, wherever in the file (lazy imports count too)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "analysis":
                found.update(a.name for a in node.names if a.name in MODULES)
            elif node.module.startswith("analysis."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("analysis."))
    return found - {module, "__init__"}


def test_the_import_graph_has_no_cycle() -> None:
    graph = {m: _imports(m) for m in MODULES}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            cycle = (*path[path.index(module) :], module)
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, (*path, module))
        done.add(module)

    for module in MODULES:
        visit(module, ())


def test_the_vocabulary_imports_nothing_of_the_analysis() -> None:
    assert _imports("ops") == set()


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import analysis.{module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_every_consumer_reads_the_registry() -> None:
    assert len(set(CHECK_NAMES)) == len(CHECK_NAMES) == len(CHECKS)
    assert list(console.KEY_FIGURES) == list(CHECK_NAMES)
    assert set(report.KEY_FIGURE) <= set(CHECK_NAMES)
    assert set(report.REPORTED_ONLY) == {c.name for c in CHECKS if not c.gates}
    assert tuple(c.name for c in CHECKS if c.chunking is Chunking.PARTITION) == LOCAL_CHECKS
    assert BROADCAST == ["redis_stat", "ws_close", "ws_gap", "ws_open"]


def test_every_check_is_defined_in_the_docs_under_its_anchor() -> None:
    text = (ROOT / "docs" / "checks.md").read_text(encoding="utf-8")
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    for check in CHECKS:
        assert check.anchor in anchors, check.name
        assert f"### `{check.name}`" in text, check.name
