import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from gh_pipeline import settings, transform
from gh_pipeline.github_client import GitHubEventsClient

WAREHOUSE_POOL = "duckdb_warehouse"


class GitHubApiResource(dg.ConfigurableResource):
    """GitHub's REST API; the token arrives only through dg.EnvVar("GITHUB_TOKEN")."""

    api_url: str = settings.DEFAULT_API_URL
    token: str | None = Field(default=None, description="Bearer token; never logged.")
    timeout_s: float = 10.0

    def client(self) -> GitHubEventsClient:
        return GitHubEventsClient(api_url=self.api_url, token=self.token, timeout_s=self.timeout_s)


class PipelineStorage(dg.ConfigurableResource):
    """The data directory: warehouse, landing files, poll state and reader snapshots."""

    data_dir: str = settings.DEFAULT_DATA_DIR

    @property
    def root(self) -> Path:
        return settings.data_dir(self.data_dir)

    @property
    def snapshot_dir(self) -> Path:
        return settings.snapshot_dir(self.root)

    @property
    def state_dir(self) -> Path:
        return settings.state_dir(self.root)


class Warehouse(DuckDBResource):
    """The DuckDB warehouse file; every write goes through the single-slot warehouse pool."""

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with self.get_connection() as conn:
            # dagster-duckdb's get_connection closes only on success; close on errors too, so a
            # failed asset never keeps the single-writer lock for the rest of its process.
            try:
                transform.ensure_warehouse_schema(conn)
                yield conn
            finally:
                conn.close()


def _env_or(name: str, default: str | None) -> str | dg.EnvVar | None:
    # An EnvVar shows in the UI by name only; an unset optional variable falls back to the default.
    return dg.EnvVar(name) if os.environ.get(name) else default


@dg.definitions
def resources() -> dg.Definitions:
    data_dir = settings.data_dir()
    return dg.Definitions(
        resources={
            "github": GitHubApiResource(
                api_url=_env_or(settings.ENV_API_URL, settings.DEFAULT_API_URL),
                token=_env_or(settings.ENV_TOKEN, None),
            ),
            "storage": PipelineStorage(data_dir=_env_or(settings.ENV_DATA_DIR, str(data_dir))),
            "warehouse": Warehouse(database=str(settings.warehouse_path(data_dir))),
        }
    )
