"""A range of GH Archive hours backfilled from the command line into a real `dagster dev`: the
daemon runs it by the asset's backfill policy (several hours per run), each hour lands once."""

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import httpx
import pytest

from gh_pipeline.ops import archive_backfill
from gh_pipeline_tests.support.archive_server import ArchiveServer, fixture_events
from gh_pipeline_tests.support.dagster_process import (
    BIN,
    REPO_ROOT,
    base_env,
    free_port,
    running,
    wait_for,
)
from gh_pipeline_tests.support.fake_github import FakeGitHub

pytestmark = pytest.mark.timeout(600)

HOURS = (6, 7, 8, 9)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gh_pipeline.ops.archive_backfill", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_range_of_hours_is_backfilled_from_the_command_line(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(REPO_ROOT / name, work / name)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ArchiveServer() as archive, FakeGitHub([], poll_interval=60) as fake:
        for h in HOURS:
            archive.serve_fixture(f"2021-07-21-{h}.json.gz")
        env = base_env(GITHUB_API_URL=fake.url, GHARCHIVE_URL=archive.url)
        log = tmp_path / "dagster-dev.log"
        args = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-p", str(port)]
        with running(args, cwd=work, env=env, log=log):
            wait_for(lambda: _up(url), timeout_s=180, what="the Dagster webserver")
            done = _cli(
                "2021-07-21-06:00",
                "2021-07-21-09:00",
                "--url",
                url,
                "--wait",
                "--poll-s",
                "2",
                env=base_env(),
            )
            assert done.returncode == 0, done.stdout + done.stderr + log.read_text()[-3000:]
            assert "4 hours" in done.stdout and "completed" in done.stdout.lower()
    runs_db = work / "data" / "dagster_home" / "storage" / "history" / "runs.db"
    with sqlite3.connect(runs_db) as conn:
        backfill_runs = conn.execute(
            "SELECT r.run_id, r.status FROM runs r JOIN run_tags t ON t.run_id = r.run_id"
            " WHERE t.key = 'dagster/backfill'"
        ).fetchall()
    # Four hours fit in one run of the policy's HOURS_PER_RUN.
    assert [status for _, status in backfill_runs] == ["SUCCESS"]
    expected = {e["id"] for h in HOURS for e in fixture_events(f"2021-07-21-{h}.json.gz")}
    with duckdb.connect(str(work / "data" / "warehouse.duckdb"), read_only=True) as conn:
        stored = dict(
            conn.execute("SELECT poll_id, count(*) FROM raw_events GROUP BY 1").fetchall()
        )
        hours = conn.execute("SELECT count(*) FROM archive_hours").fetchall()[0][0]
    assert sum(stored.values()) == len(expected)
    assert set(stored) == {f"gharchive:2021-07-21-{h}" for h in HOURS}
    assert hours == len(HOURS)


@pytest.mark.parametrize(
    ("first", "last", "named"),
    [
        ("2021-07-21-06", "2021-07-21-09:00", "first hour"),
        ("2021-07-21-06:00", "tomorrow", "last hour"),
        ("2021-07-21-09:00", "2021-07-21-06:00", "comes before"),
        ("2010-01-01-00:00", "2010-01-01-05:00", "before the first partition"),
    ],
)
def test_a_bad_range_is_refused_naming_what_is_wrong(first: str, last: str, named: str) -> None:
    with pytest.raises(archive_backfill.BackfillError, match=named):
        archive_backfill.parse_range(first, last)


def test_an_unreachable_webserver_is_a_clear_error() -> None:
    done = _cli(
        "2021-07-21-06:00",
        "2021-07-21-07:00",
        "--url",
        f"http://127.0.0.1:{free_port()}",
        env=base_env(),
    )
    assert done.returncode == 2
    assert "cannot reach the Dagster webserver" in done.stderr and "dagster dev" in done.stderr
