"""The two ways the repository runs a Dagster instance, as tests use them: the default
`dagster.yaml` (SQLite under data/dagster_home) and `deploy/postgres/dagster.yaml` (PostgreSQL,
connection from DAGSTER_PG_* variables, selected with DAGSTER_HOME)."""

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from gh_pipeline_tests.support.dagster_process import REPO_ROOT
from gh_pipeline_tests.support.postgres_server import PgDatabase

POSTGRES_HOME = Path("deploy") / "postgres"


@dataclass(frozen=True)
class DagsterStorage:
    """`database` None: SQLite files as the README's `uv run dagster dev` keeps them."""

    database: PgDatabase | None = None

    @property
    def name(self) -> str:
        return "sqlite" if self.database is None else "postgres"

    def project_copy(self, tmp_path: Path) -> Path:
        """A working directory laid out as a fresh clone's root: relative paths in the instance
        files resolve below it."""
        work = tmp_path / "work"
        work.mkdir()
        for name in ("dagster.yaml", "workspace.yaml"):
            shutil.copy(REPO_ROOT / name, work / name)
        (work / POSTGRES_HOME).mkdir(parents=True)
        shutil.copy(REPO_ROOT / POSTGRES_HOME / "dagster.yaml", work / POSTGRES_HOME)
        return work

    def env(self, work: Path) -> dict[str, str]:
        """What a person sets for this storage (docs/deploy.md); nothing for SQLite."""
        if self.database is None:
            return {}
        return {"DAGSTER_HOME": str(work / POSTGRES_HOME), **self.database.env()}

    def runs(self, work: Path, job: str | None = None) -> list[tuple[str, str]]:
        """(run_id, status) of every run, oldest first, read from the storage itself."""
        query = (
            "SELECT run_id, status FROM runs WHERE {p} IS NULL OR pipeline_name = {p}"
            " ORDER BY create_timestamp, id"
        )
        if self.database is None:
            db = work / "data" / "dagster_home" / "storage" / "history" / "runs.db"
            if not db.exists():
                return []
            try:
                with sqlite3.connect(db) as conn:
                    rows = conn.execute(query.format(p="?"), (job, job)).fetchall()
            except sqlite3.OperationalError:  # the schema is still being created
                return []
        else:
            try:
                conn = self.database.connect()
                try:
                    cur = conn.cursor()
                    cur.execute(query.format(p="%(job)s"), {"job": job})
                    rows = cur.fetchall()
                finally:
                    conn.close()
            except (psycopg2.errors.UndefinedTable, psycopg2.OperationalError):
                return []  # dagster dev has not created its tables yet
        return [(row[0], row[1]) for row in rows]
