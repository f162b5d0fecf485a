"""Metric tables against values worked out by hand from real recorded events."""

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from gh_pipeline.model import metrics
from gh_pipeline.warehouse import raw
from gh_pipeline_tests.support.fake_github import load_recorded

DUCKDB_FEED = "repo-events-duckdb-2023-page01.json"
T0 = datetime(2023, 4, 7, 12, 0, 25, tzinfo=UTC)
T_LAST = datetime(2023, 4, 7, 20, 2, 55, tzinfo=UTC)


def _template(event_type: str, action: str | None = None) -> dict[str, Any]:
    for event in load_recorded(DUCKDB_FEED):
        if event["type"] == event_type and (action is None or event["payload"]["action"] == action):
            return event
    raise LookupError(event_type)


def _event(
    event_type: str, event_id: str, created_at: str, repo: str, action: str | None = None
) -> dict[str, Any]:
    """A real recorded event re-identified, re-dated and moved to another repository."""
    event = copy.deepcopy(_template(event_type, action))
    event["id"] = event_id
    event["created_at"] = created_at
    event["repo"] = {"id": abs(hash(repo)) % 10**9, "name": repo, "url": ""}
    return event


def _tick(
    conn: duckdb.DuckDBPyConnection, path: Path, events: list[dict[str, Any]], as_of: datetime
) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    raw.load_ndjson(conn, path, poll_id=path.stem, source="api")
    metrics.refresh_all(conn, as_of=as_of)


def _pr_row(conn: duckdb.DuckDBPyConnection, repo: str) -> tuple[Any, ...]:
    rows = conn.execute(
        "SELECT pr_opened, first_opened_at, last_opened_at, avg_interval_s, median_interval_s,"
        " p90_interval_s FROM pr_intervals WHERE repo_name = $repo",
        {"repo": repo},
    ).fetchall()
    assert len(rows) == 1
    return rows[0]


def _counts(conn: duckdb.DuckDBPyConnection) -> dict[tuple[int, str], int]:
    rows = conn.execute("SELECT window_minutes, event_type, event_count FROM event_counts")
    return {(w, t): n for w, t, n in rows.fetchall()}


def test_duckdb_pr_intervals_by_hand(conn: duckdb.DuckDBPyConnection, tmp_path: Path):
    _tick(conn, tmp_path / "p1.ndjson", load_recorded(DUCKDB_FEED), datetime.now(UTC))
    # Opened at 12:00:25, 16:27:48 and 20:02:55: gaps 16043 s and 12907 s.
    n, first, last, avg, median, p90 = _pr_row(conn, "duckdb/duckdb")
    assert (n, first, last) == (3, T0, T_LAST)
    assert avg == pytest.approx(14475.0)
    assert median == pytest.approx(14475.0)
    assert p90 == pytest.approx(12907 + 0.9 * (16043 - 12907))  # 15729.4
    # 12 PullRequestEvents in the feed: 9 closed, 3 opened.
    assert conn.execute("SELECT * FROM repo_pr_counts").fetchall() == [("duckdb/duckdb", 12, 3)]


