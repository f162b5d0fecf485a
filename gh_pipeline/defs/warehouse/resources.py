import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from gh_pipeline import settings, warehouse

WAREHOUSE_POOL = "duckdb_warehouse"


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

    @property
    def charts_dir(self) -> Path:
        return settings.charts_dir(self.root)


class Warehouse(DuckDBResource):
    """The DuckDB warehouse file; every write goes through the single-slot warehouse pool."""

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with self.get_connection() as conn:
            # dagster-duckdb's get_connection closes only on success; close on errors too, so a
            # failed asset never keeps the single-writer lock for the rest of its process.
            try:
                warehouse.ensure_schema(conn)
                yield conn
            finally:
                conn.close()


def env_or(name: str, default: str | None) -> str | dg.EnvVar | None:
    """A documented setting as resource config: dg.EnvVar(name) when it is set (the UI shows it by
    name only, never the value), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


@dg.definitions
def resources() -> dg.Definitions:
    data_dir = settings.data_dir()
    return dg.Definitions(
        resources={
            "storage": PipelineStorage(data_dir=env_or(settings.ENV_DATA_DIR, str(data_dir))),
            "warehouse": Warehouse(database=str(settings.warehouse_path(data_dir))),
        }
    )
