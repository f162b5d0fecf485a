"""GH Archive backfills into a real `dagster dev`: a range of hours from the command line, then a
whole day from the UI in a real browser. The daemon runs each by the asset's backfill policy
(several hours per run), and every event lands once."""

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import httpx
import pytest
from playwright.sync_api import Page

from gh_pipeline.ops import archive_backfill
from gh_pipeline_tests.support.archive_server import RECORDED_DAY, ArchiveServer, serve_day
from gh_pipeline_tests.support.browser import ARTIFACTS, chromium_browser, ui_page
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
DAY_RANGE = f"[{RECORDED_DAY}-00:00...{RECORDED_DAY}-23:00]"
_BACKFILLS_QUERY = """
{ partitionBackfillsOrError(limit: 10) { __typename
  ... on PartitionBackfills { results { id status numPartitions } } } }
"""


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


def _backfills(url: str) -> dict[str, tuple[str, int]]:
    """{backfill id: (status, partitions)} as the webserver reports them."""
    answer = httpx.post(f"{url}/graphql", json={"query": _BACKFILLS_QUERY}, timeout=30).json()
    results = answer["data"]["partitionBackfillsOrError"]["results"]
    return {b["id"]: (b["status"], int(b["numPartitions"] or 0)) for b in results}


def _launch_day_backfill_in_the_ui(page: Page, url: str) -> None:
    """What a person clicks: the asset's Materialize dialog, every partition (the dialog shows
    only the last 90 days at first), a custom range of the day, Launch backfill."""
    page.goto(f"{url}/assets/gharchive_hourly")
    page.get_by_role("button", name="Materialize").first.click(timeout=120_000)
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Show all partitions").click(timeout=60_000)
    dialog.get_by_role("button", name="Custom").click()
    ranges = dialog.locator("input[type=text]:visible").first
    ranges.fill(DAY_RANGE)
    ranges.press("Enter")
    dialog.get_by_text("24 partitions").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "gharchive-day-backfill-dialog.png"))
    dialog.get_by_role("button", name="Launch backfill").click()
    dialog.wait_for(state="hidden", timeout=60_000)


def test_hours_from_the_command_line_then_a_day_from_the_ui(tmp_path: Path, chromium: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(REPO_ROOT / name, work / name)
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ArchiveServer() as archive, FakeGitHub([], poll_interval=60) as fake:
        day = serve_day(archive)
        env = base_env(GITHUB_API_URL=fake.url, GHARCHIVE_URL=archive.url)
        log = tmp_path / "dagster-dev.log"
        args = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-p", str(port)]
        with running(args, cwd=work, env=env, log=log):
            wait_for(lambda: _up(url), timeout_s=180, what="the Dagster webserver")
            done = _cli(
                f"{RECORDED_DAY}-06:00",
                f"{RECORDED_DAY}-09:00",
                "--url",
                url,
                "--wait",
                "--poll-s",
                "2",
                env=base_env(),
            )
            assert done.returncode == 0, done.stdout + done.stderr + log.read_text()[-3000:]
            assert "4 hours" in done.stdout and "completed" in done.stdout.lower()
            cli_backfills = set(_backfills(url))

            # The whole day from the UI: 20 new hours, and 4 the command line already stored.
            with chromium_browser(chromium) as browser:
                page = ui_page(browser)
                _launch_day_backfill_in_the_ui(page, url)
                wait_for(
                    lambda: len(set(_backfills(url)) - cli_backfills) == 1,
                    timeout_s=60,
                    what="the backfill launched from the UI",
                )
                (day_backfill,) = set(_backfills(url)) - cli_backfills
                wait_for(
                    lambda: _backfills(url)[day_backfill][0] not in ("REQUESTED", "CANCELING"),
                    timeout_s=420,
                    poll_s=3,
                    what=f"backfill {day_backfill} to finish",
                    describe=lambda: log.read_text()[-3000:],
                )
                assert _backfills(url)[day_backfill] == ("COMPLETED_SUCCESS", 24)
                # The backfill's page as the person who launched it sees it.
                page.goto(f"{url}/runs/b/{day_backfill}")
                try:
                    page.get_by_text("Succeeded", exact=True).first.wait_for(timeout=60_000)
                    page.get_by_text(f"{RECORDED_DAY}-00:00").first.wait_for(timeout=10_000)
                finally:
                    page.screenshot(path=str(ARTIFACTS / "gharchive-day-backfill.png"))

    runs_db = work / "data" / "dagster_home" / "storage" / "history" / "runs.db"
    with sqlite3.connect(runs_db) as conn:
        backfill_runs = conn.execute(
            "SELECT t.value, r.status FROM runs r JOIN run_tags t ON t.run_id = r.run_id"
            " WHERE t.key = 'dagster/backfill'"
        ).fetchall()
    runs_of = {b: sorted(s for v, s in backfill_runs if v == b) for b, _ in backfill_runs}
    # Four hours fit in one run of the policy's HOURS_PER_RUN (12); the day takes two.
    assert sorted(runs_of.values()) == [["SUCCESS"], ["SUCCESS", "SUCCESS"]], backfill_runs
    assert runs_of[day_backfill] == ["SUCCESS", "SUCCESS"]

    served_ids = [str(e["id"]) for events in day.values() for e in events]
    assert len(served_ids) == len(set(served_ids))  # the served day has no repeats itself
    with duckdb.connect(str(work / "data" / "warehouse.duckdb"), read_only=True) as conn:
        stored = dict(
            conn.execute("SELECT poll_id, count(*) FROM raw_events GROUP BY 1").fetchall()
        )
        ids = {r[0] for r in conn.execute("SELECT event_id FROM raw_events").fetchall()}
        hours = conn.execute("SELECT count(*) FROM archive_hours").fetchall()[0][0]
    assert ids == set(served_ids)
    # Each hour holds exactly its file's events: the 4 hours backfilled twice add nothing.
    assert stored == {
        f"gharchive:{RECORDED_DAY}-{h}": len(day[f"{RECORDED_DAY}-{h}.json.gz"]) for h in range(24)
    }
    assert hours == 24


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
