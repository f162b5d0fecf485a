from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from gh_pipeline import settings, warehouse
from gh_pipeline_tests.support import system_packages
from gh_pipeline_tests.support.fake_github import FakeGitHub
from gh_pipeline_tests.support.postgres_server import PostgresServer, postgres_server


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private data directory; nothing a test writes lands in the real data/."""
    path = tmp_path / "data"
    monkeypatch.setenv("GH_PIPELINE_DATA_DIR", str(path))
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GH_PIPELINE_REPOS", raising=False)
    return path


@pytest.fixture
def conn(data_dir: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse in the test's data directory, with the raw and filtered schemas."""
    connection = warehouse.connect(settings.warehouse_path(data_dir))
    yield connection
    connection.close()


@pytest.fixture
def fake_github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    with FakeGitHub(poll_interval=60) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        yield fake


@pytest.fixture(autouse=True, scope="session")
def no_real_gh_archive() -> Iterator[None]:
    """Tests never reach data.gharchive.org: unless a test points GHARCHIVE_URL at its own server,
    the archive schedule and asset (in `dagster dev` subprocesses too) meet a closed local port."""
    patch = pytest.MonkeyPatch()
    patch.setenv("GHARCHIVE_URL", "http://127.0.0.1:9")
    yield
    patch.undo()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (127.0.0.1, a free port); tests make their own
    databases in it with `create_database()`."""
    with postgres_server(system_packages.require(system_packages.POSTGRESQL)) as server:
        yield server
