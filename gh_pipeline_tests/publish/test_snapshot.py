"""Append-only reader snapshots of the filtered tables (gh_pipeline.publish.snapshot), from real events.

Real recorded events are loaded batch by batch into a real DuckDB warehouse, the filtered tables
are refreshed as the assets do, and each table is published after every batch. What a part or
manifest must hold is derived from the input events, never from what the code wrote.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from gh_pipeline import settings, warehouse
from gh_pipeline.model import filtered
from gh_pipeline.publish import snapshot
from gh_pipeline.read import query
from gh_pipeline.warehouse import catalogue, raw
from gh_pipeline_tests.support.built_warehouse import fixture_events
from gh_pipeline_tests.support.query_reader import reader_process

WATCH = catalogue.WATCH_EVENTS
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _tracked_ids(events: list[dict[str, Any]], event_type: str) -> set[str]:
    return {str(e["id"]) for e in events if e["type"] == event_type}


def _batches(events: list[dict[str, Any]], count: int) -> list[list[dict[str, Any]]]:
    size = -(-len(events) // count)
    return [events[i : i + size] for i in range(0, len(events), size)]


class Pipeline:
    """A warehouse fed batch by batch: load raw, refresh the filtered tables, publish them."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.snap = settings.snapshot_dir(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.conn = warehouse.connect(settings.warehouse_path(data_dir))
        self.batches = 0

    def load(self, events: list[dict[str, Any]]) -> None:
        self.batches += 1
        path = self.data_dir / f"batch-{self.batches}.ndjson"
        path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
        raw.load_ndjson(self.conn, path, poll_id=f"b{self.batches}", source="fixture")
        for name in catalogue.FILTERED_TABLES:
            filtered.refresh_filtered(self.conn, name)

    def publish(self, table: str = WATCH, at: datetime | None = None) -> dict[str, Any]:
        snapshot.publish_table(self.conn, self.snap, table, published_at=at)
        manifest = snapshot.read_manifest(self.snap, table)
        assert manifest is not None
        return manifest

    def ids_in(self, files: list[str]) -> list[str]:
        paths = [str(self.snap / f) for f in files]
        rows = self.conn.execute(
            "SELECT event_id FROM read_parquet($p) ORDER BY seq", {"p": paths}
        ).fetchall()
        return [r[0] for r in rows]

    def rows_in(self, files: list[str]) -> list[tuple]:
        paths = [str(self.snap / f) for f in files]
        return self.conn.execute(
            "SELECT * EXCLUDE (filename) FROM read_parquet($p, filename = true) ORDER BY seq",
            {"p": paths},
        ).fetchall()

    def table_rows(self, table: str = WATCH) -> list[tuple]:
        return self.conn.execute(f"SELECT * FROM {table} ORDER BY seq").fetchall()


@pytest.fixture
def pipeline(data_dir: Path) -> Iterator[Pipeline]:
    pipe = Pipeline(data_dir)
    yield pipe
    pipe.conn.close()


def test_each_publication_appends_a_part_with_only_the_new_rows(pipeline: Pipeline) -> None:
    events = fixture_events()
    batches = _batches(events, 4)
    files: list[str] = []
    seen: set[str] = set()
    for k, batch in enumerate(batches):
        pipeline.load(batch)
        manifest = pipeline.publish(at=T0 + timedelta(seconds=k))
        parts = [p["file"] for p in manifest["parts"]]
        # Earlier parts are kept as they were; at most one new part per publication.
        assert parts[: len(files)] == files
        new = parts[len(files) :]
        expected = _tracked_ids(batch, "WatchEvent") - seen
        if expected:
            assert len(new) == 1
            assert set(pipeline.ids_in(new)) == expected
            assert len(pipeline.ids_in(new)) == len(expected)  # no row twice
        else:
            assert new == []
        seen |= expected
        files = parts
        assert manifest["rows"] == len(seen)
        assert manifest["published_at"] == (T0 + timedelta(seconds=k)).isoformat()
    assert seen == _tracked_ids(events, "WatchEvent") and len(files) >= 2
    # Readers see exactly the published rows, and when they were published.
    read = query.events("WatchEvent", data_dir=pipeline.data_dir)
    assert sorted(read["event_id"]) == sorted(seen)
    updated = query.last_updated(data_dir=pipeline.data_dir).set_index("table_name")
    assert updated.loc[WATCH, "row_count"] == len(seen)
    assert updated.loc[WATCH, "published_at"] == T0 + timedelta(seconds=len(batches) - 1)


def test_a_publication_with_nothing_new_writes_no_part(pipeline: Pipeline) -> None:
    pipeline.load(fixture_events())
    first = pipeline.publish(at=T0)
    second = pipeline.publish(at=T0 + timedelta(seconds=1))
    assert second["parts"] == first["parts"]
    assert second["published_at"] == (T0 + timedelta(seconds=1)).isoformat()
    assert len(list(snapshot.parts_dir(pipeline.snap, WATCH).iterdir())) == 1


