"""GH_PIPELINE_ARCHIVE_SCOPE: an archive hour stores every event, or only the watched
repositories' events, on both load paths; the hour's scope and each watched repository's
coverage of the hour are recorded.

Expected sets come from the fixture hour read here with the json module, independently of the
loader; repository names are matched case-insensitively by the test with str.lower().
"""

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gh_pipeline import settings, warehouse
from gh_pipeline.archive import bulk_load
from gh_pipeline.archive.hours import ArchiveHour
from gh_pipeline.live import landing
from gh_pipeline.warehouse import raw
from gh_pipeline_tests.support.archive_server import fixture_lines, gz

HOUR_9 = ArchiveHour(datetime(2021, 7, 21, 9, tzinfo=UTC))
# As a user would name them: spelled differently from the file, and one with no event that hour.
WATCHED = "helikopter-bojowy/EXP-na-helikopterze, xz241/wp-uploads Hrhwve3553/DJY nobody/absent"
# Spellings the file uses (two of xz241/wp-uploads' events are re-spelled below).
IN_FILE = ("Helikopter-Bojowy/Exp-na-helikopterze", "xz241/wp-uploads", "hrhwve3553/djy")


def _hour_events() -> list[dict[str, Any]]:
    """The recorded hour, with two of xz241/wp-uploads' events under a mixed-case spelling."""
    events = [json.loads(line) for line in fixture_lines("2021-07-21-9.json.gz")]
    assert {e["repo"]["name"] for e in events} >= set(IN_FILE)
    respelled = 0
    for event in events:
        if event["repo"]["name"] == "xz241/wp-uploads" and respelled < 2:
            event["repo"] = dict(event["repo"], name="XZ241/WP-Uploads")
            respelled += 1
    return events


def _watched_lower() -> set[str]:
    return {name.strip().lower() for name in WATCHED.replace(",", " ").split()}


