"""GH Archive hours: URLs, the verified streaming download over real HTTP, the bulk load.

A tiny local HTTP server (gh_pipeline_tests.support.archive_server) serves real recorded
hours from fixtures/gharchive and deliberately broken ones. Expected counts come from reading the
fixture files here with the gzip and json modules, independently of the loader.
"""

import gzip
import json
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gh_pipeline import warehouse
from gh_pipeline.archive import bulk_load, fetch
from gh_pipeline.archive.fetch import ArchiveDownloadError, ArchiveNotPublished
from gh_pipeline.archive.hours import ArchiveHour
from gh_pipeline.live import landing
from gh_pipeline.model import filtered
from gh_pipeline.warehouse import catalogue, raw
from gh_pipeline.warehouse.catalogue import TRACKED_EVENT_TYPES
from gh_pipeline_tests.support.archive_server import (
    FIXTURES,
    Served,
    fixture_events,
    fixture_lines,
    gz,
)

HOUR_6 = ArchiveHour(datetime(2021, 7, 21, 6, tzinfo=UTC))


# --- hours and URLs -------------------------------------------------------------------------------


def test_an_hour_is_named_as_gh_archive_names_it() -> None:
    hour = ArchiveHour.from_partition_key("2021-07-21-06:00")
    assert hour == HOUR_6
    assert hour.file_name == "2021-07-21-6.json.gz"  # no leading zero on the hour
    assert hour.poll_id == "gharchive:2021-07-21-6"
    assert hour.url("https://data.gharchive.org/") == (
        "https://data.gharchive.org/2021-07-21-6.json.gz"
    )
    assert ArchiveHour.from_partition_key("2024-01-01-15:00").file_name == "2024-01-01-15.json.gz"
    assert hour.end == datetime(2021, 7, 21, 7, tzinfo=UTC)
    for bad in ("2021-07-21", "2021-07-21T06:00", "yesterday"):
        with pytest.raises(ValueError, match="partition key"):
            ArchiveHour.from_partition_key(bad)
    with pytest.raises(ValueError, match="on the hour"):
        ArchiveHour(datetime(2021, 7, 21, 6, 30, tzinfo=UTC))


def test_a_404_means_not_yet_for_a_day_then_missing() -> None:
    assert HOUR_6.not_yet_due(datetime(2021, 7, 21, 8, tzinfo=UTC))
    assert HOUR_6.not_yet_due(datetime(2021, 7, 22, 6, 59, tzinfo=UTC))
    assert not HOUR_6.not_yet_due(datetime(2021, 7, 22, 7, 0, tzinfo=UTC))


# --- the download ---------------------------------------------------------------------------------


def test_download_streams_the_hour_to_a_verified_temporary_file(archive, tmp_path: Path) -> None:
    body = archive.serve_fixture("2021-07-21-6.json.gz")
    dest = tmp_path / "tmp"
    dest.mkdir()
    stale = dest / f"2021-07-21-6.1234-deadbeef{fetch.PART_SUFFIX}"  # left by a killed run
    stale.write_bytes(b"half a file")
    with fetch.make_client() as client:
        download = fetch.download_hour(client, HOUR_6, archive.url, dest)
    # Stored decompressed, exactly the hour's NDJSON.
    assert download.path.read_bytes() == gzip.decompress(body)
    assert download.path.parent == dest and download.path.name.endswith(fetch.PART_SUFFIX)
    assert not stale.exists()
    assert download.url == f"{archive.url}/2021-07-21-6.json.gz"
    assert download.compressed_bytes == len(body)
    assert download.lines == len(fixture_lines("2021-07-21-6.json.gz")) == 200
    assert download.uncompressed_bytes == len(gzip.decompress(body))
    assert archive.requests == [("GET", "2021-07-21-6.json.gz")]


