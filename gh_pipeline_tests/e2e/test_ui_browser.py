"""The charts as a person sees them: the real Dagster webserver on a pipeline that has
materialised, each asset page opened in Debian's Chromium driven by Playwright.

Screenshots land in gh_pipeline_tests/artifacts/ (git-ignored) for a person to look at.
"""

import re
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

from gh_pipeline_tests.support.browser import ARTIFACTS, chromium_browser, ui_page
from gh_pipeline_tests.support.dagster_process import (
    BIN,
    REPO_ROOT,
    base_env,
    free_port,
    running,
    wait_for,
)
from gh_pipeline_tests.support.fake_github import (
    FakeGitHub,
    load_recorded,
    recorded_2019_feed,
    redate,
    trim_event,
)

pytestmark = pytest.mark.timeout(600)

# Asset → the title its chart carries (the PNG's alt text).
CHART_TITLES = {
    "event_counts": "Tracked events in each look-back window",
    "pr_intervals": "Time between opened pull requests",
    "repo_pr_counts": "Top 20 repositories by pull-request events",
    "raw_events": "Events stored per poll: new by type vs duplicates",
}


def _write_instance_yaml(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(
        f"""\
storage:
  sqlite:
    base_dir: {home / "storage"}
local_artifact_storage:
  module: dagster._core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: {home}
compute_logs:
  module: dagster._core.storage.local_compute_log_manager
  class: LocalComputeLogManager
  config:
    base_dir: {home / "logs"}
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
""",
        encoding="utf-8",
    )


def _materialise_two_polls(home: Path, fake: FakeGitHub, newer: list[dict]) -> None:
    """Two runs of the poll job through the persistent instance the webserver reads."""
    import gh_pipeline.defs as defs_package
    from gh_pipeline.defs.live.jobs import POLL_JOB_NAME

    defs = dg.load_from_defs_folder(path_within_project=Path(defs_package.__file__).parent)
    job = defs.resolve_job_def(POLL_JOB_NAME)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert job.execute_in_process(instance=instance).success
        fake.push(newer)  # the second poll sees new events and duplicates
        assert job.execute_in_process(instance=instance).success


def _server_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


_LOCATION_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def _location_loaded(url: str) -> bool:
    """True once the code location has loaded; a load error fails the test with its message
    (the asset pages would otherwise show the assets as external, without metadata)."""
    try:
        answer = httpx.post(f"{url}/graphql", json={"query": _LOCATION_QUERY}, timeout=5)
    except httpx.HTTPError:
        return False
    if answer.status_code != 200:
        return False
    entries = answer.json()["data"]["workspaceOrError"].get("locationEntries", [])
    if not entries or any(e["loadStatus"] != "LOADED" for e in entries):
        return False
    errors = [
        f"{e['name']}: {e['locationOrLoadError']['message']}"
        for e in entries
        if e["locationOrLoadError"]["__typename"] == "PythonError"
    ]
    assert not errors, f"code location failed to load: {errors}"
    return True


def _open_chart(page: Page, base_url: str, asset: str) -> dict:
    page.goto(f"{base_url}/assets/{asset}")
    row = page.locator("tr").filter(has=page.locator("td", has_text=re.compile(r"^\s*chart\s*$")))
    try:
        row.get_by_text("[Show Markdown]").click(timeout=120_000)
    except PlaywrightError:
        # What the page showed instead, for the person reading the failure.
        page.screenshot(path=str(ARTIFACTS / f"{asset}-failed.png"), full_page=True)
        raise
    dialog = page.get_by_role("dialog")
    image = dialog.locator("img[src^='data:image/png;base64,']")
    image.wait_for(timeout=30_000)
    # decode() rejects for a broken image; afterwards the natural size is the PNG's own.
    image.evaluate("img => img.decode()")
    return image.evaluate(
        "img => ({naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,"
        " shownWidth: img.getBoundingClientRect().width, alt: img.alt})"
    )


_LINEAGE_QUERY = "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }"


def _check_lineage(page: Page, base_url: str) -> None:
    """The lineage the UI draws: raw → filtered → metrics, as data and on the global graph."""
    answer = httpx.post(f"{base_url}/graphql", json={"query": _LINEAGE_QUERY}, timeout=30)
    nodes = {
        n["assetKey"]["path"][-1]: (n["groupName"], {d["path"][-1] for d in n["dependencyKeys"]})
        for n in answer.json()["data"]["assetNodes"]
    }
    assert nodes["raw_events"][0] == "ingest"
    for name in ("watch_events", "pull_request_events", "issues_events"):
        assert nodes[name][0] == "filtered" and "raw_events" in nodes[name][1], nodes[name]
    assert nodes["pr_intervals"] == ("metrics", {"pull_request_events"})
    assert nodes["repo_pr_counts"] == ("metrics", {"pull_request_events"})
    assert nodes["event_counts"] == (
        "metrics",
        {"watch_events", "pull_request_events", "issues_events"},
    )

    page.goto(f"{base_url}/asset-groups")
    lefts = {}
    for group in ("ingest", "filtered", "metrics"):
        matches = page.get_by_text(group, exact=True)
        matches.last.wait_for(timeout=60_000)
        # The sidebar lists the groups too; the graph node is the right-most match.
        lefts[group] = max(
            box["x"] for i in range(matches.count()) if (box := matches.nth(i).bounding_box())
        )
    page.screenshot(path=str(ARTIFACTS / "lineage.png"))
    assert lefts["ingest"] < lefts["filtered"] < lefts["metrics"], lefts


def test_charts_render_in_the_dagster_ui(tmp_path: Path, chromium: Path) -> None:
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    _write_instance_yaml(home)
    now = datetime.now(UTC)
    # Real events: the 2019 feed re-dated into the last hour so the look-back windows fill,
    # then duckdb/duckdb's 2023 page (its real timestamps: three opened PRs, two intervals).
    older = redate([trim_event(e) for e in recorded_2019_feed()], newest=now, step_s=20)
    newer = [trim_event(e) for e in load_recorded("repo-events-duckdb-2023-page01.json")]
    ARTIFACTS.mkdir(exist_ok=True)

    with FakeGitHub(older, poll_interval=1) as fake, pytest.MonkeyPatch.context() as mp:
        env = {
            "DAGSTER_HOME": str(home),
            "GH_PIPELINE_DATA_DIR": str(data),
            "GITHUB_API_URL": fake.url,
            # Both polls draw raw_events' chart (by default a poll run redraws it only every
            # 10 min; gh_pipeline_tests/defs/test_poll_run_storage.py covers that default).
            "GH_PIPELINE_CHART_REFRESH_MINUTES": "0",
        }
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("GITHUB_TOKEN", raising=False)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        command = [
            str(BIN / "dagster-webserver"),
            *("-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)),
        ]
        log = tmp_path / "webserver.log"
        # Create the instance's SQLite schemas before the webserver starts, or both processes
        # race to create them ("table alembic_version already exists").
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.get_runs_count()
            instance.get_event_records(
                dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION),
                limit=1,
            )
        with running(command, cwd=REPO_ROOT, env=base_env(**env), log=log) as server:
            # The webserver boots while the runs materialise (both take a while on 2 cores).
            _materialise_two_polls(home, fake, newer)
            wait_for(
                lambda: server.poll() is None and _server_up(base_url),
                timeout_s=180,
                what=f"dagster-webserver on {base_url} (log: {log})",
            )
            wait_for(lambda: _location_loaded(base_url), timeout_s=180, what="the code location")
            assert server.poll() is None, log.read_text(encoding="utf-8")

            with chromium_browser(chromium) as browser:
                for scheme in ("light", "dark"):
                    page = ui_page(browser, color_scheme=scheme)
                    assets = CHART_TITLES if scheme == "light" else ["event_counts"]
                    for asset in assets:
                        shown = _open_chart(page, base_url, asset)
                        page.screenshot(path=str(ARTIFACTS / f"{asset}-{scheme}.png"))
                        page.get_by_role("dialog").screenshot(
                            path=str(ARTIFACTS / f"{asset}-{scheme}-dialog.png")
                        )
                        assert shown["naturalWidth"] >= 600, (asset, shown)
                        assert shown["naturalHeight"] > 0, (asset, shown)
                        assert shown["shownWidth"] > 0, (asset, shown)
                        assert shown["alt"] == CHART_TITLES[asset], (asset, shown)
                        page.keyboard.press("Escape")
                    if scheme == "light":
                        _check_lineage(page, base_url)
                    page.context.close()