def test_late_opened_event_lands_in_its_interval(conn: duckdb.DuckDBPyConnection, tmp_path: Path):
    _tick(conn, tmp_path / "p1.ndjson", load_recorded(DUCKDB_FEED), datetime.now(UTC))
    late = _event("PullRequestEvent", "900001", "2023-04-07T14:00:25Z", "duckdb/duckdb", "opened")
    solo = _event("PullRequestEvent", "900002", "2023-04-07T15:00:00Z", "someone/solo", "opened")
    closed = _event("PullRequestEvent", "900003", "2023-04-07T15:00:01Z", "someone/solo", "closed")
    _tick(conn, tmp_path / "p2.ndjson", [late, solo, closed], datetime.now(UTC))
    # Gaps now 7200 s (12:00:25→14:00:25), 8843 s (→16:27:48) and 12907 s (→20:02:55).
    n, first, last, avg, median, p90 = _pr_row(conn, "duckdb/duckdb")
    assert (n, first, last) == (4, T0, T_LAST)
    assert avg == pytest.approx((7200 + 8843 + 12907) / 3)
    assert median == pytest.approx(8843.0)
    assert p90 == pytest.approx(8843 + 0.8 * (12907 - 8843))  # position 0.9 * 2 = 1.8
    # One opened pull request: no interval yet.
    solo_at = datetime(2023, 4, 7, 15, 0, tzinfo=UTC)
    assert _pr_row(conn, "someone/solo") == (1, solo_at, solo_at, None, None, None)
    counts = dict(conn.execute("SELECT repo_name, pr_events FROM repo_pr_counts").fetchall())
    assert counts == {"duckdb/duckdb": 13, "someone/solo": 2}


AS_OF = datetime(2024, 5, 1, 12, 0, 30, 250000, tzinfo=UTC)
BOUNDARY_EVENTS = [
    # (type, id, created_at): placed on and around the window edges of AS_OF.
    ("WatchEvent", "w1", "2024-05-01T12:00:30.250000Z"),  # == as_of: in every window
    ("WatchEvent", "w2", "2024-05-01T11:55:30.250000Z"),  # == as_of - 5 min: not in 5
    ("WatchEvent", "w3", "2024-05-01T11:55:30.250001Z"),  # 1 µs later: in 5
    ("PullRequestEvent", "p1", "2024-05-01T12:00:30.250001Z"),  # after as_of: in none
    ("PullRequestEvent", "p2", "2024-05-01T12:00:00Z"),  # minute start of as_of: in all
    ("PullRequestEvent", "p3", "2024-05-01T11:59:59.999999Z"),  # in all
    ("IssuesEvent", "i1", "2024-04-30T12:00:30.250000Z"),  # == as_of - 1440 min: in none
    ("IssuesEvent", "i2", "2024-04-30T12:00:31Z"),  # in 1440 only
    ("IssuesEvent", "i3", "2024-05-01T10:59:00Z"),  # whole minute 61 min back: 360 and 1440
    ("IssuesEvent", "i4", "2024-05-01T11:45:30.250001Z"),  # just inside 15
]
BY_HAND = {
    5: {"WatchEvent": 2, "PullRequestEvent": 2, "IssuesEvent": 0},
    15: {"WatchEvent": 3, "PullRequestEvent": 2, "IssuesEvent": 1},
    60: {"WatchEvent": 3, "PullRequestEvent": 2, "IssuesEvent": 1},
    360: {"WatchEvent": 3, "PullRequestEvent": 2, "IssuesEvent": 2},
    1440: {"WatchEvent": 3, "PullRequestEvent": 2, "IssuesEvent": 3},
}


def test_event_counts_window_edges_by_hand(conn: duckdb.DuckDBPyConnection, tmp_path: Path):
    events = [_event(t, i, at, "edge/repo") for t, i, at in BOUNDARY_EVENTS]
    # Two ticks, the second with the older events arriving late, so the minute buckets are
    # built incrementally.
    _tick(conn, tmp_path / "p1.ndjson", events[:5], AS_OF)
    _tick(conn, tmp_path / "p2.ndjson", events[5:], AS_OF)
    expected = {(w, t): n for w, by_type in BY_HAND.items() for t, n in by_type.items()}
    assert _counts(conn) == expected
    assert conn.execute("SELECT DISTINCT as_of FROM event_counts").fetchall() == [(AS_OF,)]


