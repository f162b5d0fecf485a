"""A canary GITHUB_TOKEN goes through real Dagster runs (one of them failing) and must appear
nowhere: no file under the data directory or the Dagster home, no log, no run metadata, no
exception text."""

import gc
import gzip
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from gh_pipeline import settings
from gh_pipeline.defs.live.jobs import POLL_JOB_NAME
from gh_pipeline.defs.warehouse.keys import RAW_EVENTS
from gh_pipeline_tests.support.fake_github import FakeGitHub, Fault, numbered_feed

FAILURE_TEXT = "response body is not JSON"


def _duckdb_text(path: Path, *, parquet: bool) -> str:
    """Every value of every table (DuckDB and Parquet compress strings, so bytes are not enough)."""
    parts = []
    with duckdb.connect(":memory:") as conn:
        if parquet:
            rows = conn.execute("SELECT * FROM read_parquet($p)", {"p": str(path)}).fetchall()
            return repr(rows)
        conn.execute("ATTACH $p AS w (READ_ONLY)", {"p": str(path)})
        tables = conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'w'"
        ).fetchall()
        for schema, table in tables:
            rows = conn.execute(f'SELECT * FROM w."{schema}"."{table}"').fetchall()
            parts.append(repr(rows))
    return "\n".join(parts)


def _file_texts(root: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        yield path, data.decode("latin-1")
        if path.name.endswith(".gz"):
            yield path, gzip.decompress(data).decode("utf-8", "replace")
        if data.startswith(b"PAR1"):
            yield path, _duckdb_text(path, parquet=True)
        if path.suffix == ".duckdb":
            yield path, _duckdb_text(path, parquet=False)


@pytest.fixture
def canary(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    token = f"ghp_CANARY{uuid.uuid4().hex}"
    monkeypatch.setenv(settings.ENV_TOKEN, token)
    return token


def test_the_token_appears_nowhere(
    canary: str,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    feed = numbered_feed(120, serial=1)
    with FakeGitHub(feed, poll_interval=1) as fake:
        monkeypatch.setenv(settings.ENV_API_URL, fake.url)
        # The project's own definitions: the resources read the environment as `dagster dev` does.
        from gh_pipeline.definitions import defs

        job = defs().resolve_job_def(POLL_JOB_NAME)
        with dg.DagsterInstance.local_temp(tempdir=str(dagster_home)) as instance:
            # The poll itself (raw_events and its check); the tables downstream never see the token.
            ok = job.execute_in_process(instance=instance, asset_selection=[RAW_EVENTS])
            fake.push(numbered_feed(30, serial=2, newest=datetime.now(UTC) + timedelta(minutes=1)))
            fake.schedule(Fault(status=200, body=b"<html><body>Down for maintenance</body></html>"))
            failed = job.execute_in_process(
                instance=instance, asset_selection=[RAW_EVENTS], raise_on_error=False
            )
            run_ids = [ok.run_id, failed.run_id]
            records = [
                dg.serialize_value(entry)
                for run_id in run_ids
                for entry in instance.all_logs(run_id)
            ]
            runs = [dg.serialize_value(instance.get_run_by_id(run_id)) for run_id in run_ids]
    assert ok.success and not failed.success
    # DuckDBResource.get_connection does not close its connection when the body raises (no
    # try/finally around its yield); drop that leftover before reading the warehouse file.
    gc.collect()

    # The token was really in play: every request carried it.
    assert fake.requests and all(
        r.headers.get("authorization") == f"Bearer {canary}" for r in fake.requests
    )
    failures = failed.get_step_failure_events()
    assert failures, "the failing poll left no failure event"
    error_texts = [event.step_failure_data.error.to_string() for event in failures]
    assert any(FAILURE_TEXT in text for text in error_texts)

    captured = capfd.readouterr()
    haystacks: list[tuple[str, str]] = [
        ("stdout", captured.out),
        ("stderr", captured.err),
        ("python logs", caplog.text),
        *(("exception text", text) for text in error_texts),
        *(("event log entry", text) for text in records),
        *(("run record", text) for text in runs),
    ]
    for root in (data_dir, dagster_home):
        haystacks.extend((str(path), text) for path, text in _file_texts(root))

    # The search looks where things are recorded: the failure text and an event id are found.
    assert any(
        FAILURE_TEXT in text for name, text in haystacks if name.startswith(str(dagster_home))
    )
    assert any(feed[0]["id"] in text for name, text in haystacks if name.endswith(".duckdb"))
    assert any(name.endswith("poll_state.json") for name, _ in haystacks)
    leaks = sorted({name for name, text in haystacks if canary in text})
    assert leaks == []
