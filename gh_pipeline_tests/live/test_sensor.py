"""The poll sensor through dg.build_sensor_context: when it launches, and why and until when it
skips. Time is controlled through the poll state (times relative to now) and the cursor."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType

from gh_pipeline import settings, warehouse
from gh_pipeline.defs.live.jobs import POLL_JOB_NAME
from gh_pipeline.defs.live.sensors import POLL_RUN_MAX_RUNTIME_S, github_events_sensor
from gh_pipeline.defs.warehouse.resources import PipelineStorage
from gh_pipeline.live import ingest, poll_state, polling
from gh_pipeline.live.github_client import GitHubEventsClient
from gh_pipeline_tests.support.fake_github import FakeGitHub, Fault, numbered_feed


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def _evaluate(
    instance: dg.DagsterInstance, data_dir: Path, cursor: str | None = None
) -> tuple[dg.RunRequest | dg.SkipReason, str | None]:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"storage": PipelineStorage(data_dir=str(data_dir))},
    )
    result = github_events_sensor(context)
    return result, context.cursor


def _save(data_dir: Path, state: poll_state.PollState) -> None:
    poll_state.save_state(settings.state_dir(data_dir), state)


def test_launches_when_nothing_holds_it_back_and_never_opens_the_warehouse(
    instance: dg.DagsterInstance, data_dir: Path
) -> None:
    before = datetime.now(UTC)
    result, cursor = _evaluate(instance, data_dir)
    assert isinstance(result, dg.RunRequest)
    assert result.tags["dagster/max_runtime"] == str(POLL_RUN_MAX_RUNTIME_S)
    assert cursor is not None
    launched = datetime.fromisoformat(json.loads(cursor)["last_launch_at"])
    assert before <= launched <= datetime.now(UTC)
    # The sensor reads the state file only: a DuckDB reader would block the poll's writer.
    assert not settings.warehouse_path(data_dir).exists()


def test_right_after_a_launch_it_waits_one_interval(
    instance: dg.DagsterInstance, data_dir: Path
) -> None:
    _, cursor = _evaluate(instance, data_dir)
    result, after = _evaluate(instance, data_dir, cursor)
    assert isinstance(result, dg.SkipReason)
    launched = datetime.fromisoformat(json.loads(cursor)["last_launch_at"])
    allowed = (launched + timedelta(seconds=60)).isoformat(timespec="seconds")
    assert result.skip_message.startswith(f"next poll allowed at {allowed} (in ")
    assert "a poll was launched at" in result.skip_message
    assert after == cursor  # a skip leaves the cursor alone


def test_skip_reason_names_the_rule_and_the_time(
    instance: dg.DagsterInstance, data_dir: Path
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=25)
    _save(data_dir, poll_state.PollState(next_poll_at=at, reason="HTTP 429 with retry-after 1500s"))
    result, _ = _evaluate(instance, data_dir)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message.startswith(f"next poll allowed at {at.isoformat()} (in ")
    assert result.skip_message.endswith("s): HTTP 429 with retry-after 1500s")


def test_launches_a_little_ahead_of_the_allowed_moment(
    instance: dg.DagsterInstance, data_dir: Path
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=polling.LAUNCH_LEAD_S - 3)
    _save(data_dir, poll_state.PollState(next_poll_at=soon))
    result, _ = _evaluate(instance, data_dir)
    assert isinstance(result, dg.RunRequest)
    later = datetime.now(UTC) + timedelta(seconds=polling.LAUNCH_LEAD_S + 30)
    _save(data_dir, poll_state.PollState(next_poll_at=later))
    result, _ = _evaluate(instance, data_dir)
    assert isinstance(result, dg.SkipReason)


def test_never_two_polls_in_flight(instance: dg.DagsterInstance, data_dir: Path) -> None:
    run = dg.DagsterRun(job_name=POLL_JOB_NAME, status=dg.DagsterRunStatus.STARTED)
    instance.add_run(run)
    result, _ = _evaluate(instance, data_dir)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == f"a poll is already in flight (run {run.run_id} is started)"
    instance.report_run_failed(run)
    result, _ = _evaluate(instance, data_dir)
    assert isinstance(result, dg.RunRequest)


def _poll(fake: FakeGitHub, data_dir: Path, poll_id: str) -> None:
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    try:
        with GitHubEventsClient(api_url=fake.url, retry_base_s=0.001) as client:
            ingest.poll_once(
                client=client, conn=conn, data_dir=data_dir, poll_id=poll_id, sleep=lambda s: None
            )
    finally:
        conn.close()


def test_after_a_rate_limit_refusal_it_waits_for_the_reset(
    instance: dg.DagsterInstance, data_dir: Path
) -> None:
    with FakeGitHub(numbered_feed(50, serial=1)) as fake:
        fake.schedule(Fault(status=403, headers={"X-RateLimit-Remaining": "0"}))
        with pytest.raises(ingest.PollRefused):
            _poll(fake, data_dir, "refused")
        reset = datetime.fromtimestamp(fake.reset_at, UTC) + timedelta(seconds=1)
    result, _ = _evaluate(instance, data_dir)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message.startswith(f"next poll allowed at {reset.isoformat()} (in ")
    assert "HTTP 403: rate limit of 5000 requests spent (x-ratelimit-remaining 0)" in (
        result.skip_message
    )


def test_after_a_secondary_limit_it_backs_off(instance: dg.DagsterInstance, data_dir: Path) -> None:
    with FakeGitHub(numbered_feed(50, serial=1)) as fake:
        fake.schedule(Fault(status=429, body=b'{"message": "secondary rate limit"}'))
        with pytest.raises(ingest.PollRefused):
            _poll(fake, data_dir, "refused")
    result, _ = _evaluate(instance, data_dir)
    assert isinstance(result, dg.SkipReason)
    assert "secondary rate limit, 1 in a row): backing off 60s" in result.skip_message


def test_an_unauthenticated_budget_spaces_the_polls(
    instance: dg.DagsterInstance, data_dir: Path
) -> None:
    with FakeGitHub(numbered_feed(400, serial=1), rate_limit=60) as fake:
        _poll(fake, data_dir, "p1")
    state = poll_state.load_state(settings.state_dir(data_dir))
    assert state.last_poll_started_at is not None and state.next_poll_at is not None
    # Three requests spent, 57 left, 3 in reserve: one 3-page poll every ~200 s, not every 60 s.
    spacing = (state.next_poll_at - state.last_poll_started_at).total_seconds()
    assert 190 <= spacing <= 201
    result, _ = _evaluate(instance, data_dir)
    assert isinstance(result, dg.SkipReason)
    assert "rate budget: 57 of 60 requests left until" in result.skip_message
    assert "3 request(s) per poll" in result.skip_message


def _launched_run(instance: dg.DagsterInstance, cursor: str) -> dg.DagsterRun:
    """The run Dagster creates for the sensor's last RunRequest (its run key as a tag)."""
    launched = json.loads(cursor)["last_launch_at"]
    return instance.add_run(
        dg.DagsterRun(
            job_name=POLL_JOB_NAME,
            status=dg.DagsterRunStatus.STARTING,
            tags={"dagster/run_key": f"poll-{launched}"},
        )
    )


