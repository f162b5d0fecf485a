"""The filtered tables: typed columns from real events, appended incrementally by raw `seq`."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline import warehouse
from gh_pipeline.model import filtered
from gh_pipeline.warehouse import catalogue, raw, watermarks
from gh_pipeline_tests.support.fake_github import load_recorded, recorded_2019_feed, trim_event

DUCKDB_FEED = "repo-events-duckdb-2023-page01.json"


def _write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def _load(conn: duckdb.DuckDBPyConnection, path: Path, events: list[dict[str, Any]]) -> None:
    raw.load_ndjson(conn, _write(path, events), poll_id=path.stem, source="api")


def _refresh_all(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {name: filtered.refresh_filtered(conn, name) for name in catalogue.FILTERED_TABLES}


def test_duckdb_feed_splits_into_typed_tables(conn: duckdb.DuckDBPyConnection, tmp_path: Path):
    _load(conn, tmp_path / "p1.ndjson", load_recorded(DUCKDB_FEED))
    # Counted by hand in the recorded feed: 8 WatchEvents, 12 PullRequestEvents, 5 IssuesEvents.
    assert _refresh_all(conn) == {"watch_events": 8, "pull_request_events": 12, "issues_events": 5}
    rows = conn.execute(
        "SELECT created_at, actor_login, repo_name, action, number, source"
        " FROM pull_request_events WHERE event_id = '28277714197'"
    ).fetchall()
    assert rows == [
        (
            datetime(2023, 4, 7, 20, 2, 55, tzinfo=UTC),
            "hawkfish",
            "duckdb/duckdb",
            "opened",
            7001,
            "api",
        )
    ]
    actions = conn.execute(
        "SELECT action, count(*) FROM pull_request_events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert actions == [("closed", 9), ("opened", 3)]
    issue = conn.execute(
        "SELECT action, number FROM issues_events WHERE event_id = '28279611465'"
    ).fetchall()
    assert issue == [("opened", 7004)]
    assert conn.execute("SELECT DISTINCT action FROM watch_events").fetchall() == [("started",)]


def test_refresh_appends_only_new_events(conn: duckdb.DuckDBPyConnection, tmp_path: Path):
    feed = recorded_2019_feed()
    first, second = feed[80:], feed[:80]
    _load(conn, tmp_path / "p1.ndjson", first)
    added_first = _refresh_all(conn)
    # Nothing new: nothing added, and the rows are not duplicated.
    assert _refresh_all(conn) == {name: 0 for name in catalogue.FILTERED_TABLES}
    # The second poll overlaps the first (the live feed repeats events): only new ids count.
    _load(conn, tmp_path / "p2.ndjson", second + first[:30])
    added_second = _refresh_all(conn)
    for name, table in catalogue.FILTERED_TABLES.items():
        expected_first = sum(1 for e in first if e["type"] == table.event_type)
        expected_second = sum(1 for e in second if e["type"] == table.event_type)
        assert added_first[name] == expected_first
        assert added_second[name] == expected_second
        assert filtered.row_count(conn, name) == expected_first + expected_second
    # Every watermark sits at the newest raw row, including the untracked ones after the last
    # tracked event, so they are never scanned again.
    newest = warehouse.scalar(conn, "SELECT max(seq) FROM raw_events")
    for name in catalogue.FILTERED_TABLES:
        assert watermarks.get_watermark(conn, name, "raw_events") == newest


def test_trimmed_pull_request_shape_keeps_action_and_number(
    conn: duckdb.DuckDBPyConnection, tmp_path: Path
):
    prs = [e for e in load_recorded(DUCKDB_FEED) if e["type"] == "PullRequestEvent"]
    trimmed = [trim_event(e) for e in prs]
    assert all("title" not in e["payload"]["pull_request"] for e in trimmed)
    _load(conn, tmp_path / "p1.ndjson", trimmed)
    _refresh_all(conn)
    rows = conn.execute(
        "SELECT event_id, action, number FROM pull_request_events ORDER BY event_id"
    ).fetchall()
    assert rows == sorted((e["id"], e["payload"]["action"], e["payload"]["number"]) for e in prs)


def test_table_filled_before_watermarks_resumes_without_duplicates(
    conn: duckdb.DuckDBPyConnection, tmp_path: Path
):
    feed = recorded_2019_feed()
    _load(conn, tmp_path / "p1.ndjson", feed[50:])
    _refresh_all(conn)
    # A warehouse from before this change has filtered rows but no watermark rows.
    conn.execute("DELETE FROM incremental_watermarks")
    _load(conn, tmp_path / "p2.ndjson", feed[:50])
    _refresh_all(conn)
    for name, table in catalogue.FILTERED_TABLES.items():
        expected = sum(1 for e in feed if e["type"] == table.event_type)
        assert filtered.row_count(conn, name) == expected


def test_rebuild_equals_incremental(conn: duckdb.DuckDBPyConnection, tmp_path: Path):
    feed = recorded_2019_feed() + load_recorded(DUCKDB_FEED)
    for i in range(0, len(feed), 60):
        _load(conn, tmp_path / f"p{i}.ndjson", feed[i : i + 60])
        _refresh_all(conn)
    before = {
        name: conn.execute(f"SELECT * FROM {name} ORDER BY event_id").fetchall()
        for name in catalogue.FILTERED_TABLES
    }
    assert filtered.rebuild_filtered(conn) == sum(len(rows) for rows in before.values())
    for name in catalogue.FILTERED_TABLES:
        assert conn.execute(f"SELECT * FROM {name} ORDER BY event_id").fetchall() == before[name]
    # After a rebuild the watermark is current: the next refresh adds nothing.
    assert _refresh_all(conn) == {name: 0 for name in catalogue.FILTERED_TABLES}
