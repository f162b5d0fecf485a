from pathlib import Path

import pytest

from gh_pipeline_tests.support import system_packages
from gh_pipeline_tests.support.dagster_storage import DagsterStorage
from gh_pipeline_tests.support.postgres_server import PostgresServer


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, which Playwright drives (it cannot download its own browser here)."""
    return system_packages.require(system_packages.CHROMIUM)


@pytest.fixture(params=["sqlite", "postgres"])
def dagster_storage(request: pytest.FixtureRequest) -> DagsterStorage:
    """The instance both ways the repository ships it: dagster.yaml (SQLite) and
    deploy/postgres/dagster.yaml (PostgreSQL, a fresh database per test)."""
    if request.param == "sqlite":
        return DagsterStorage()
    server: PostgresServer = request.getfixturevalue("postgres")
    return DagsterStorage(server.create_database())