def test_a_launch_that_never_started_does_not_hold_the_next_poll_back(
    instance: dg.DagsterInstance, data_dir: Path
) -> None:
    _, cursor = _evaluate(instance, data_dir)
    run = _launched_run(instance, cursor)
    result, _ = _evaluate(instance, data_dir, cursor)
    assert isinstance(result, dg.SkipReason)
    assert "a poll is already in flight" in result.skip_message
    # Killed while STARTING (resolved as stale after a crash): no worker, so no request went out.
    instance.report_run_failed(run, "its worker never started")
    result, _ = _evaluate(instance, data_dir, cursor)
    assert isinstance(result, dg.RunRequest)


def test_a_launch_that_started_and_died_still_holds_the_next_poll_back(
    instance: dg.DagsterInstance, data_dir: Path
) -> None:
    _, cursor = _evaluate(instance, data_dir)
    run = _launched_run(instance, cursor)
    instance.report_dagster_event(
        DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name=POLL_JOB_NAME),
        run_id=run.run_id,
    )
    instance.report_run_failed(run, "its worker died mid-poll")
    result, _ = _evaluate(instance, data_dir, cursor)
    # It may have polled before it died: one interval after its launch still applies.
    assert isinstance(result, dg.SkipReason)
    assert "a poll was launched at" in result.skip_message
