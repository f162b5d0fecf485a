from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from gh_pipeline import warehouse
from gh_pipeline_tests.support.archive_server import ArchiveServer


@pytest.fixture
def archive() -> Iterator[ArchiveServer]:
    with ArchiveServer() as server:
        yield server


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh warehouse file with the schema."""
    c = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.ensure_schema(c)
    yield c
    c.close()