def _expected(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The watched repositories' events of the hour, by id."""
    return {str(e["id"]): e for e in events if e["repo"]["name"].lower() in _watched_lower()}


def _write(path: Path, lines: list[str]) -> Path:
    path.write_bytes(gz(lines))
    return path


def _stored(conn) -> dict[str, tuple[str, str, Any]]:
    rows = conn.execute(
        "SELECT event_id, repo_name, event_type, payload FROM raw_events"
    ).fetchall()
    return {r[0]: (r[1], r[2], json.loads(r[3]) if r[3] is not None else None) for r in rows}


WATCHED_SCOPE = settings.archive_scope("watched", WATCHED)


# --- the setting ----------------------------------------------------------------------------------


def test_the_scope_setting_defaults_to_all_and_refuses_anything_else(monkeypatch) -> None:
    monkeypatch.delenv(settings.ENV_ARCHIVE_SCOPE, raising=False)
    monkeypatch.delenv(settings.ENV_REPOS, raising=False)
    assert settings.archive_scope() == settings.ArchiveScope("all", ())
    assert settings.archive_scope().repos is None
    monkeypatch.setenv(settings.ENV_ARCHIVE_SCOPE, "Watched")
    monkeypatch.setenv(settings.ENV_REPOS, "DuckDB/duckdb pola-rs/polars")
    scope = settings.archive_scope()
    assert (scope.name, scope.watched) == ("watched", ("DuckDB/duckdb", "pola-rs/polars"))
    assert scope.repos == ["duckdb/duckdb", "pola-rs/polars"]
    # `all` still knows the watched repositories: their coverage is recorded under either scope.
    assert settings.archive_scope("all", "a/b").watched == ("a/b",)
    with pytest.raises(ValueError) as bad:
        settings.archive_scope("some")
    message = str(bad.value)
    assert "GH_PIPELINE_ARCHIVE_SCOPE" in message and "'some'" in message
    assert "'all'" in message and "'watched'" in message


@pytest.mark.parametrize("repos", ["", "   ", "not-a-repo, also/bad/one"])
def test_watched_with_no_watched_repository_is_refused(repos: str) -> None:
    with pytest.raises(ValueError) as refused:
        settings.archive_scope("watched", repos)
    message = str(refused.value)
    assert "GH_PIPELINE_ARCHIVE_SCOPE=watched" in message and "GH_PIPELINE_REPOS" in message
    if repos.strip():
        assert "'not-a-repo' is not owner/name" in message  # why the named ones did not count


# --- the load -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path_kind", ["one pass", "staged"])
def test_the_watched_scope_stores_exactly_the_watched_repositories_events(
    conn, tmp_path: Path, path_kind: str
) -> None:
    events = _hour_events()
    lines = [json.dumps(e) for e in events]
    expected = _expected(events)
    assert len(expected) == 4 + 6 + 3  # the fixture hour's events of the three repositories
    rejected_lines: list[str] = []
    if path_kind == "staged":
        # Corrupt lines send the hour to the staged path and are quarantined whatever their
        # repository: one that is not JSON, one of an unwatched repository without an id, and
        # one of a watched repository with a bad created_at.
        unwatched = next(e for e in events if e["repo"]["name"].lower() not in _watched_lower())
        rejected_lines = [
            '{"id": "31", "type": "PushEvent", "repo": {"name": "xz241/wp-uploads"',
            json.dumps({k: v for k, v in unwatched.items() if k != "id"}),
            json.dumps(dict(expected[next(iter(expected))], id="990001", created_at="nope")),
        ]
        lines = [*lines[:10], rejected_lines[0], *lines[10:60], *rejected_lines[1:], *lines[60:]]
    path = _write(tmp_path / "hour.json.gz", lines)

    load = bulk_load.load_hour_file(
        conn, path, HOUR_9, expected_lines=len(lines), scope=WATCHED_SCOPE
    )

    assert load.method == ("direct" if path_kind == "one pass" else "staged")
    stored = _stored(conn)
    assert set(stored) == set(expected)
    for event_id, (repo_name, event_type, payload) in stored.items():
        event = expected[event_id]
        assert (repo_name, event_type, payload) == (
            event["repo"]["name"],
            event["type"],
            event["payload"],
        )
    assert load.stats.received == len(lines)
    assert load.stats.rejected == len(rejected_lines)
    assert load.stats.new == len(expected)
    assert load.stats.skipped_by_scope == len(events) - len(expected)
    assert load.stats.duplicates == 0
    rejected = conn.execute("SELECT raw_text, reason FROM rejected_events ORDER BY line_number")
    assert [r[0] for r in rejected.fetchall()] == rejected_lines
    # The hour records its scope and what it skipped.
    row = conn.execute(
        "SELECT scope, scope_repos, skipped_by_scope, events_in_file, new_events"
        " FROM archive_hours WHERE hour_start = $start",
        {"start": HOUR_9.start},
    ).fetchall()
    assert row == [
        (
            "watched",
            sorted(_watched_lower()),
            len(events) - len(expected),
            len(lines),
            len(expected),
        )
    ]
    assert (load.hour_scope, load.hour_scope_repos) == ("watched", tuple(sorted(_watched_lower())))


def test_both_load_paths_store_the_same_in_the_watched_scope(tmp_path: Path) -> None:
    lines = [json.dumps(e) for e in _hour_events()]
    path = _write(tmp_path / "hour.json.gz", lines)
    outcomes = []
    for expected_lines in (len(lines), None):
        c = warehouse.connect(tmp_path / f"w{expected_lines}.duckdb")
        load = bulk_load.load_hour_file(
            c, path, HOUR_9, expected_lines=expected_lines, scope=WATCHED_SCOPE
        )
        rows = c.execute(
            "SELECT event_id, event_type, created_at, actor_login, repo_id, repo_name, payload,"
            " event, poll_id, source FROM raw_events ORDER BY event_id"
        ).fetchall()
        outcomes.append((load.method, load.stats, rows, load.repo_events))
        c.close()
    assert [o[0] for o in outcomes] == ["direct", "staged"]
    assert outcomes[0][1:] == outcomes[1][1:]


def test_the_all_scope_is_unaffected_by_watched_repositories(conn, tmp_path: Path) -> None:
    events = _hour_events()
    lines = [json.dumps(e) for e in events]
    path = _write(tmp_path / "hour.json.gz", lines)
    scope = settings.archive_scope("all", WATCHED)
    load = bulk_load.load_hour_file(conn, path, HOUR_9, expected_lines=len(lines), scope=scope)
    assert load.method == "direct"
    assert set(_stored(conn)) == {str(e["id"]) for e in events}
    assert (load.stats.new, load.stats.skipped_by_scope) == (len(events), 0)
    assert warehouse.scalar(conn, "SELECT scope FROM archive_hours") == "all"
    # Coverage is recorded for the watched repositories under `all` too.
    counts = dict(
        conn.execute("SELECT repo_name, events FROM watched_repo_archive_hours").fetchall()
    )
    per_repo = Counter(e["repo"]["name"].lower() for e in events)
    assert counts == {name: per_repo[name.lower()] for name in WATCHED.replace(",", " ").split()}


def test_watched_then_all_adds_exactly_the_rest_and_nothing_twice(conn, tmp_path: Path) -> None:
    events = _hour_events()
    lines = [json.dumps(e) for e in events]
    path = _write(tmp_path / "hour.json.gz", lines)
    expected = _expected(events)
    # Another repository's event of the hour that the live feed stored first.
    live_event = next(e for e in events if str(e["id"]) not in expected)
    landed = landing.write_landing_file(tmp_path / "live.ndjson.gz", [live_event])
    raw.load_ndjson(conn, landed, poll_id="poll-1", source="api")

    first = bulk_load.load_hour_file(
        conn, path, HOUR_9, expected_lines=len(lines), scope=WATCHED_SCOPE
    )
    assert first.stats.new == len(expected)
    held = bulk_load.recorded_scope(conn, HOUR_9)
    assert bulk_load.scope_holds(held, WATCHED_SCOPE)
    everything = settings.archive_scope("all", WATCHED)
    assert not bulk_load.scope_holds(held, everything)

    second = bulk_load.load_hour_file(
        conn, path, HOUR_9, expected_lines=len(lines), scope=everything
    )
    ids = {str(e["id"]) for e in events}
    assert second.stats.new == len(ids) - len(expected) - 1
    assert second.stats.duplicates == len(expected) + 1
    rows = conn.execute("SELECT event_id, source FROM raw_events").fetchall()
    assert len(rows) == len(ids) and {r[0] for r in rows} == ids
    assert dict((r[0], r[1]) for r in rows)[str(live_event["id"])] == "api"
    assert bulk_load.recorded_scope(conn, HOUR_9) == ("all", None)

    # Watched again after all: the hour already holds everything and stays `all`.
    third = bulk_load.load_hour_file(
        conn, path, HOUR_9, expected_lines=len(lines), scope=WATCHED_SCOPE
    )
    assert (third.stats.new, third.stats.duplicates) == (0, len(expected))
    assert bulk_load.recorded_scope(conn, HOUR_9) == ("all", None)
    assert warehouse.scalar(conn, "SELECT count(*) FROM raw_events") == len(ids)


def test_a_changed_watch_list_loads_the_newly_watched_repositories(conn, tmp_path: Path) -> None:
    events = _hour_events()
    lines = [json.dumps(e) for e in events]
    path = _write(tmp_path / "hour.json.gz", lines)
    one = settings.archive_scope("watched", "hrhwve3553/djy")
    two = settings.archive_scope("watched", "hrhwve3553/djy XZ241/wp-uploads")
    bulk_load.load_hour_file(conn, path, HOUR_9, expected_lines=len(lines), scope=one)
    assert not bulk_load.scope_holds(bulk_load.recorded_scope(conn, HOUR_9), two)
    load = bulk_load.load_hour_file(conn, path, HOUR_9, expected_lines=len(lines), scope=two)
    wanted = {"hrhwve3553/djy", "xz241/wp-uploads"}
    ids = {str(e["id"]) for e in events if e["repo"]["name"].lower() in wanted}
    only_new = {str(e["id"]) for e in events if e["repo"]["name"].lower() == "xz241/wp-uploads"}
    assert load.stats.new == len(only_new) == 6
    assert set(_stored(conn)) == ids
    assert bulk_load.recorded_scope(conn, HOUR_9) == ("watched", tuple(sorted(wanted)))
    assert bulk_load.scope_holds(bulk_load.recorded_scope(conn, HOUR_9), one)


def test_each_watched_repository_gets_its_coverage_row_for_the_hour(conn, tmp_path: Path) -> None:
    events = _hour_events()
    lines = [json.dumps(e) for e in events]
    path = _write(tmp_path / "hour.json.gz", lines)
    bulk_load.load_hour_file(conn, path, HOUR_9, expected_lines=len(lines), scope=WATCHED_SCOPE)
    rows = conn.execute(
        "SELECT repo_name, hour_start, hour_end, poll_id, source, events, era, complete_crawl,"
        " caveat FROM watched_repo_archive_hours ORDER BY repo_name"
    ).fetchall()
    per_repo = Counter(e["repo"]["name"].lower() for e in events)
    names = WATCHED.replace(",", " ").split()
    assert [(r[0], r[5]) for r in rows] == sorted((n, per_repo[n.lower()]) for n in names)
    assert dict((r[0], r[5]) for r in rows)["nobody/absent"] == 0
    for row in rows:
        assert row[1:5] == (HOUR_9.start, HOUR_9.end, "gharchive:2021-07-21-9", "gharchive")
        assert (row[6], row[7]) == ("complete", True)  # 2021: every page crawled
        assert "every page" in row[8]


def test_since_the_one_page_crawl_an_hour_is_not_complete_for_a_repository(
    conn, tmp_path: Path
) -> None:
    # The same events filed as a 2025-06 hour (the one-page-crawl era): the coverage row says the
    # hour is a sample, not every event of the repository.
    hour = ArchiveHour(datetime(2025, 6, 2, 9, tzinfo=UTC))
    events = [
        dict(e, created_at=e["created_at"].replace("2021-07-21", "2025-06-02"))
        for e in _hour_events()
    ]
    lines = [json.dumps(e) for e in events]
    path = _write(tmp_path / "hour.json.gz", lines)
    load = bulk_load.load_hour_file(
        conn, path, hour, expected_lines=len(lines), scope=WATCHED_SCOPE
    )
    assert load.stats.new == len(_expected(events))
    rows = conn.execute(
        "SELECT DISTINCT era, complete_crawl, caveat FROM watched_repo_archive_hours"
    ).fetchall()
    assert len(rows) == 1
    era, complete_crawl, caveat = rows[0]
    assert (era, complete_crawl) == ("one-page-crawl", False)
    assert "most events are missing" in caveat


def _odd_lines(unwatched: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Lines of an unwatched repository's event that the line checks reject, with the reason."""
    return {
        "no id": (json.dumps({k: v for k, v in unwatched.items() if k != "id"}), "id"),
        "a numeric type": (json.dumps(dict(unwatched, id="990002", type=7)), "type"),
        "a bad created_at": (
            json.dumps(dict(unwatched, id="990003", created_at="not a time")),
            "created_at",
        ),
        "an object id": (json.dumps(dict(unwatched, id={"n": 1})), "id"),
    }


@pytest.mark.parametrize("kind", ["no id", "a numeric type", "a bad created_at", "an object id"])
def test_a_corrupt_line_of_an_unwatched_repository_is_still_quarantined(
    conn, tmp_path: Path, kind: str
) -> None:
    # The one pass must not drop such a line as "another repository's" without a trace: it gives
    # way to the staged path, which quarantines it with its reason.
    events = _hour_events()
    unwatched = next(e for e in events if e["repo"]["name"].lower() not in _watched_lower())
    odd, reason = _odd_lines(unwatched)[kind]
    lines = [json.dumps(e) for e in events]
    lines.insert(30, odd)
    path = _write(tmp_path / "hour.json.gz", lines)
    load = bulk_load.load_hour_file(
        conn, path, HOUR_9, expected_lines=len(lines), scope=WATCHED_SCOPE
    )
    assert load.method == "staged"
    rejected = conn.execute("SELECT line_number, reason, raw_text FROM rejected_events").fetchall()
    assert len(rejected) == 1
    assert rejected[0][0] == 31 and reason in rejected[0][1] and rejected[0][2] == odd
    assert set(_stored(conn)) == set(_expected(events))
