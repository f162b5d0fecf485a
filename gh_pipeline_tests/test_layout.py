"""The layout's rules, read from the source: imports follow the data flow, Dagster stays in defs/,
only the warehouse begins and commits transactions, product code never imports test code, and no
test imports another test module (docs/architecture.md)."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ROOT / "gh_pipeline"
TESTS = ROOT / "gh_pipeline_tests"

# Each stage and what it may import besides itself: the stages upstream of it in the flow.
ALLOWED: dict[str, set[str]] = {
    "settings": set(),
    "warehouse": {"settings"},
    "live": {"settings", "warehouse"},
    "archive": {"settings", "warehouse"},
    "model": {"settings", "warehouse"},
    "publish": {"settings", "warehouse", "model"},
    "read": {"settings", "warehouse", "model", "publish"},
    "charts": {"settings", "warehouse", "live", "model"},
    "ops": {"settings", "warehouse", "live", "archive", "model", "publish"},
}


def _modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[str]:
    """Every module an import statement of `path` names, absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (absolute imports only)"
            base = node.module or ""
            names.append(base)
            # `from gh_pipeline import warehouse` imports the stage `warehouse`.
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def _stage(path: Path) -> str:
    parts = path.relative_to(PRODUCT).parts
    return parts[0].removesuffix(".py")


def _stage_of_import(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "gh_pipeline" or len(parts) < 2:
        return None
    return parts[1]


def test_every_stage_is_known() -> None:
    stages = {_stage(p) for p in _modules(PRODUCT)} - {"__init__", "definitions", "defs"}
    assert stages == set(ALLOWED), "a new top-level package needs its place in ALLOWED"


@pytest.mark.parametrize("path", _modules(PRODUCT), ids=lambda p: str(p.relative_to(ROOT)))
def test_product_imports_follow_the_flow(path: Path) -> None:
    stage = _stage(path)
    in_defs = stage in ("defs", "definitions")
    for name in _imports(path):
        top = name.split(".")[0]
        assert top != "gh_pipeline_tests", f"{path}: product code imports test code ({name})"
        if top == "dagster" or top.startswith("dagster_"):
            assert in_defs, f"{path}: Dagster is imported only under gh_pipeline/defs/ ({name})"
        target = _stage_of_import(name)
        if in_defs or target is None or target == stage:
            continue
        assert target in ALLOWED[stage], (
            f"{path}: stage {stage!r} imports {name} (allowed: {sorted(ALLOWED[stage])})"
        )


_TRANSACTION_WORDS = re.compile(r"\b(BEGIN TRANSACTION|COMMIT|ROLLBACK)\b")


@pytest.mark.parametrize("path", _modules(PRODUCT), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_warehouse_begins_and_commits(path: Path) -> None:
    if path == PRODUCT / "warehouse" / "connection.py":
        return
    found = _TRANSACTION_WORDS.findall(path.read_text(encoding="utf-8"))
    assert not found, f"{path}: {found} outside gh_pipeline.warehouse.connection.transaction"


@pytest.mark.parametrize("path", _modules(TESTS), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_test_imports_another_test_module(path: Path) -> None:
    for name in _imports(path):
        leaf = name.split(".")[-1]
        if name.startswith("gh_pipeline_tests"):
            assert not leaf.startswith("test_"), f"{path} imports the test module {name}"
