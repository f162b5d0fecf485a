"""poll_once end to end against the fake GitHub and a real DuckDB file: paging, ETag, faults,
refusals, rejected events, possible gaps, and crash safety under SIGKILL."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import pytest

from gh_pipeline import settings, warehouse
from gh_pipeline.defs.live.assets import raw_events
from gh_pipeline.defs.live.checks import POSSIBLE_GAP_CHECK, raw_events_possible_gap
from gh_pipeline.defs.live.resources import GitHubApiResource
from gh_pipeline.defs.warehouse.resources import PipelineStorage, Warehouse
from gh_pipeline.live import ingest, landing, poll_state
from gh_pipeline.live.github_client import GitHubEventsClient
from gh_pipeline_tests.support.fake_github import FakeGitHub, Fault, numbered_feed

REPO_ROOT = Path(__file__).resolve().parents[2]


def _no_sleep(seconds: float) -> None:
    pass


@pytest.fixture
def conn(data_dir: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = warehouse.connect(settings.warehouse_path(data_dir))
    warehouse.ensure_schema(connection)
    yield connection
    connection.close()


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    # 400 events: more than the 300 the feed serves, as on github.com.
    with FakeGitHub(numbered_feed(400, serial=1), poll_interval=60) as server:
        yield server


def _poll(
    fake: FakeGitHub,
    conn: duckdb.DuckDBPyConnection,
    data_dir: Path,
    poll_id: str,
    **kwargs: Any,
) -> ingest.PollOutcome:
    kwargs.setdefault("sleep", _no_sleep)
    with GitHubEventsClient(api_url=fake.url, retry_base_s=0.001, sleep=_no_sleep) as client:
        return ingest.poll_once(
            client=client, conn=conn, data_dir=data_dir, poll_id=poll_id, **kwargs
        )


def _rows(conn: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> list[tuple]:
    return conn.execute(sql, params or {}).fetchall()


def _stored_ids(conn: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in _rows(conn, "SELECT event_id FROM raw_events ORDER BY event_id")]


def _log(conn: duckdb.DuckDBPyConnection, poll_id: str) -> list[tuple]:
    return _rows(
        conn,
        "SELECT page, attempt, status, events, new_events, duplicates, etag_matched, error"
        " FROM poll_log WHERE poll_id = $p ORDER BY requested_at, page, attempt",
        {"p": poll_id},
    )


def _page1_etag(fake: FakeGitHub) -> str:
    return httpx.get(f"{fake.url}/events?per_page=100").headers["etag"]


def _landing_files(data_dir: Path) -> list[Path]:
    return landing.list_landing_files(settings.landing_dir(data_dir))


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- the normal case ------------------------------------------------------------------------


def test_first_poll_then_304(fake: FakeGitHub, conn, data_dir: Path) -> None:
    first = _poll(fake, conn, data_dir, "p1")
    assert (first.status, first.pages, first.requests, first.new, first.duplicates) == (
        200,
        3,
        3,
        300,
        0,
    )
    assert _stored_ids(conn) == sorted(e["id"] for e in fake.feed[:300])
    assert _log(conn, "p1") == [
        (1, 1, 200, 100, 100, 0, False, None),
        (2, 1, 200, 100, 100, 0, False, None),
        (3, 1, 200, 100, 100, 0, False, None),
    ]
    assert first.landing_file is not None
    with gzip.open(first.landing_file, "rt", encoding="utf-8") as fh:
        assert [json.loads(line)["id"] for line in fh] == [e["id"] for e in fake.feed[:300]]
    state = poll_state.load_state(settings.state_dir(data_dir))
    assert state.etag == _page1_etag(fake)
    assert first.possible_gap is None  # nothing stored before: nothing to have missed

    second = _poll(fake, conn, data_dir, "p2")
    assert (second.status, second.pages, second.new, second.etag_matched) == (304, 1, 0, True)
    assert second.landing_file is None and second.possible_gap is None
    assert _log(conn, "p2") == [(1, 1, 304, 0, 0, 0, True, None)]
    assert fake.requests[-1].headers["if-none-match"] == state.etag
    assert len(_stored_ids(conn)) == 300


def test_new_events_page_1_reaches_stored_ones_so_one_request(
    fake: FakeGitHub, conn, data_dir: Path
) -> None:
    _poll(fake, conn, data_dir, "p1")
    fresh = numbered_feed(40, serial=2, newest=datetime.now(UTC) + timedelta(minutes=5))
    fake.push(fresh)
    before = len(fake.requests)
    outcome = _poll(fake, conn, data_dir, "p2")
    assert len(fake.requests) - before == 1
    assert (outcome.pages, outcome.new, outcome.duplicates, outcome.reached_known) == (
        1,
        40,
        60,
        True,
    )
    assert _log(conn, "p2") == [(1, 1, 200, 100, 40, 60, False, None)]
    assert outcome.possible_gap is None
    assert len(_stored_ids(conn)) == 340


# -- possible gaps ---------------------------------------------------------------------------


def test_a_poll_that_never_reaches_stored_events_records_a_possible_gap(
    fake: FakeGitHub, conn, data_dir: Path
) -> None:
    _poll(fake, conn, data_dir, "p1")
    newest_stored = max(_ts(e["created_at"]) for e in fake.feed[:300])
    # 350 events arrive between two polls: the feed serves 300 of them, 50 are out of reach.
    burst = numbered_feed(350, serial=2, newest=newest_stored + timedelta(seconds=400))
    fake.push(burst)
    outcome = _poll(fake, conn, data_dir, "p2")
    assert (outcome.pages, outcome.new, outcome.reached_known) == (3, 300, False)
    gap = outcome.possible_gap
    assert gap is not None
    assert gap.previous_poll_id == "p1"
    assert gap.gap_start == newest_stored
    assert gap.gap_end == min(_ts(e["created_at"]) for e in burst[:300])
    # The events really missed lie inside the recorded span.
    missed = burst[300:]
    assert set(_stored_ids(conn)).isdisjoint(e["id"] for e in missed)
    assert all(gap.gap_start <= _ts(e["created_at"]) <= gap.gap_end for e in missed)
    rows = _rows(conn, "SELECT poll_id, previous_poll_id, gap_start, gap_end FROM poll_gaps")
    assert rows == [("p2", "p1", gap.gap_start, gap.gap_end)]
    assert "may be missing" in ingest.describe_gap(gap)


def test_no_gap_when_the_poll_saw_the_whole_feed(conn, data_dir: Path) -> None:
    with FakeGitHub(numbered_feed(20, serial=1)) as fake:
        _poll(fake, conn, data_dir, "p1")
        # A short feed replaced by events none of which we have: one page, no next link, under
        # the cap: there is nothing beyond it we could have missed.
        fake.feed = numbered_feed(30, serial=2, newest=datetime.now(UTC) + timedelta(minutes=1))
        outcome = _poll(fake, conn, data_dir, "p2")
    assert (outcome.new, outcome.reached_known, outcome.possible_gap) == (30, False, None)
    assert _rows(conn, "SELECT count(*) FROM poll_gaps") == [(0,)]


# -- faults ------------------------------------------------------------------------------------


def test_5xx_after_retries_fails_the_poll_and_stores_nothing(
    fake: FakeGitHub, conn, data_dir: Path
) -> None:
    _poll(fake, conn, data_dir, "p1")
    etag_p1 = poll_state.load_state(settings.state_dir(data_dir)).etag
    fake.push(numbered_feed(150, serial=2, newest=datetime.now(UTC) + timedelta(minutes=5)))
    fake.schedule(*[Fault(status=500, page=2) for _ in range(4)])
    with pytest.raises(ingest.PollFailed) as err:
        _poll(fake, conn, data_dir, "p2")
    message = str(err.value)
    assert message.startswith(
        "poll failed: GET /events page 2 failed after 4 attempts; last: HTTP 500. Nothing of this "
        "poll was stored and the ETag was kept; next poll allowed at "
    )
    assert len(_stored_ids(conn)) == 300
    assert len(_landing_files(data_dir)) == 1
    state = poll_state.load_state(settings.state_dir(data_dir))
    assert state.etag == etag_p1
    assert state.consecutive_failures == 1 and state.last_poll_id == "p2"
    assert _log(conn, "p2") == [
        (1, 1, 200, 100, 0, 0, False, None),
        (2, 1, 500, 0, 0, 0, False, "HTTP 500"),
        (2, 2, 500, 0, 0, 0, False, "HTTP 500"),
        (2, 3, 500, 0, 0, 0, False, "HTTP 500"),
        (2, 4, 500, 0, 0, 0, False, "HTTP 500"),
    ]
    # The next poll tries again from the same ETag and gets everything, once.
    outcome = _poll(fake, conn, data_dir, "p3")
    assert (outcome.new, outcome.reached_known, outcome.possible_gap) == (150, True, None)
    ids = _stored_ids(conn)
    assert len(ids) == len(set(ids)) == 450
    assert poll_state.load_state(settings.state_dir(data_dir)).consecutive_failures == 0


@pytest.mark.parametrize(
    ("fault", "page", "message"),
    [
        (b"<html><body>Unicorn! Maintenance</body></html>", 1, "response body is not JSON"),
        (b'[{"id": "1", "type": "Pu', 1, "response body is not JSON"),
        (b'{"message": "odd"}', 2, "response body is a JSON dict, expected a list"),
    ],
)
def test_a_body_that_is_not_a_json_list_fails_clearly_and_writes_nothing(
    fake: FakeGitHub, conn, data_dir: Path, fault: bytes, page: int, message: str
) -> None:
    fake.schedule(Fault(status=200, body=fault, page=page))
    with pytest.raises(ingest.PollFailed, match=message):
        _poll(fake, conn, data_dir, "p1")
    assert _rows(conn, "SELECT count(*) FROM raw_events") == [(0,)]
    assert _rows(conn, "SELECT count(*) FROM rejected_events") == [(0,)]
    assert _landing_files(data_dir) == []
    assert poll_state.load_state(settings.state_dir(data_dir)).etag is None
    errors = [row[-1] for row in _log(conn, "p1")]
    assert errors[-1] is not None and message in errors[-1]
    assert len(errors) == page


def test_malformed_single_events_are_rejected_and_the_rest_lands(conn, data_dir: Path) -> None:
    good = numbered_feed(6, serial=1)
    bad: list[Any] = [
        {k: v for k, v in good[0].items() if k != "id"} | {"created_at": good[0]["created_at"]},
        good[1] | {"id": "b1", "type": 17},
        {k: v for k, v in good[2].items() if k != "created_at"} | {"id": "b2"},
        good[3] | {"id": "b3", "repo": {"id": 1}},
        good[4] | {"id": "b4", "created_at": "yesterday"},
        "just a string",
        [1, 2, 3],
    ]
    with FakeGitHub(bad + good) as fake:
        outcome = _poll(fake, conn, data_dir, "p1")
    assert (outcome.received, outcome.rejected, outcome.new) == (13, 7, 6)
    assert _stored_ids(conn) == sorted(e["id"] for e in good)
    rejected = _rows(
        conn,
        "SELECT line_number, reason, raw_text FROM rejected_events WHERE poll_id = 'p1'"
        " ORDER BY line_number",
    )
    assert [(n, reason) for n, reason, _ in rejected] == [
        (1, "missing or malformed id"),
        (2, "missing or malformed type"),
        (3, "missing or unparseable created_at"),
        (4, "missing or malformed repo.name"),
        (5, "missing or unparseable created_at"),
        (6, "event is a JSON varchar, expected an object"),
        (7, "event is a JSON array, expected an object"),
    ]
    assert [json.loads(raw) for _, _, raw in rejected] == bad


# -- refusals ------------------------------------------------------------------------------------


def test_primary_rate_limit_refusal_then_no_request_until_reset(
    fake: FakeGitHub, conn, data_dir: Path
) -> None:
    _poll(fake, conn, data_dir, "p1")
    fake.schedule(Fault(status=403, headers={"X-RateLimit-Remaining": "0"}))
    with pytest.raises(ingest.PollRefused) as err:
        _poll(fake, conn, data_dir, "p2")
    reset = datetime.fromtimestamp(fake.reset_at, UTC) + timedelta(seconds=1)
    assert "GitHub refused with HTTP 403" in str(err.value)
    assert f"no request until the reset at {reset.isoformat()}" in str(err.value)
    state = poll_state.load_state(settings.state_dir(data_dir))
    assert state.next_poll_at == reset and state.etag == _page1_etag(fake)
    assert _log(conn, "p2") == [(1, 1, 403, 0, 0, 0, False, "HTTP 403")]
    requests = len(fake.requests)
    with pytest.raises(ingest.PollNotAllowed, match="x-ratelimit-remaining 0"):
        _poll(fake, conn, data_dir, "p3")
    assert len(fake.requests) == requests


def test_a_spent_budget_is_not_touched_until_reset(conn, data_dir: Path) -> None:
    # Unauthenticated-style budget of 6: the first poll takes 3 pages and leaves 3, the reserve.
    with FakeGitHub(numbered_feed(400, serial=1), rate_limit=6) as fake:
        first = _poll(fake, conn, data_dir, "p1")
        assert first.rate_limit_remaining == 3
        assert first.next_poll_at == datetime.fromtimestamp(fake.reset_at, UTC) + timedelta(
            seconds=1
        )
        with pytest.raises(ingest.PollNotAllowed, match="rate budget spent"):
            _poll(fake, conn, data_dir, "p2")
        assert len(fake.requests) == 3


def test_retry_after_is_obeyed(fake: FakeGitHub, conn, data_dir: Path) -> None:
    fake.schedule(Fault(status=429, headers={"Retry-After": "600"}))
    with pytest.raises(ingest.PollRefused, match="retry-after 600s"):
        _poll(fake, conn, data_dir, "p1")
    state = poll_state.load_state(settings.state_dir(data_dir))
    asked_at = datetime.fromtimestamp(fake.requests[0].at, UTC)
    assert state.next_poll_at is not None
    assert abs((state.next_poll_at - asked_at).total_seconds() - 600) < 2
    with pytest.raises(ingest.PollNotAllowed, match="retry-after 600s"):
        _poll(fake, conn, data_dir, "p2")
    assert len(fake.requests) == 1


def test_secondary_limit_backs_off_and_the_backoff_survives_a_restart(
    fake: FakeGitHub, conn, data_dir: Path
) -> None:
    state_dir = settings.state_dir(data_dir)
    waits = []
    for n in range(3):
        fake.schedule(Fault(status=403, body=b'{"message": "secondary rate limit"}'))
        allowed = poll_state.load_state(state_dir).next_poll_at
        clock = (lambda at=allowed: at) if allowed else (lambda: datetime.now(UTC))
        with pytest.raises(ingest.PollRefused, match="secondary rate limit"):
            _poll(fake, conn, data_dir, f"s{n}", now=clock)
        # The state on disk is all a new process would know.
        state = poll_state.load_state(state_dir)
        asked_at = datetime.fromtimestamp(fake.requests[-1].at, UTC)
        waits.append(round((state.next_poll_at - asked_at).total_seconds()))
        assert state.secondary_limit_hits == n + 1
    assert waits == [60, 120, 240]
    allowed = poll_state.load_state(state_dir).next_poll_at
    _poll(fake, conn, data_dir, "ok", now=lambda: allowed)
    assert poll_state.load_state(state_dir).secondary_limit_hits == 0


def test_a_run_launched_early_waits_out_the_rest(fake: FakeGitHub, conn, data_dir: Path) -> None:
    now = datetime(2025, 11, 3, 12, 0, tzinfo=UTC)
    poll_state.save_state(
        settings.state_dir(data_dir), poll_state.PollState(next_poll_at=now + timedelta(seconds=30))
    )
    slept: list[float] = []
    _poll(fake, conn, data_dir, "p1", now=lambda: now, sleep=slept.append)
    assert slept == [30.0]
    poll_state.save_state(
        settings.state_dir(data_dir),
        poll_state.PollState(next_poll_at=now + timedelta(seconds=120), reason="X-Poll-Interval"),
    )
    with pytest.raises(ingest.PollNotAllowed, match="not waiting 120s inside a run"):
        _poll(fake, conn, data_dir, "p2", now=lambda: now, sleep=slept.append)
    assert slept == [30.0]


# -- crash safety: kill -9 mid-poll, then poll again ------------------------------------------------

_CRASH_CHILD = """
import sys
from pathlib import Path

