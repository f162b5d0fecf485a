"""The README's main command, for real: `dagster dev` with the repository's instance file and
workspace.yaml polling a fake GitHub; then a restart keeps history. Both instance files: dagster.yaml
(SQLite, no DAGSTER_HOME) and deploy/postgres/dagster.yaml (a real PostgreSQL server)."""

import itertools
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from gh_pipeline.defs.live.jobs import POLL_JOB_NAME
from gh_pipeline_tests.support.dagster_process import (
    BIN,
    base_env,
    free_port,
    group_processes,
    process_environ,
    running,
    wait_for,
)
from gh_pipeline_tests.support.dagster_storage import DagsterStorage
from gh_pipeline_tests.support.fake_github import (
    FakeGitHub,
    load_recorded,
    recorded_2019_feed,
    redate,
    trim_event,
)

pytestmark = pytest.mark.timeout(600)


def _successes(storage: DagsterStorage, work: Path) -> int:
    # Poll runs only: a scheduled quality-check run that happens to finish in between must not
    # count as the poll that stores the events pushed meanwhile.
    return sum(status == "SUCCESS" for _, status in storage.runs(work, POLL_JOB_NAME))


def _progress(storage: DagsterStorage, work: Path, log: Path) -> str:
    """What a timeout should show: every run with its job and status, and the log's tail."""
    tail = log.read_text(encoding="utf-8", errors="replace")[-4000:] if log.exists() else ""
    return f"runs: {storage.runs(work)}\npoll runs: {storage.runs(work, POLL_JOB_NAME)}\n{tail}"