def test_compaction_keeps_the_content_identical(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "MAX_PARTS", 3)
    events = fixture_events()
    batches = [b for b in _batches(events, 12) if _tracked_ids(b, "IssuesEvent")]
    assert len(batches) >= 6
    table = catalogue.ISSUES_EVENTS
    retired: set[str] = set()
    for k, batch in enumerate(batches):
        pipeline.load(batch)
        before = snapshot.read_manifest(pipeline.snap, table)
        manifest = pipeline.publish(table, at=T0 + timedelta(seconds=k))
        assert len(manifest["parts"]) <= 3
        listed = [p["file"] for p in manifest["parts"]]
        # Whatever was merged, the parts hold exactly the table's rows, every column, once.
        assert pipeline.rows_in(listed) == pipeline.table_rows(table)
        if before is not None:
            merged = {p["file"] for p in before["parts"]} - set(listed)
            retired |= merged
    assert retired, "no compaction happened"
    # Merged-away parts stay for readers during the grace period, then go.
    assert all((pipeline.snap / f).exists() for f in retired)
    later = T0 + snapshot.SUPERSEDED_GRACE + timedelta(minutes=1)
    manifest = pipeline.publish(table, at=later)
    assert not any((pipeline.snap / f).exists() for f in retired)
    assert manifest["retired"] == []
    assert {p.name for p in snapshot.parts_dir(pipeline.snap, table).iterdir()} == {
        Path(p["file"]).name for p in manifest["parts"]
    }
    ids = query.events("IssuesEvent", data_dir=pipeline.data_dir)["event_id"]
    assert sorted(ids) == sorted(_tracked_ids(events, "IssuesEvent"))


def test_a_rebuilt_table_is_published_again_in_full(pipeline: Pipeline) -> None:
    events = fixture_events()
    first, second, third = _batches(events, 3)
    pipeline.load(first)
    pipeline.load(second)
    pipeline.publish(at=T0)
    pipeline.load(third)
    before = pipeline.publish(at=T0 + timedelta(seconds=1))
    assert len(before["parts"]) == 2
    # A rebuild from raw after the first batch's raw rows were lost: fewer rows than published.
    dropped = [str(e["id"]) for e in first]
    pipeline.conn.execute(
        "DELETE FROM raw_events WHERE list_contains($ids, event_id)", {"ids": dropped}
    )
    filtered.rebuild_filtered(pipeline.conn, WATCH)
    after = pipeline.publish(at=T0 + timedelta(seconds=2))
    assert len(after["parts"]) == 1
    expected = _tracked_ids(second + third, "WatchEvent") - _tracked_ids(first, "WatchEvent")
    assert sorted(pipeline.ids_in([after["parts"][0]["file"]])) == sorted(expected)
    assert after["rows"] == len(expected)
    assert sorted(query.events("WatchEvent", data_dir=pipeline.data_dir)["event_id"]) == sorted(
        expected
    )
    # The superseded parts wait out the grace period like any superseded file.
    old = [p["file"] for p in before["parts"]]
    assert {r["file"] for r in after["retired"]} == set(old)
    assert all((pipeline.snap / f).exists() for f in old)


def test_a_whole_table_snapshot_of_an_older_pipeline_is_replaced(pipeline: Pipeline) -> None:
    pipeline.load(fixture_events())
    # What the previous snapshot format left: a link to a whole-table version.
    legacy_dir = snapshot.versions_dir(pipeline.snap, WATCH)
    legacy_dir.mkdir(parents=True)
    version = legacy_dir / "00000000000000000001-1-abcdef01.parquet"
    pipeline.conn.execute("COPY (SELECT * FROM watch_events LIMIT 1) TO $p", {"p": str(version)})
    snapshot.snapshot_file(pipeline.snap, WATCH).symlink_to(version.relative_to(pipeline.snap))
    manifest = pipeline.publish(at=T0)
    assert not snapshot.snapshot_file(pipeline.snap, WATCH).is_symlink()
    assert version.exists()  # a reader may have resolved it just before
    ids = query.events("WatchEvent", data_dir=pipeline.data_dir)["event_id"]
    assert sorted(ids) == sorted(_tracked_ids(fixture_events(), "WatchEvent"))
    pipeline.publish(at=T0 + snapshot.SUPERSEDED_GRACE + timedelta(seconds=1))
    assert not version.exists()
    assert manifest["rows"] == len(ids)


def test_a_reader_in_another_process_never_errors_while_tables_are_republished(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small limits so that compactions and deletions of merged parts happen during the test.
    monkeypatch.setattr(snapshot, "MAX_PARTS", 3)
    monkeypatch.setattr(snapshot, "SUPERSEDED_GRACE", timedelta(seconds=1))
    events = fixture_events()
    stop_file = tmp_path / "stop-reader"
    with reader_process(pipeline.data_dir, stop_file, pause_s=0) as report:
        for batch in _batches(events, 25):
            pipeline.load(batch)
            for table in catalogue.FILTERED_TABLES:
                pipeline.publish(table, at=datetime.now(UTC))
    assert report["errors"] == []
    assert report["calls"] > 0 and report["states"] >= 2
    types = {t.event_type for t in catalogue.FILTERED_TABLES.values()}
    tracked = {str(e["id"]) for e in events if e["type"] in types}
    assert set(query.events(data_dir=pipeline.data_dir)["event_id"]) == tracked
    assert report["max_events"] <= len(tracked)


def test_every_published_file_is_complete_parquet(pipeline: Pipeline) -> None:
    pipeline.load(fixture_events())
    for table in catalogue.FILTERED_TABLES:
        manifest = pipeline.publish(table, at=T0)
        for part in manifest["parts"]:
            path = pipeline.snap / part["file"]
            with duckdb.connect() as reader:
                count = warehouse.scalar(
                    reader, "SELECT count(*) FROM read_parquet($p)", {"p": str(path)}
                )
            assert count == part["rows"]