from gh_pipeline import settings, warehouse
from gh_pipeline.live import ingest
from gh_pipeline.live.github_client import GitHubEventsClient
from gh_pipeline_tests.support.crash_hooks import kill_poll_at

api_url, data_dir, poll_id, kill_at = sys.argv[1:]
kill_poll_at(kill_at)

conn = warehouse.connect(settings.warehouse_path(data_dir))
with GitHubEventsClient(api_url=api_url) as client:
    ingest.poll_once(
        client=client, conn=conn, data_dir=Path(data_dir), poll_id=poll_id, sleep=lambda s: None
    )
print("completed without being killed", flush=True)
"""


def _wait_for(condition, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize(
    "kill_at", ["mid_request", "after_landing", "inside_transaction", "before_state_save"]
)
def test_kill_9_mid_poll_loses_nothing_and_stores_nothing_twice(
    fake: FakeGitHub, data_dir: Path, tmp_path: Path, kill_at: str
) -> None:
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    _poll(fake, conn, data_dir, "p1")
    conn.close()  # DuckDB allows one writing process: the child takes the file now
    state_before = poll_state.load_state(settings.state_dir(data_dir))
    fake.push(numbered_feed(150, serial=2, newest=datetime.now(UTC) + timedelta(minutes=5)))
    if kill_at == "mid_request":
        # The server holds page 2's answer; the poll is killed while waiting for it.
        fake.schedule(Fault(status=200, page=2, delay_s=30))
    requests_before = len(fake.requests)
    script = tmp_path / "crash_poll.py"
    script.write_text(_CRASH_CHILD, encoding="utf-8")
    env = {**os.environ, settings.ENV_DATA_DIR: str(data_dir), "PYTHONPATH": str(REPO_ROOT)}
    env.pop(settings.ENV_TOKEN, None)
    child = subprocess.Popen(
        [sys.executable, str(script), fake.url, str(data_dir), "p2-crashed", kill_at],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        if kill_at == "mid_request":
            _wait_for(
                lambda: any(r.query.get("page") == ["2"] for r in fake.requests[requests_before:]),
                timeout_s=120,
                what="the child's request for page 2",
            )
            child.send_signal(signal.SIGKILL)
        output = child.communicate(timeout=120)[0].decode("utf-8", "replace")
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, output
    # The child got as far as intended: page 1 (and page 2 when the kill came after the fetch).
    child_pages = [r.query.get("page", ["1"])[0] for r in fake.requests[requests_before:]]
    assert child_pages == ["1", "2"]

    # What the crash left behind: the state never got ahead of the data.
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    stored = len(_stored_ids(conn))
    state = poll_state.load_state(settings.state_dir(data_dir))
    assert state == state_before
    assert stored == (450 if kill_at == "before_state_save" else 300)
    crashed_landing = [p for p in _landing_files(data_dir) if "p2-crashed" in p.name]
    assert len(crashed_landing) == (0 if kill_at == "mid_request" else 1)

    # The restart: poll again. Everything the feed still serves is stored, exactly once.
    again = _poll(fake, conn, data_dir, "p3")
    ids = _stored_ids(conn)
    assert len(ids) == len(set(ids)) == 450
    assert set(ids) == {e["id"] for e in fake.feed[:300]} | {e["id"] for e in fake.feed[150:450]}
    assert again.new == (0 if kill_at == "before_state_save" else 150)
    assert poll_state.load_state(settings.state_dir(data_dir)).etag == _page1_etag(fake)
    assert _poll(fake, conn, data_dir, "p4").status == 304
    conn.close()


# -- through Dagster: run metadata and the possible-gap check -------------------------------------


def test_possible_gap_shows_in_run_metadata_and_warns_in_the_asset_check(data_dir: Path) -> None:
    with FakeGitHub(numbered_feed(400, serial=1), poll_interval=1) as fake:
        resources = {
            "github": GitHubApiResource(api_url=fake.url),
            "storage": PipelineStorage(data_dir=str(data_dir)),
            "warehouse": Warehouse(database=str(settings.warehouse_path(data_dir))),
        }
        with dg.DagsterInstance.ephemeral() as instance:

            def materialize() -> tuple[dict[str, Any], dg.AssetCheckEvaluation]:
                result = dg.materialize(
                    [raw_events, raw_events_possible_gap], resources=resources, instance=instance
                )
                (materialization,) = result.get_asset_materialization_events()
                (check,) = result.get_asset_check_evaluations()
                metadata = materialization.materialization.metadata
                return {k: v.value for k, v in metadata.items()}, check

            first, check = materialize()
            assert first["possible_gap"] is False and first["possible_gap_span"] == "none"
            assert check.check_name == POSSIBLE_GAP_CHECK and check.passed

            newest = max(_ts(e["created_at"]) for e in fake.feed[:300])
            fake.push(numbered_feed(350, serial=2, newest=newest + timedelta(seconds=400)))
            second, check = materialize()
    assert second["possible_gap"] is True and second["new_events"] == 300
    assert second["possible_gap_span"].startswith(
        f"events created between {newest.isoformat()} (newest stored before) and "
    )
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["possible_gaps_last_24h"].value == 1
    assert check.metadata["latest_gap_start"].value == newest.isoformat()
