"""A crash costs seconds: `dagster dev` (the repository's dagster.yaml, a fake GitHub) is killed
with SIGKILL, process group and all, while a poll run is queued, starting or started; after the
restart the run left behind is resolved and a poll succeeds long before run monitoring's
fallbacks (180 s start timeout, 300 s max runtime) could have freed the way."""

import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from gh_pipeline.defs.live.jobs import POLL_JOB_NAME
from gh_pipeline_tests.support.dagster_process import (
    BIN,
    REPO_ROOT,
    base_env,
    free_port,
    running,
    wait_for,
)
from gh_pipeline_tests.support.fake_github import FakeGitHub, numbered_feed, trim_event

pytestmark = pytest.mark.timeout(900)

# Well below run monitoring's 180 s start timeout: a pass cannot come from the fallback.
FIRST_POLL_WITHIN_S = 90


def _poll_runs(work: Path) -> list[tuple[str, str]]:
    db = work / "data" / "dagster_home" / "storage" / "history" / "runs.db"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            rows = conn.execute(
                "SELECT run_id, status FROM runs WHERE pipeline_name = ? ORDER BY create_timestamp",
                (POLL_JOB_NAME,),
            ).fetchall()
    except sqlite3.OperationalError:  # the schema is still being created, or a write holds it
        return []
    return [(row[0], row[1]) for row in rows]


def _ui_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _run_failure_message(work: Path, run_id: str) -> str:
    shard = work / "data" / "dagster_home" / "storage" / "history" / "runs" / f"{run_id}.db"
    with sqlite3.connect(shard, timeout=5) as conn:
        rows = conn.execute(
            "SELECT event FROM event_logs WHERE dagster_event_type = 'PIPELINE_FAILURE'"
        ).fetchall()
    return " ".join(row[0] for row in rows)


def _kill_when(work: Path, proc, fake: FakeGitHub, state: str, serial: int) -> tuple[str, str]:
    """SIGKILL the whole dagster dev process group the moment a poll run is in `state`."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        # New events keep every poll busy for a moment.
        serial += 1
        fake.push([trim_event(e) for e in numbered_feed(30, serial=serial)])
        for _ in range(40):
            hit = [r for r in _poll_runs(work) if r[1] == state]
            if hit:
                os.killpg(proc.pid, signal.SIGKILL)
                return hit[-1]
            time.sleep(0.025)
    raise AssertionError(f"never saw a poll run {state}: {_poll_runs(work)}")


def test_kill_9_in_each_run_state_costs_seconds(tmp_path: Path) -> None:
    """One session per kill: start, kill -9 while a poll run is STARTING; restart, check, kill
    while one is STARTED; restart, check, kill while one is QUEUED; restart, check."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(REPO_ROOT / name, work / name)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dagster-dev.log"
    args = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-p", str(port)]
    feed = [trim_event(e) for e in numbered_feed(120, serial=0)]
    figures = {}
    with FakeGitHub(feed, poll_interval=1) as fake:
        env = base_env(GITHUB_API_URL=fake.url)
        caught: tuple[str, str] | None = None
        for serial, state in enumerate(["STARTING", "STARTED", "QUEUED", None], start=1):
            with running(args, cwd=work, env=env, log=log) as proc:
                if caught is not None:
                    killed_in = caught[1]
                    left = dict(_poll_runs(work))[caught[0]]
                    before = {r for r, status in _poll_runs(work) if status == "SUCCESS"}
                    wait_for(lambda: _ui_up(url), timeout_s=240, what="the UI after a restart")
                    up = time.monotonic()
                    wait_for(
                        lambda before=before: any(
                            status == "SUCCESS" and run_id not in before
                            for run_id, status in _poll_runs(work)
                        ),
                        timeout_s=FIRST_POLL_WITHIN_S,
                        what=f"the first poll after a kill in {killed_in}",
                        poll_s=0.2,
                        describe=lambda: (
                            f"{_poll_runs(work)}\n{log.read_text(errors='replace')[-3000:]}"
                        ),
                    )
                    figures[killed_in] = round(time.monotonic() - up, 1)
                    after = dict(_poll_runs(work))
                    # The run the crash left behind is no longer in flight: a queued one ran, a
                    # starting or started one was failed with a reason.
                    assert after[caught[0]] in {"SUCCESS", "FAILURE"}, after
                    if left in {"STARTING", "STARTED"}:
                        assert after[caught[0]] == "FAILURE"
                        message = _run_failure_message(work, caught[0])
                        assert "Run marked failed by gh_pipeline" in message, message
                if state is not None:
                    caught = _kill_when(work, proc, fake, state, serial * 1000)
    print(f"first successful poll after UI up, by the state the kill left: {figures}")
    assert set(figures) == {"STARTING", "STARTED", "QUEUED"}