def test_event_counts_on_a_minute_boundary(conn: duckdb.DuckDBPyConnection, tmp_path: Path):
    events = [_event(t, i, at, "edge/repo") for t, i, at in BOUNDARY_EVENTS]
    as_of = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    _tick(conn, tmp_path / "p1.ndjson", events, as_of)
    counts = _counts(conn)
    # as_of - 5 min = 11:55:00: w2 and w3 (11:55:30) count; p2 sits exactly on as_of: counts;
    # w1 and p1 are after as_of.
    assert counts[(5, "WatchEvent")] == 2
    assert counts[(5, "PullRequestEvent")] == 2
    # as_of - 15 min = 11:45:00: i4 (11:45:30) counts.
    assert counts[(15, "IssuesEvent")] == 1
    # as_of - 1440 min = 2024-04-30T12:00:00: i1 (12:00:30.25) and i2 count now.
    assert counts[(1440, "IssuesEvent")] == 4


def test_event_counts_include_zero_rows(conn: duckdb.DuckDBPyConnection, tmp_path: Path):
    _tick(conn, tmp_path / "p1.ndjson", [], datetime.now(UTC))
    rows = conn.execute(
        "SELECT window_minutes, event_type, event_count FROM event_counts ORDER BY ALL"
    ).fetchall()
    assert len(rows) == 15
    assert {r[0] for r in rows} == {5, 15, 60, 360, 1440}
    assert all(r[2] == 0 for r in rows)


def test_naive_as_of_is_refused(conn: duckdb.DuckDBPyConnection):
    with pytest.raises(ValueError, match="as_of"):
        metrics.refresh_event_counts(conn, as_of=datetime(2024, 5, 1, 12, 0))


def test_metrics_never_read_raw_json(conn: duckdb.DuckDBPyConnection, tmp_path: Path):
    _tick(conn, tmp_path / "p1.ndjson", load_recorded(DUCKDB_FEED), datetime.now(UTC))
    # As after retention pruned the payloads: the typed tables must be enough, even for a
    # full rebuild of the metrics.
    conn.execute("UPDATE raw_events SET payload = NULL")
    metrics.rebuild_metrics(conn, as_of=datetime.now(UTC))
    n, _, _, avg, _, _ = _pr_row(conn, "duckdb/duckdb")
    assert (n, avg) == (3, pytest.approx(14475.0))
    assert conn.execute("SELECT * FROM repo_pr_counts").fetchall() == [("duckdb/duckdb", 12, 3)]


def test_warehouse_from_before_incremental_state_is_rebuilt(
    conn: duckdb.DuckDBPyConnection, tmp_path: Path
):
    # The walking skeleton wrote pr_intervals with CREATE TABLE AS (no key) and kept no state.
    conn.execute(
        "CREATE TABLE pr_intervals AS SELECT 'stale/repo' AS repo_name, 1::BIGINT AS pr_opened,"
        " now() AS first_opened_at, now() AS last_opened_at, NULL::DOUBLE AS avg_interval_s,"
        " NULL::DOUBLE AS median_interval_s, NULL::DOUBLE AS p90_interval_s"
    )
    conn.execute(
        "CREATE TABLE repo_pr_counts AS SELECT 'stale/repo' AS repo_name, 5::BIGINT AS pr_events,"
        " 1::BIGINT AS pr_opened"
    )
    _tick(conn, tmp_path / "p1.ndjson", load_recorded(DUCKDB_FEED), datetime.now(UTC))
    assert [r[0] for r in conn.execute("SELECT repo_name FROM pr_intervals").fetchall()] == [
        "duckdb/duckdb"
    ]
    assert conn.execute("SELECT * FROM repo_pr_counts").fetchall() == [("duckdb/duckdb", 12, 3)]
    # And from then on it is maintained incrementally.
    later = _event("PullRequestEvent", "900001", "2023-04-08T00:00:00Z", "duckdb/duckdb", "opened")
    _tick(conn, tmp_path / "p2.ndjson", [later], datetime.now(UTC))
    assert conn.execute("SELECT * FROM repo_pr_counts").fetchall() == [("duckdb/duckdb", 13, 4)]
    assert _pr_row(conn, "duckdb/duckdb")[0] == 4
