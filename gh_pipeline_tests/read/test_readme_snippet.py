"""The notebook page's (docs/notebooks.md) "Reading from a notebook" snippet runs as written against a
real snapshot."""

import re
from pathlib import Path

import pandas as pd
import pytest

from gh_pipeline_tests.support.built_warehouse import build_warehouse, fixture_events

README = Path(__file__).resolve().parents[2] / "docs" / "notebooks.md"
HEADING = "## Reading from a notebook"


def notebook_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    assert HEADING in text, f"{README.name} has no {HEADING!r} section"
    section = text.split(HEADING, 1)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.MULTILINE)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    assert blocks, f"no ```python block under {HEADING!r}"
    return blocks[0]


def test_snippet_is_found() -> None:
    snippet = notebook_snippet()
    assert "from gh_pipeline.read import query" in snippet


def test_readme_notebook_snippet_runs(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The snippet relies on GH_PIPELINE_DATA_DIR (set by the data_dir fixture), as a notebook would.
    build_warehouse(data_dir, fixture_events())
    monkeypatch.chdir(data_dir.parent)
    namespace: dict[str, object] = {}
    exec(
        compile(notebook_snippet(), "docs/notebooks.md (Reading from a notebook)", "exec"),
        namespace,
    )
    frames = {k: v for k, v in namespace.items() if isinstance(v, pd.DataFrame)}
    assert frames, "the snippet should leave its DataFrames in named variables"
    # The names it binds hold real answers from the fixture events, not empty frames.
    assert all(not frame.empty for name, frame in frames.items() if name != "sessions"), frames
    intervals = frames.get("intervals")
    if intervals is not None:
        assert "duckdb/duckdb" in set(intervals["repo_name"])
    prs = frames.get("prs")
    if prs is not None:
        assert set(prs["repo_name"]) == {"duckdb/duckdb"}
        assert set(prs["event_type"]) == {"PullRequestEvent"}