def test_a_gz_labelled_content_encoding_gzip_is_still_the_hour(archive, tmp_path: Path) -> None:
    # Some servers label .gz files "Content-Encoding: gzip"; the file must not be inflated twice.
    body = (FIXTURES / "2021-07-21-6.json.gz").read_bytes()
    archive.files[HOUR_6.file_name] = Served(body, headers={"Content-Encoding": "gzip"})
    with fetch.make_client() as client:
        download = fetch.download_hour(client, HOUR_6, archive.url, tmp_path)
    assert download.path.read_bytes() == gzip.decompress(body)


def test_a_404_raises_not_published_and_leaves_nothing(archive, tmp_path: Path) -> None:
    with fetch.make_client() as client, pytest.raises(ArchiveNotPublished, match="404"):
        fetch.download_hour(client, HOUR_6, archive.url, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_gzip_is_refused_and_leaves_nothing(archive, tmp_path: Path) -> None:
    # The server sends all it has (Content-Length matches), but the file itself is cut short.
    body = (FIXTURES / "2021-07-21-6.json.gz").read_bytes()
    archive.files[HOUR_6.file_name] = Served(body[: len(body) * 2 // 3])
    with fetch.make_client() as client, pytest.raises(ArchiveDownloadError, match="truncated"):
        fetch.download_hour(client, HOUR_6, archive.url, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_transfer_is_refused_and_leaves_nothing(archive, tmp_path: Path) -> None:
    body = (FIXTURES / "2021-07-21-6.json.gz").read_bytes()
    archive.files[HOUR_6.file_name] = Served(body[:40_000], announce=len(body))
    with fetch.make_client() as client, pytest.raises(ArchiveDownloadError, match="failed"):
        fetch.download_hour(client, HOUR_6, archive.url, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_gzip_data_is_refused(archive, tmp_path: Path) -> None:
    body = bytearray((FIXTURES / "2021-07-21-6.json.gz").read_bytes())
    for i in range(20_000, 20_064):
        body[i] ^= 0xFF
    archive.files[HOUR_6.file_name] = Served(bytes(body))
    with fetch.make_client() as client, pytest.raises(ArchiveDownloadError, match="gzip"):
        fetch.download_hour(client, HOUR_6, archive.url, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_server_error_is_a_download_error(archive, tmp_path: Path) -> None:
    archive.files[HOUR_6.file_name] = Served(b"busy", status=503)
    with fetch.make_client() as client, pytest.raises(ArchiveDownloadError, match="HTTP 503"):
        fetch.download_hour(client, HOUR_6, archive.url, tmp_path)
    with fetch.make_client() as client, pytest.raises(ArchiveDownloadError, match="HTTP 503"):
        fetch.is_published(client, HOUR_6, archive.url)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_server_is_a_download_error(tmp_path: Path) -> None:
    with fetch.make_client(timeout_s=5) as client, pytest.raises(ArchiveDownloadError):
        fetch.download_hour(client, HOUR_6, "http://127.0.0.1:9", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_concatenated_gzip_members_are_one_valid_file(tmp_path: Path) -> None:
    lines = fixture_lines("2024-01-01-15.json.gz")
    path = tmp_path / "multi.json.gz"
    path.write_bytes(gz(lines[:20]) + gz(lines[20:]))
    out = tmp_path / "multi.ndjson"
    assert fetch.expand_gzip_file(path, out).lines == len(lines) == 50
    assert out.read_text(encoding="utf-8") == "\n".join(lines) + "\n"
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gz(lines[:20]) + gz(lines[20:])[:-9])
    with pytest.raises(ArchiveDownloadError, match="truncated"):
        fetch.expand_gzip_file(cut, tmp_path / "cut.ndjson")
    assert not (tmp_path / "cut.ndjson").exists()


def test_is_published_uses_head(archive) -> None:
    archive.serve_fixture("2021-07-21-6.json.gz")
    later = ArchiveHour(datetime(2021, 7, 21, 10, tzinfo=UTC))
    with fetch.make_client() as client:
        assert fetch.is_published(client, HOUR_6, archive.url)
        assert not fetch.is_published(client, later, archive.url)
    assert archive.requests == [("HEAD", "2021-07-21-6.json.gz"), ("HEAD", "2021-07-21-10.json.gz")]


# --- the load -------------------------------------------------------------------------------------


def _copy(name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    path.write_bytes((FIXTURES / name).read_bytes())
    return path


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("2015-01-01-1.json.gz", "2015-01-01-01:00"),
        ("2021-07-21-6.json.gz", "2021-07-21-06:00"),
        ("2024-01-01-15.json.gz", "2024-01-01-15:00"),
    ],
)
def test_an_hour_loads_every_event_once_and_a_rerun_adds_nothing(conn, tmp_path, name, key) -> None:
    events = fixture_events(name)
    ids = {str(e["id"]) for e in events}
    hour = ArchiveHour.from_partition_key(key)
    assert hour.file_name == name
    path = _copy(name, tmp_path)
    first = bulk_load.load_hour_file(conn, path, hour)
    assert (first.stats.received, first.stats.rejected) == (len(events), 0)
    assert first.stats.new == len(ids) and first.stats.duplicates == len(events) - len(ids)
    rows = conn.execute(
        "SELECT event_id, event_type, repo_name, source, poll_id FROM raw_events"
    ).fetchall()
    assert {r[0] for r in rows} == ids and len(rows) == len(ids)
    by_id = {str(e["id"]): e for e in events}
    assert all(r[1] == by_id[r[0]]["type"] and r[2] == by_id[r[0]]["repo"]["name"] for r in rows)
    assert {(r[3], r[4]) for r in rows} == {("gharchive", hour.poll_id)}
    assert bulk_load.stored_from_hour(conn, hour) == (len(ids), 0)

    limit = warehouse.scalar(conn, "SELECT current_setting('memory_limit')")
    again = bulk_load.load_hour_file(conn, path, hour)
    assert (again.stats.new, again.stats.duplicates) == (0, len(events))
    # The load's own memory limit is lifted again afterwards, to exactly what it was.
    assert warehouse.scalar(conn, "SELECT current_setting('memory_limit')") == limit
    assert warehouse.scalar(conn, "SELECT count(*) FROM raw_events") == len(ids)


@pytest.mark.parametrize("keep_event", [False, True])
@pytest.mark.parametrize("one_pass", [False, True])
def test_the_typed_columns_and_payload_are_kept_and_the_whole_event_on_request(
    conn, tmp_path: Path, keep_event: bool, one_pass: bool
) -> None:
    event = fixture_events("2024-01-01-15.json.gz")[0]
    lines = len(fixture_lines("2024-01-01-15.json.gz"))
    load = bulk_load.load_hour_file(
        conn,
        _copy("2024-01-01-15.json.gz", tmp_path),
        HOUR_6,
        expected_lines=lines if one_pass else None,
        keep_event=keep_event,
    )
    assert load.method == ("direct" if one_pass else "staged")
    row = conn.execute(
        "SELECT event_type, strftime(created_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ'),"
        " actor_login, repo_id, repo_name, payload, event FROM raw_events WHERE event_id = $id",
        {"id": event["id"]},
    ).fetchall()[0]
    assert row[:5] == (
        event["type"],
        event["created_at"],
        event["actor"]["login"],
        event["repo"]["id"],
        event["repo"]["name"],
    )
    assert json.loads(row[5]) == event["payload"]
    # GH Archive keeps the line; the warehouse keeps it too only when asked to.
    assert (json.loads(row[6]) if row[6] is not None else None) == (event if keep_event else None)


def test_corrupt_lines_are_rejected_with_their_reason_and_the_rest_load(conn, tmp_path) -> None:
    lines = fixture_lines("2021-07-21-8.json.gz")
    good = [json.loads(line) for line in lines]
    no_id = json.dumps({k: v for k, v in good[3].items() if k != "id"})
    bad = {
        5: '{"id": "31", "type": "PushEvent", "actor": {"login": "x"',  # cut mid-line
        40: "[1, 2, 3]",
        77: no_id,
        120: json.dumps(dict(good[9], id="999", created_at="not a time")),
    }
    mixed = list(lines)
    for at in sorted(bad):
        mixed.insert(at - 1, bad[at])  # line numbers are 1-based
    path = tmp_path / "mixed.json.gz"
    path.write_bytes(gz(mixed))
    # The one-pass attempt finds fewer good lines than the file has and gives way to the staged
    # load, which records the rejected lines.
    load = bulk_load.load_hour_file(conn, path, HOUR_6, expected_lines=len(mixed))
    assert load.method == "staged"
    assert (load.stats.received, load.stats.rejected) == (len(lines) + 4, 4)
    assert load.stats.new == len({e["id"] for e in good})
    rejected = conn.execute(
        "SELECT line_number, reason, raw_text, source, poll_id FROM rejected_events ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in rejected] == sorted(bad)
    assert [r[2] for r in rejected] == [bad[n] for n in sorted(bad)]
    reasons = [r[1] for r in rejected]
    assert "not valid JSON" in reasons[0] and "array" in reasons[1]
    assert "id" in reasons[2] and "created_at" in reasons[3]
    assert {(r[3], r[4]) for r in rejected} == {("gharchive", HOUR_6.poll_id)}
    # A re-run rejects nothing twice and stores nothing twice.
    bulk_load.load_hour_file(conn, path, HOUR_6)
    assert warehouse.scalar(conn, "SELECT count(*) FROM rejected_events") == 4
    assert warehouse.scalar(conn, "SELECT count(*) FROM raw_events") == load.stats.new


def test_archive_events_already_polled_live_are_not_stored_twice(conn, tmp_path: Path) -> None:
    archive_events = fixture_events("2021-07-21-6.json.gz")
    also_live = archive_events[10:40]  # 30 events the live feed saw too
    # 5 more live events of the same hour that the archive file lacks (new ids, re-dated).
    live_only = [
        dict(e, id=f"77{e['id']}", created_at="2021-07-21T06:30:00Z")
        for e in fixture_events("2021-07-21-7.json.gz")[:5]
    ]
    landed = landing.write_landing_file(tmp_path / "live.ndjson.gz", also_live + live_only)
    raw.load_ndjson(conn, landed, poll_id="poll-1", source="api")

    load = bulk_load.load_hour_file(
        conn, _copy("2021-07-21-6.json.gz", tmp_path), HOUR_6, expected_lines=200
    )
    assert load.method == "staged"  # live events in the hour: no one-pass load
    distinct = {e["id"] for e in archive_events}
    assert load.stats.new == len(distinct) - 30 and load.stats.duplicates == 30
    sources = dict(conn.execute("SELECT source, count(*) FROM raw_events GROUP BY 1").fetchall())
    assert sources == {"api": 35, "gharchive": len(distinct) - 30}
    # The overlapping events keep the source that stored them first.
    kept = conn.execute(
        "SELECT DISTINCT source FROM raw_events WHERE event_id IN (SELECT unnest($ids))",
        {"ids": [e["id"] for e in also_live]},
    ).fetchall()
    assert kept == [("api",)]
    in_hour = {e["id"] for e in archive_events if e["created_at"].startswith("2021-07-21T06:")}
    assert load.coverage.live_events == 35
    assert load.coverage.in_both == 30
    assert load.coverage.live_only == 5
    assert load.coverage.archive_events == len(in_hour)
    assert load.coverage.archive_only == len(in_hour) - 30
    assert load.coverage.live_share_in_archive == pytest.approx(30 / 35)


_COLUMNS = (
    "SELECT event_id, event_type, created_at, actor_login, repo_id, repo_name, payload, event,"
    " poll_id, source FROM raw_events ORDER BY event_id"
)


@pytest.mark.parametrize("keep_event", [False, True])
def test_a_fresh_hour_loads_in_one_pass_with_the_staged_result(
    tmp_path: Path, keep_event: bool
) -> None:
    name = "2021-07-21-9.json.gz"
    hour = ArchiveHour.from_partition_key("2021-07-21-09:00")
    lines = len(fixture_lines(name))
    results, loads = [], []
    for expected in (lines, None):
        c = warehouse.connect(tmp_path / f"w{expected}.duckdb")
        loads.append(
            bulk_load.load_hour_file(
                c, _copy(name, tmp_path), hour, expected_lines=expected, keep_event=keep_event
            )
        )
        results.append(c.execute(_COLUMNS).fetchall())
        c.close()
    assert [load.method for load in loads] == ["direct", "staged"]
    assert results[0] == results[1] and len(results[0]) == lines
    assert loads[0].stats == loads[1].stats
    assert loads[0].coverage == loads[1].coverage
    # Loading it again goes the staged way (the hour is no longer fresh) and adds nothing.
    c = warehouse.connect(tmp_path / f"w{lines}.duckdb")
    again = bulk_load.load_hour_file(c, _copy(name, tmp_path), hour, expected_lines=lines)
    assert (again.method, again.stats.new, again.stats.duplicates) == ("staged", 0, lines)
    c.close()


_REJECTED_COLUMNS = "SELECT line_number, reason, raw_text FROM rejected_events ORDER BY 1"


def _bad_lines(good: dict[str, Any]) -> dict[str, str]:
    """One line of each kind the loader must not store as an event (or, empty, must skip)."""
    valid_time = good["created_at"]
    return {
        "not JSON": '{"id": "31", "type": "PushEvent", "actor": {"login": "x"',
        "an array": "[1, 2, 3]",
        "a number": "42",
        "no id": json.dumps({k: v for k, v in good.items() if k != "id"}),
        "an object id": json.dumps(dict(good, id={"n": 1})),
        "a numeric type": json.dumps(dict(good, id="990001", type=7)),
        "a bad created_at": json.dumps(dict(good, id="990002", created_at="not a time")),
        "no repo.name": json.dumps(dict(good, id="990003", repo={"id": 5})),
        "a numeric id": json.dumps(dict(good, id=990004, created_at=valid_time)),
        "an empty line": "",
        "a repeated key": json.dumps(dict(good, id="990005"))[:-1] + ', "id": "990006"}',
    }


@pytest.mark.parametrize("kind", list(_bad_lines(fixture_events("2021-07-21-9.json.gz")[0])))
def test_the_one_pass_and_the_staged_load_agree_on_every_kind_of_line(
    tmp_path: Path, kind: str
) -> None:
    # The typed one-pass reader must store exactly what the staged line checks store, and leave
    # every line they reject to them: a fresh hour with one odd line, loaded both ways.
    lines = fixture_lines("2021-07-21-9.json.gz")
    odd = _bad_lines(json.loads(lines[0]))[kind]
    mixed = [*lines[:50], odd, *lines[50:]]
    path = tmp_path / "odd.json.gz"
    path.write_bytes(gz(mixed))
    hour = ArchiveHour.from_partition_key("2021-07-21-09:00")
    outcomes, methods = [], []
    for expected in (len(mixed), None):
        c = warehouse.connect(tmp_path / f"w{expected}.duckdb")
        load = bulk_load.load_hour_file(c, path, hour, expected_lines=expected)
        methods.append(load.method)
        rows, rejected = c.execute(_COLUMNS).fetchall(), c.execute(_REJECTED_COLUMNS).fetchall()
        outcomes.append((load.stats, rows, rejected))
        c.close()
    # Only a line both accept keeps the one pass; anything else gave way to the staged load.
    assert methods == ["direct" if kind == "a numeric id" else "staged", "staged"]
    assert outcomes[0] == outcomes[1]
    _, rows, rejected = outcomes[0]
    accepted = kind in ("a numeric id", "a repeated key")
    assert len(rows) == len(lines) + (1 if accepted else 0)
    assert len(rejected) == (0 if accepted or kind == "an empty line" else 1)


def test_a_one_pass_load_is_one_step_of_seq_that_incremental_refreshes_take_whole(
    conn, tmp_path: Path
) -> None:
    # The one-pass load gives its rows one shared seq (a per-row sequence would serialise the
    # insert); what the incremental tables need is that every later load sits above it.
    before = fixture_events("2015-01-01-1.json.gz")[:20]
    after = fixture_events("2024-01-01-15.json.gz")[:20]
    landed = landing.write_landing_file(tmp_path / "before.ndjson.gz", before)
    raw.load_ndjson(conn, landed, poll_id="poll-1", source="api")
    name = "2021-07-21-9.json.gz"
    hour = ArchiveHour.from_partition_key("2021-07-21-09:00")
    lines = len(fixture_lines(name))
    load = bulk_load.load_hour_file(conn, _copy(name, tmp_path), hour, expected_lines=lines)
    assert load.method == "direct" and load.stats.new == lines
    watched = [filtered.refresh_filtered(conn, t) for t in catalogue.FILTERED_TABLES]
    landed = landing.write_landing_file(tmp_path / "after.ndjson.gz", after)
    raw.load_ndjson(conn, landed, poll_id="poll-2", source="api")
    watched_later = [filtered.refresh_filtered(conn, t) for t in catalogue.FILTERED_TABLES]

    seqs = dict(
        conn.execute(
            "SELECT poll_id, [min(seq), max(seq)] FROM raw_events GROUP BY poll_id"
        ).fetchall()
    )
    assert seqs[hour.poll_id][0] == seqs[hour.poll_id][1]  # one step
    assert seqs["poll-1"][1] < seqs[hour.poll_id][0] < seqs["poll-2"][0]
    # Each refresh took exactly the tracked events loaded since the one before, none twice.
    tracked = set(TRACKED_EVENT_TYPES)
    archive_tracked = sum(json.loads(line)["type"] in tracked for line in fixture_lines(name))
    assert sum(watched) == archive_tracked + sum(e["type"] in tracked for e in before)
    assert sum(watched_later) == sum(e["type"] in tracked for e in after)
    stored = sum(
        warehouse.scalar(conn, f"SELECT count(*) FROM {t}") for t in catalogue.FILTERED_TABLES
    )
    assert stored == sum(watched) + sum(watched_later)


def test_a_repeated_id_in_a_fresh_hour_falls_back_and_the_first_line_wins(conn, tmp_path) -> None:
    lines = fixture_lines("2021-07-21-9.json.gz")
    repeat = json.loads(lines[3])
    repeat["type"] = "RepeatedEvent"
    path = tmp_path / "repeat.json.gz"
    path.write_bytes(gz([*lines, json.dumps(repeat)]))
    hour = ArchiveHour.from_partition_key("2021-07-21-09:00")
    load = bulk_load.load_hour_file(conn, path, hour, expected_lines=len(lines) + 1)
    assert load.method == "staged"
    assert (load.stats.new, load.stats.duplicates) == (len(lines), 1)
    kept = warehouse.scalar(
        conn, "SELECT event_type FROM raw_events WHERE event_id = $id", {"id": repeat["id"]}
    )
    assert kept == json.loads(lines[3])["type"]


def test_an_id_stored_far_from_its_hour_is_still_found(conn, tmp_path: Path) -> None:
    # The live feed stored one of the hour's events under another created_at: the windowed
    # checks miss it, the primary key catches it, and the load checks every id instead.
    events = fixture_events("2021-07-21-9.json.gz")
    moved = dict(events[7], created_at="2021-07-25T12:00:00Z")
    landed = landing.write_landing_file(tmp_path / "live.ndjson.gz", [moved])
    raw.load_ndjson(conn, landed, poll_id="poll-1", source="api")
    hour = ArchiveHour.from_partition_key("2021-07-21-09:00")
    path = _copy("2021-07-21-9.json.gz", tmp_path)
    load = bulk_load.load_hour_file(conn, path, hour, expected_lines=len(events))
    assert load.method == "staged, all ids checked"
    assert (load.stats.new, load.stats.duplicates) == (len(events) - 1, 1)
    assert warehouse.scalar(conn, "SELECT count(*) FROM raw_events") == len(events)


_KILLED_LOAD = r"""
import os, signal, sys
from datetime import UTC, datetime
from pathlib import Path

from gh_pipeline import warehouse
from gh_pipeline.archive import bulk_load, hours
from gh_pipeline.warehouse import raw

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def after(function):
    def wrapped(*args, **kwargs):
        result = function(*args, **kwargs)
        print("rows inserted, not committed", flush=True)
        die()
    return wrapped

name = sys.argv[3]
setattr(raw, name, after(getattr(raw, name)))
conn = warehouse.connect(Path(sys.argv[1]))
bulk_load.load_hour_file(
    conn,
    Path(sys.argv[2]),
    hours.ArchiveHour(datetime(2015, 1, 1, 1, tzinfo=UTC)),
    expected_lines=1000,
)
print("completed without being killed", flush=True)
"""


@pytest.mark.parametrize("inside", ["insert_file_direct", "insert_staged"])
def test_kill_9_inside_the_load_leaves_no_rows(tmp_path: Path, inside: str) -> None:
    warehouse_file = tmp_path / "w.duckdb"
    path = _copy("2015-01-01-1.json.gz", tmp_path)
    if inside == "insert_staged":  # a warehouse that already has a live event of the hour
        live = fixture_events("2015-01-01-1.json.gz")[:1]
        c = warehouse.connect(warehouse_file)
        warehouse.ensure_schema(c)
        raw.load_ndjson(
            c, landing.write_landing_file(tmp_path / "l.ndjson.gz", live), poll_id="p", source="api"
        )
        c.close()
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_LOAD, str(warehouse_file), str(path), inside],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "rows inserted, not committed" in done.stdout
    assert "completed" not in done.stdout
    before = 1 if inside == "insert_staged" else 0
    conn = warehouse.connect(warehouse_file)
    assert warehouse.scalar(conn, "SELECT count(*) FROM raw_events") == before
    assert warehouse.scalar(conn, "SELECT count(*) FROM rejected_events") == 0
    # The warehouse is intact and the hour loads whole afterwards.
    bulk_load.load_hour_file(conn, path, ArchiveHour(datetime(2015, 1, 1, 1, tzinfo=UTC)))
    distinct = {e["id"] for e in fixture_events("2015-01-01-1.json.gz")}
    assert warehouse.scalar(conn, "SELECT count(*) FROM raw_events") == len(distinct)
    conn.close()


def _big_hour(path: Path, events: int) -> int:
    """A large hour from the real events under 3 KB, with fresh ids (fast: text substitution)."""
    templates = [line for line in fixture_lines("2021-07-21-9.json.gz") if len(line) < 3000]
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as handle:
        for i in range(events):
            event = templates[i % len(templates)]
            start = event.index('"id":"') + 6
            end = event.index('"', start)
            handle.write(f"{event[:start]}9{i:011d}{event[end:]}\n")
    return events


def test_kill_9_at_a_random_moment_leaves_all_or_nothing(tmp_path: Path) -> None:
    warehouse_file = tmp_path / "w.duckdb"
    path = tmp_path / "big.json.gz"
    total = _big_hour(path, 60_000)
    script = (
        "import sys; from datetime import UTC, datetime; from pathlib import Path\n"
        "from gh_pipeline import warehouse\n"
        "from gh_pipeline.archive import bulk_load, hours\n"
        "conn = warehouse.connect(Path(sys.argv[1]))\n"
        "print('loading', flush=True)\n"
        "bulk_load.load_hour_file(conn, Path(sys.argv[2]),"
        " hours.ArchiveHour(datetime(2021, 7, 21, 9, tzinfo=UTC)))\n"
        "print('done', flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(warehouse_file), str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "loading"
    # Somewhere inside the load: it takes seconds for 60k events.
    threading.Event().wait(0.8)
    child.send_signal(signal.SIGKILL)
    out = child.communicate(timeout=60)[0]
    conn = warehouse.connect(warehouse_file)
    stored = warehouse.scalar(conn, "SELECT count(*) FROM raw_events")
    conn.close()
    if "done" in out:
        assert stored == total  # it finished before the signal: then all of it
    else:
        assert child.returncode == -signal.SIGKILL
        assert stored == 0
