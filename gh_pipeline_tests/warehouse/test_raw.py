import gzip
import json
from pathlib import Path

import duckdb
import pytest

from gh_pipeline import warehouse
from gh_pipeline.live import landing
from gh_pipeline.warehouse import raw
from gh_pipeline_tests.support.fake_github import load_recorded


def _pages_2019() -> list[list[dict]]:
    return [load_recorded(f"events-2019-10-21-page{n:02d}.json") for n in range(1, 11)]


@pytest.fixture
def conn(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    c = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.ensure_schema(c)
    return c


def test_overlapping_pages_are_stored_exactly_once(conn, tmp_path: Path) -> None:
    # The recorded session's pages overlap (the feed moved while it was paged): 281 events, of
    # which the distinct ids are counted here independently of the loader.
    events = [e for page in _pages_2019() for e in page]
    distinct = {e["id"] for e in events}
    assert len(events) == 281 and len(distinct) < len(events)
    path = landing.write_landing_file(tmp_path / "a.ndjson.gz", events)
    stats = raw.load_ndjson(conn, path, poll_id="p1", source="api")
    assert (stats.received, stats.new, stats.rejected) == (281, len(distinct), 0)
    assert stats.duplicates == 281 - len(distinct)
    rows = conn.execute("SELECT event_id, event_type, repo_name FROM raw_events").fetchall()
    assert {r[0] for r in rows} == distinct and len(rows) == len(distinct)
    by_id = {e["id"]: e for e in events}
    assert all(by_id[r[0]]["type"] == r[1] and by_id[r[0]]["repo"]["name"] == r[2] for r in rows)

    again = raw.load_ndjson(conn, path, poll_id="p2", source="api")
    assert again.new == 0 and again.duplicates == 281
    assert warehouse.scalar(conn, "SELECT count(*) FROM raw_events") == len(distinct)


def test_columns_are_typed_from_the_event(conn, tmp_path: Path) -> None:
    event = load_recorded("events-2019-10-21-page01.json")[0]
    path = landing.write_landing_file(tmp_path / "one.ndjson.gz", [event])
    raw.load_ndjson(conn, path, poll_id="p1", source="api")
    row = conn.execute(
        "SELECT event_id, event_type, strftime(created_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ'),"
        " actor_login, repo_id, repo_name, payload, event, poll_id, source FROM raw_events"
    ).fetchall()[0]
    assert row[:6] == (
        event["id"],
        event["type"],
        event["created_at"],
        event["actor"]["login"],
        event["repo"]["id"],
        event["repo"]["name"],
    )
    assert json.loads(row[6]) == event["payload"]
    assert json.loads(row[7]) == event
    assert row[8:] == ("p1", "api")


def test_bad_events_are_rejected_and_the_rest_land(conn, tmp_path: Path) -> None:
    good = load_recorded("events-2019-10-21-page01.json")[:3]
    no_repo = {k: v for k, v in good[0].items() if k != "repo"} | {"id": "x1"}
    bad_time = dict(good[1], id="x2", created_at="yesterday")
    path = tmp_path / "mixed.ndjson.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for line in [
            json.dumps(good[0]),
            '{"id": "trunc',
            json.dumps(no_repo),
            "[1]",
            json.dumps(bad_time),
            json.dumps(good[1]),
            json.dumps(good[2]),
        ]:
            fh.write(line + "\n")
    stats = raw.load_ndjson(conn, path, poll_id="p1", source="api")
    assert (stats.received, stats.new, stats.rejected) == (7, 3, 4)
    reasons = conn.execute("SELECT line_number, reason FROM rejected_events ORDER BY 1").fetchall()
    assert [r[0] for r in reasons] == [2, 3, 4, 5]
    assert "JSON" in reasons[0][1] and "repo.name" in reasons[1][1]
    assert "object" in reasons[2][1] and "created_at" in reasons[3][1]
    raw_text = conn.execute("SELECT raw_text FROM rejected_events WHERE line_number = 2").fetchall()
    assert raw_text == [('{"id": "trunc',)]
    # Loading the same file again rejects nothing new and stores nothing twice.
    raw.load_ndjson(conn, path, poll_id="p1", source="api")
    assert warehouse.scalar(conn, "SELECT count(*) FROM rejected_events") == 4
    assert warehouse.scalar(conn, "SELECT count(*) FROM raw_events") == 3


def test_landing_files_are_immutable(tmp_path: Path) -> None:
    path = landing.write_landing_file(tmp_path / "x" / "p.ndjson.gz", [{"id": "1"}])
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        assert [json.loads(line) for line in fh] == [{"id": "1"}]
    with pytest.raises(FileExistsError):
        landing.write_landing_file(path, [{"id": "2"}])
    assert not list(path.parent.glob(".*tmp"))
