"""The PostgreSQL password given to `dagster dev` through DAGSTER_PG_PASSWORD is used (the server
refuses connections without it) and appears nowhere: no file under the working directory (the
instance directory, data/, compute logs, the warehouse), not the process log, not one row of
Dagster's storage, not the instance configuration the UI shows."""

import gzip
from datetime import datetime
from pathlib import Path

import httpx
import psycopg2
import pytest

from gh_pipeline.defs.live.jobs import POLL_JOB_NAME
from gh_pipeline_tests.support.dagster_process import (
    BIN,
    base_env,
    free_port,
    running,
    wait_for,
)
from gh_pipeline_tests.support.dagster_storage import DagsterStorage
from gh_pipeline_tests.support.fake_github import (
    FakeGitHub,
    recorded_2019_feed,
    redate,
    trim_event,
)
from gh_pipeline_tests.support.postgres_server import PostgresServer

pytestmark = pytest.mark.timeout(600)

_INSTANCE_QUERY = "{ instance { info } }"


def _contains(path: Path, needle: bytes) -> bool:
    data = path.read_bytes()
    if needle in data:
        return True
    if path.suffix == ".gz":  # landing files: look inside too
        try:
            return needle in gzip.decompress(data)
        except (OSError, EOFError):
            return False
    return False


def _instance_info(url: str) -> str | None:
    try:
        answer = httpx.post(f"{url}/graphql", json={"query": _INSTANCE_QUERY}, timeout=5)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    return answer.json()["data"]["instance"]["info"]


def test_postgres_password_is_never_stored_logged_or_shown(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    database = postgres.create_database("secret")
    storage = DagsterStorage(database)
    password = database.password
    work = storage.project_copy(tmp_path)
    port = free_port()
    events = redate(
        [trim_event(e) for e in recorded_2019_feed()[:60]],
        newest=datetime.now().astimezone(),
        step_s=5,
    )

    log = tmp_path / "dagster-dev.log"
    with FakeGitHub(events, poll_interval=3) as fake:
        env = base_env(GITHUB_API_URL=fake.url, **storage.env(work))
        args = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-p", str(port)]
        with running(args, cwd=work, env=env, log=log):
            wait_for(
                lambda: any(s == "SUCCESS" for _, s in storage.runs(work, POLL_JOB_NAME)),
                timeout_s=240,
                what="a successful poll run on PostgreSQL storage",
                describe=lambda: log.read_text(encoding="utf-8", errors="replace")[-4000:],
            )
            # What the UI shows under Deployment → Configuration.
            info = _instance_info(f"http://127.0.0.1:{port}")
            assert info is not None
            assert "run_storage: PostgresRunStorage" in info
            assert password not in info

    # The password is needed, so the runs above used the one from the environment.
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(
            host=database.host,
            port=database.port,
            dbname=database.db_name,
            user=database.username,
            password="not-the-password",
            connect_timeout=10,
        )

    needle = password.encode()
    files = [p for p in work.rglob("*") if p.is_file()]
    assert any(p.name == "warehouse.duckdb" for p in files)
    assert any("logs" in p.relative_to(work).parts for p in files)  # compute logs were written
    assert [p for p in files if _contains(p, needle)] == []
    assert password not in log.read_text(encoding="utf-8", errors="replace")

    # Every row of Dagster's storage: runs, event logs, sensor ticks, key-value store.
    dump = postgres.pg_dump(database.db_name)
    run_ids = [run_id for run_id, _ in storage.runs(work)]
    assert run_ids
    assert all(run_id in dump for run_id in run_ids)
    assert password not in dump
