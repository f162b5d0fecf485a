"""Data-quality checks on real events in a real DuckDB file: each check passes on good data and
fails, with the right severity and details, on data broken the way it breaks in practice."""

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from gh_pipeline import settings, warehouse
from gh_pipeline.defs.ops import quality as quality_checks
from gh_pipeline.live import ingest, poll_state
from gh_pipeline.live.github_client import GitHubEventsClient
from gh_pipeline.model import metrics
from gh_pipeline.ops import quality
from gh_pipeline.warehouse import raw
from gh_pipeline_tests.support.fake_github import (
    FakeGitHub,
    Fault,
    archive_fixture_events,
    load_recorded,
    recorded_2019_feed,
    trim_event,
)

DUCKDB_FEED = "repo-events-duckdb-2023-page01.json"
# The newest event of the recorded duckdb/duckdb feed: metric windows ending here are non-empty.
DUCKDB_FEED_AS_OF = datetime(2023, 4, 7, 21, 0, tzinfo=UTC)


def _no_sleep(seconds: float) -> None:
    pass


def _real_events() -> list[dict[str, Any]]:
    """Untrimmed real events: the 2019 /events session and the duckdb/duckdb 2023 page."""
    return recorded_2019_feed() + load_recorded(DUCKDB_FEED)


def _renumbered(events: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    """Copies with new ids: the same real shapes arriving again as new events."""
    return [dict(copy.deepcopy(e), id=f"{e['id']}{suffix}") for e in events]


def _load(conn: duckdb.DuckDBPyConnection, tmp: Path, name: str, events: list[Any]) -> None:
    path = tmp / f"{name}.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    raw.load_ndjson(conn, path, poll_id=name, source="api")


# -- ids, types, timestamps -------------------------------------------------------------------


def test_ids_are_unique_under_the_primary_key(conn, tmp_path):
    _load(conn, tmp_path, "p1", _real_events())
    finding = quality.check_unique_ids(conn)
    assert finding.passed
    assert finding.metadata == {"rows": 255, "primary_key": True, "duplicated_ids": 0}


def test_duplicates_in_a_table_without_its_primary_key_are_an_error(conn, tmp_path):
    _load(conn, tmp_path, "p1", _real_events())
    # A table recreated without its key (by hand, or a faulty migration), then loaded twice over.
    conn.execute("CREATE TABLE raw_copy AS SELECT * FROM raw_events")
    conn.execute("DROP TABLE raw_events")
    conn.execute("ALTER TABLE raw_copy RENAME TO raw_events")
    assert not quality.check_unique_ids(conn).passed  # no key: an error even before duplicates
    conn.execute(
        "INSERT INTO raw_events SELECT * FROM raw_events WHERE event_id IN ('10680625420', '28277714197')"
    )
    finding = quality.check_unique_ids(conn)
    assert not finding.passed
    assert finding.severity == quality.ERROR
    assert finding.metadata["duplicated_ids"] == 2
    assert finding.metadata["examples"] == {"10680625420": 2, "28277714197": 2}


def test_every_real_event_type_is_known_and_a_new_one_warns(conn, tmp_path):
    events = archive_fixture_events()
    _load(conn, tmp_path, "archive", events)
    finding = quality.check_event_types(conn)
    assert finding.passed, finding.summary
    assert finding.metadata["event_types"] == 15

    new_type = dict(copy.deepcopy(events[0]), id="99000000001", type="CopilotWorkspaceEvent")
    _load(conn, tmp_path, "new", [new_type])
    finding = quality.check_event_types(conn)
    assert not finding.passed
    assert finding.severity == quality.WARN
    assert finding.metadata["unknown_types"] == {"CopilotWorkspaceEvent": 1}


def test_created_at_in_the_future_beyond_the_skew_is_an_error(conn, tmp_path):
    now = datetime.now(UTC)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    base = load_recorded(DUCKDB_FEED)
    slightly_ahead = dict(base[0], created_at=(now + timedelta(minutes=2)).strftime(stamp))
    _load(conn, tmp_path, "p1", [slightly_ahead, *base[1:5]])
    assert quality.check_created_at(conn, now=now).passed  # within the 5-minute skew

    far_ahead = dict(base[5], created_at=(now + timedelta(hours=1)).strftime(stamp))
    _load(conn, tmp_path, "p2", [far_ahead])
    finding = quality.check_created_at(conn, now=now)
    assert not finding.passed
    assert finding.severity == quality.ERROR
    assert finding.metadata["future_events"] == 1


# -- freshness --------------------------------------------------------------------------------


def _poll(fake: FakeGitHub, conn, data_dir: Path, poll_id: str) -> None:
    with GitHubEventsClient(
        api_url=fake.url, retry_attempts=1, retry_base_s=0.001, sleep=_no_sleep
    ) as client:
        ingest.poll_once(
            client=client, conn=conn, data_dir=data_dir, poll_id=poll_id, sleep=_no_sleep
        )


def test_freshness_warns_after_three_poll_intervals_without_a_successful_poll(conn, data_dir):
    state_dir = settings.state_dir(data_dir)
    never = quality.check_freshness(
        conn, state=poll_state.load_state(state_dir), now=datetime.now(UTC)
    )
    assert not never.passed
    assert never.metadata["last_successful_poll_at"] == "never"

    with FakeGitHub(load_recorded(DUCKDB_FEED), poll_interval=60) as fake:
        _poll(fake, conn, data_dir, "good")
        good_at = warehouse.scalar(
            conn, "SELECT min(requested_at) FROM poll_log WHERE poll_id = 'good'"
        )
        # A later poll that fails (GitHub answers 500) does not count as fresh.
        fake.schedule(Fault(status=500))
        with pytest.raises(ingest.PollFailed):
            _poll(fake, conn, data_dir, "failed")

    state = poll_state.load_state(state_dir)
    assert state.poll_interval_s == 60
    fresh = quality.check_freshness(conn, state=state, now=good_at + timedelta(seconds=170))
    assert fresh.passed
    assert fresh.metadata["last_successful_poll_at"] == good_at.isoformat()
    stale = quality.check_freshness(conn, state=state, now=good_at + timedelta(seconds=190))
    assert not stale.passed
    assert stale.severity == quality.WARN
    assert stale.metadata["allowed_age_s"] == 180


def test_freshness_follows_the_rate_budget_spacing_but_not_a_backoff():
    """Unauthenticated, the budget spaces polls ~200 s apart: that is normal, not stale."""
    started = datetime(2025, 11, 3, 12, 0, tzinfo=UTC)
    spaced = poll_state.PollState(
        last_poll_started_at=started,
        last_status=200,
        poll_interval_s=60,
        next_poll_at=started + timedelta(seconds=200),
    )
    later = started + timedelta(seconds=500)
    fine = quality.check_freshness(None, state=spaced, now=later)
    assert fine.passed
    assert fine.metadata["allowed_age_s"] == 600
    # The same plan after failed polls is a backoff: three X-Poll-Intervals (180 s) apply: stale.
    failing = spaced.with_(last_status=500, consecutive_failures=2)
    stale = quality.check_freshness(None, state=failing, now=later)
    assert not stale.passed
    assert stale.metadata["allowed_age_s"] == 180
    assert stale.metadata["last_successful_poll_at"] == "never"  # the state alone cannot say


# -- schema drift -----------------------------------------------------------------------------


def test_first_profile_starts_the_baseline_and_the_same_shape_passes(conn, tmp_path):
    now = datetime.now(UTC)
    _load(conn, tmp_path, "p1", _real_events())
    first = quality.profile_schema(conn, now=now)
    assert first.passed
    assert first.metadata["events_profiled"] == 255
    assert "PullRequestEvent (api)" in first.metadata["baseline_started_for"]

    _load(conn, tmp_path, "p2", _renumbered(_real_events(), "7"))
    again = quality.profile_schema(conn, now=now)
    assert again.passed, again.metadata.get("drift")
    assert again.metadata["events_profiled"] == 255
    assert again.metadata["types_compared"] >= 2  # PushEvent and PullRequestEvent have baselines

    nothing = quality.profile_schema(conn, now=now)
    assert nothing.passed
    assert nothing.metadata["events"] == 0


def test_trimmed_pull_request_payloads_warn_once_then_become_the_baseline(conn, tmp_path):
    """The 2025-10-07 change: GitHub trimmed PullRequestEvent (and PushEvent) payloads."""
    now = datetime.now(UTC)
    _load(conn, tmp_path, "untrimmed", _real_events())
    assert quality.profile_schema(conn, now=now).passed

    trimmed = [trim_event(e) for e in _renumbered(_real_events(), "1")]
    _load(conn, tmp_path, "trimmed", trimmed)
    finding = quality.profile_schema(conn, now=now)
    assert not finding.passed
    assert finding.severity == quality.WARN
    detail = finding.metadata["drift_detail"]
    assert set(detail) == {"PullRequestEvent (api)", "PushEvent (api)"}
    vanished = set(detail["PullRequestEvent (api)"]["vanished_keys"])
    assert {
        "payload.pull_request.created_at",
        "payload.pull_request.title",
        "payload.pull_request.state",
        "payload.pull_request.user",
    } <= vanished
    assert "payload.pull_request.number" not in vanished  # kept by the trimmed shape
    assert set(detail["PushEvent (api)"]["vanished_keys"]) == {
        "payload.commits",
        "payload.distinct_size",
        "payload.size",
    }
    assert detail["PullRequestEvent (api)"]["new_keys"] == []
    assert detail["PullRequestEvent (api)"]["relied_on_missing"] == {}  # action, number remain
    table = finding.metadata["drift"]  # the markdown shown in the UI
    assert "| PullRequestEvent | api | 29 |" in table
    assert (
        "| PushEvent | api | 88 |  | payload.commits, payload.distinct_size, payload.size |"
        in table
    )

    _load(
        conn, tmp_path, "trimmed-again", [trim_event(e) for e in _renumbered(_real_events(), "2")]
    )
    settled = quality.profile_schema(conn, now=now)
    assert settled.passed, settled.metadata.get("drift")


def test_new_keys_and_missing_relied_on_fields_warn(conn, tmp_path):
    now = datetime.now(UTC)
    # Two rounds of the real shapes, so every tracked type has a baseline of ≥ 20 events.
    _load(conn, tmp_path, "a", _real_events())
    _load(conn, tmp_path, "b", _renumbered(_real_events(), "3"))
    assert quality.profile_schema(conn, now=now).passed

    changed = []
    for event in _renumbered(_real_events(), "4"):
        if event["type"] == "WatchEvent":
            event["payload"].pop("action")
        if event["type"] == "IssuesEvent":
            event["payload"]["sub_issue"] = {"id": 1}
        changed.append(event)
    _load(conn, tmp_path, "c", changed)
    finding = quality.profile_schema(conn, now=now)
    assert not finding.passed
    detail = finding.metadata["drift_detail"]
    assert detail["WatchEvent (api)"]["relied_on_missing"] == {"payload.action": [0.0, 1.0]}
    assert detail["WatchEvent (api)"]["vanished_keys"] == ["payload.action"]
    assert detail["IssuesEvent (api)"]["new_keys"] == ["payload.sub_issue", "payload.sub_issue.id"]


def test_profile_skips_events_whose_raw_json_was_pruned(conn, tmp_path):
    _load(conn, tmp_path, "p1", _real_events())
    conn.execute("UPDATE raw_events SET event = NULL, payload = NULL")
    finding = quality.profile_schema(conn, now=datetime.now(UTC))
    assert finding.passed
    assert finding.metadata["events_profiled"] == 0
    assert finding.metadata["events_skipped"] == 255


# -- metric tables ----------------------------------------------------------------------------


def test_metric_tables_built_by_the_pipeline_pass(conn, tmp_path):
    _load(conn, tmp_path, "p1", _real_events())
    metrics.refresh_all(conn, as_of=DUCKDB_FEED_AS_OF)
    # The windows really count something, or the recount would compare zeros with zeros.
    assert warehouse.scalar(conn, "SELECT sum(event_count) FROM event_counts") > 0
    assert warehouse.scalar(conn, "SELECT count(*) FROM pr_intervals WHERE avg_interval_s > 0") > 0
    for check in (
        quality.check_pr_intervals,
        quality.check_repo_pr_counts,
        quality.check_event_counts,
    ):
        finding = check(conn)
        assert finding.passed, finding.summary
        assert finding.severity == quality.ERROR


@pytest.mark.parametrize(
    ("tamper", "check", "problem"),
    [
        (
            "UPDATE pr_intervals SET avg_interval_s = -5 WHERE repo_name = 'duckdb/duckdb'",
            quality.check_pr_intervals,
            "negative_interval",
        ),
        (
            "UPDATE pr_intervals SET avg_interval_s = 10 WHERE repo_name = "
            "(SELECT min(repo_name) FROM pr_intervals WHERE pr_opened = 1)",
            quality.check_pr_intervals,
            "avg_without_two",
        ),
        (
            "UPDATE pr_intervals SET avg_interval_s = NULL WHERE repo_name = 'duckdb/duckdb'",
            quality.check_pr_intervals,
            "two_without_avg",
        ),
        (
            "UPDATE pr_intervals SET pr_opened = pr_opened + 1 WHERE repo_name = 'duckdb/duckdb'",
            quality.check_pr_intervals,
            "count_mismatch",
        ),
        (
            "DELETE FROM repo_pr_counts WHERE repo_name = 'duckdb/duckdb'",
            quality.check_repo_pr_counts,
            "pr_events_mismatch",
        ),
        (
            "UPDATE repo_pr_counts SET pr_opened = pr_opened + 1 WHERE repo_name = 'duckdb/duckdb'",
            quality.check_repo_pr_counts,
            "pr_opened_mismatch",
        ),
        (
            "UPDATE event_counts SET event_count = event_count + 1"
            " WHERE window_minutes = 1440 AND event_type = 'PullRequestEvent'",
            quality.check_event_counts,
            "count_mismatch",
        ),
        (
            "DELETE FROM event_counts WHERE window_minutes = 5 AND event_type = 'WatchEvent'",
            quality.check_event_counts,
            "missing_or_extra_cells",
        ),
        (
            "UPDATE event_counts SET event_count = 0"
            " WHERE window_minutes = 1440 AND event_type = 'PullRequestEvent'",
            quality.check_event_counts,
            "longer_window_smaller",
        ),
    ],
)
def test_broken_metric_tables_are_errors(conn, tmp_path, tamper, check, problem):
    _load(conn, tmp_path, "p1", _real_events())
    metrics.refresh_all(conn, as_of=DUCKDB_FEED_AS_OF)
    conn.execute(tamper)
    finding = check(conn)
    assert not finding.passed
    assert finding.severity == quality.ERROR
    assert finding.metadata[problem] >= 1, finding.metadata


def test_checks_on_tables_not_built_yet_pass_and_say_so(tmp_path):
    with duckdb.connect(str(tmp_path / "empty.duckdb")) as empty:
        finding = quality.check_pr_intervals(empty)
    assert finding.passed
    assert "not been built" in finding.summary


# -- through Dagster --------------------------------------------------------------------------


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_quality_job_reports_every_check_in_dagster(data_dir, tmp_path):
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    warehouse.ensure_schema(conn)
    _load(conn, tmp_path, "p1", _real_events())
    metrics.refresh_all(conn, as_of=DUCKDB_FEED_AS_OF)
    conn.close()

    from gh_pipeline.definitions import defs

    job = defs().resolve_job_def(quality_checks.QUALITY_JOB_NAME)
    with dg.DagsterInstance.ephemeral() as instance:
        first = _evaluations(job.execute_in_process(instance=instance))
    mine = {
        quality_checks.EVENT_IDS_UNIQUE: True,
        quality_checks.EVENT_TYPES_KNOWN: True,
        quality_checks.CREATED_AT_NOT_IN_FUTURE: True,
        quality_checks.POLLS_FRESH: False,  # nothing was ever polled here
        quality_checks.PAYLOAD_SCHEMA_STABLE: True,
        quality_checks.PR_INTERVALS_VALID: True,
        quality_checks.REPO_PR_COUNTS_MATCH_FILTERED: True,
        quality_checks.EVENT_COUNTS_MATCH_FILTERED: True,
    }
    assert {name: first[name].passed for name in mine} == mine
    assert first[quality_checks.POLLS_FRESH].severity == dg.AssetCheckSeverity.WARN
    assert first[quality_checks.EVENT_IDS_UNIQUE].severity == dg.AssetCheckSeverity.ERROR

    conn = warehouse.connect(settings.warehouse_path(data_dir))
    _load(conn, tmp_path, "trimmed", [trim_event(e) for e in _renumbered(_real_events(), "5")])
    conn.close()
    with dg.DagsterInstance.ephemeral() as instance:
        second = _evaluations(job.execute_in_process(instance=instance))
    drift = second[quality_checks.PAYLOAD_SCHEMA_STABLE]
    assert not drift.passed
    assert drift.severity == dg.AssetCheckSeverity.WARN
    assert "PullRequestEvent" in drift.description
    detail = drift.metadata["drift_detail"].value
    assert "payload.pull_request.title" in detail["PullRequestEvent (api)"]["vanished_keys"]


def test_checks_are_non_blocking_and_share_the_warehouse_pool():
    from gh_pipeline.definitions import defs

    graph = defs().resolve_asset_graph()
    keys = [k for k in graph.asset_check_keys if k.name in vars(quality_checks).values()]
    assert len(keys) == 8
    for key in keys:
        assert not graph.get_check_spec(key).blocking
    assert quality_checks.raw_events_quality.op.pool == "duckdb_warehouse"
    assert quality_checks.pr_intervals_valid.op.pool == "duckdb_warehouse"