def test_dagster_dev_polls_unattended_and_survives_restart(
    tmp_path: Path, dagster_storage: DagsterStorage
) -> None:
    storage = dagster_storage
    now = datetime.now().astimezone()
    # Real events in today's trimmed shape; the 2019 feed re-dated into the last minutes so the
    # look-back windows have something to count; duckdb/duckdb keeps its real 2023 timestamps.
    live = redate([trim_event(e) for e in recorded_2019_feed()[:120]], newest=now, step_s=7)
    duckdb_repo = [trim_event(e) for e in load_recorded("repo-events-duckdb-2023-page01.json")]
    later = redate(
        [trim_event(e) for e in recorded_2019_feed()[120:]],
        newest=now + timedelta(seconds=5),
        step_s=1,
    )
    served = live + duckdb_repo + later

    work = storage.project_copy(tmp_path)
    port = free_port()
    with FakeGitHub(live + duckdb_repo, poll_interval=3) as fake:
        env = base_env(GITHUB_API_URL=fake.url, **storage.env(work))
        args = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-p", str(port)]
        log = tmp_path / "dagster-dev.log"
        with running(args, cwd=work, env=env, log=log) as dev:
            wait_for(
                lambda: _successes(storage, work) >= 1,
                timeout_s=240,
                what="the first poll run",
                describe=lambda: _progress(storage, work, log),
            )
            if storage.name == "sqlite":
                # dagster.yaml's storage caps malloc arenas in dagster dev, which passes the cap
                # to every process it starts (deploy/Dockerfile sets it for the Postgres image).
                processes = group_processes(dev.pid)
                arenas = {
                    role: [
                        process_environ(p.pid).get("MALLOC_ARENA_MAX")
                        for p in processes
                        if p.role == role
                    ]
                    for role in ("daemon", "webserver", "code_server")
                }
                assert arenas == {"daemon": ["2"], "webserver": ["2"], "code_server": ["2"]}
            fake.push(later)
            wait_for(
                lambda: _successes(storage, work) >= 2,
                timeout_s=120,
                what="a second poll run",
                describe=lambda: _progress(storage, work, log),
            )
            # Read while dagster dev still runs: a poll the sensor launches just as the test stops
            # dagster dev is killed by that stop, which is not a failure of the pipeline.
            before_stop = storage.runs(work)
        first_session = storage.runs(work)
        statuses = [status for _, status in before_stop]
        assert "FAILURE" not in statuses, log.read_text(encoding="utf-8")[-3000:]

        # Nothing was set by hand: the warehouse and the Dagster home are below ./data.
        warehouse = work / "data" / "warehouse.duckdb"
        assert warehouse.exists()
        assert not list(work.glob(".tmp_dagster_home_*/storage"))
        # The run history is in the storage under test, and only there.
        sqlite_runs = work / "data" / "dagster_home" / "storage" / "history" / "runs.db"
        assert sqlite_runs.exists() == (storage.name == "sqlite")

        polls_before = _successes(storage, work)
        with running(args, cwd=work, env=env, log=log):
            wait_for(
                lambda: _successes(storage, work) > polls_before,
                timeout_s=240,
                what="a poll after restart",
                describe=lambda: _progress(storage, work, log),
            )
        after = storage.runs(work)
        # History survived the restart: the same runs, and what had succeeded still has.
        assert [run_id for run_id, _ in after[: len(first_session)]] == [
            run_id for run_id, _ in first_session
        ]
        done = {run_id for run_id, status in first_session if status == "SUCCESS"}
        assert all(status == "SUCCESS" for run_id, status in after if run_id in done)

    assert all(r.headers.get("user-agent", "").startswith("gh-pipeline") for r in fake.requests)
    # Never sooner than X-Poll-Interval (3 s) after the previous poll began.
    starts = [r.at for r in fake.requests if "page" not in r.query]
    assert len(starts) >= 3
    assert all(b - a >= 3.0 for a, b in itertools.pairwise(starts))
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        ids = {row[0] for row in conn.execute("SELECT event_id FROM raw_events").fetchall()}
        assert ids == {e["id"] for e in served}
        by_type = dict(
            conn.execute(
                "SELECT 'w', count(*) FROM watch_events UNION ALL "
                "SELECT 'p', count(*) FROM pull_request_events UNION ALL "
                "SELECT 'i', count(*) FROM issues_events"
            ).fetchall()
        )
        types = Counter(e["type"] for e in served)
        assert by_type == {
            "w": types["WatchEvent"],
            "p": types["PullRequestEvent"],
            "i": types["IssuesEvent"],
        }

        # duckdb/duckdb opened PRs at 12:00:25, 16:27:48 and 20:02:55 on 2023-04-07 (hand-checked):
        # gaps 16043 s and 12907 s.
        row = conn.execute(
            "SELECT pr_opened, avg_interval_s, median_interval_s, p90_interval_s "
            "FROM pr_intervals WHERE repo_name = 'duckdb/duckdb'"
        ).fetchall()
        assert row == [(3, 14475.0, 14475.0, pytest.approx(15729.4))]

        counts = conn.execute(
            "SELECT as_of, window_minutes, event_type, event_count FROM event_counts"
        ).fetchall()
        assert len(counts) == 15
        as_of = counts[0][0]
        for _, window, event_type, count in counts:
            expected = sum(
                1
                for e in served
                if e["type"] == event_type
                and as_of - timedelta(minutes=window)
                < datetime.fromisoformat(e["created_at"].replace("Z", "+00:00"))
                <= as_of
            )
            assert count == expected, (window, event_type)
        assert sum(c[3] for c in counts if c[1] == 1440) > 0

        pr_counts = dict(
            (r[0], (r[1], r[2]))
            for r in conn.execute(
                "SELECT repo_name, pr_events, pr_opened FROM repo_pr_counts"
            ).fetchall()
        )
        expected_pr: Counter[str] = Counter(
            e["repo"]["name"] for e in served if e["type"] == "PullRequestEvent"
        )
        assert {k: v[0] for k, v in pr_counts.items()} == dict(expected_pr)
        assert pr_counts["duckdb/duckdb"] == (expected_pr["duckdb/duckdb"], 3)
