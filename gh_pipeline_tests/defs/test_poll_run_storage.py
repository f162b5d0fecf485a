"""Poll runs stay small in Dagster's storage while every metric asset keeps a chart: the real poll
job on a persistent SQLite instance, checked through Dagster's own APIs."""

import base64
import json
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from gh_pipeline import settings
from gh_pipeline.definitions import defs
from gh_pipeline.defs.live.jobs import POLL_JOB_NAME
from gh_pipeline_tests.support.dagster_process import REPO_ROOT
from gh_pipeline_tests.support.fake_github import FakeGitHub, numbered_feed, trim_event

METRIC_ASSETS = ("pr_intervals", "event_counts", "repo_pr_counts")
FILTERED_ASSETS = ("watch_events", "pull_request_events", "issues_events")
PNG_PREFIX = "data:image/png;base64,"


def _png(markdown: str) -> bytes:
    assert PNG_PREFIX in markdown, markdown[:200]
    png = base64.b64decode(markdown.split(PNG_PREFIX, 1)[1].rstrip(")"), validate=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return png


def _latest_metadata(instance: dg.DagsterInstance, name: str) -> dict[str, dg.MetadataValue]:
    event = instance.get_latest_materialization_event(dg.AssetKey(name))
    assert event is not None and event.asset_materialization is not None, name
    return dict(event.asset_materialization.metadata)


def _events_with_png(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        f"{record.event_log_entry.dagster_event_type.value}:{record.event_log_entry.step_key}"
        for record in instance.get_records_for_run(run_id).records
        if PNG_PREFIX in dg.serialize_value(record.event_log_entry)
    ]


@pytest.fixture
def instance(tmp_path: Path) -> dg.DagsterInstance:
    # dagster.yaml's storage (SQLite, small run shards) in a private directory.
    home = tmp_path / "dagster_home"
    home.mkdir()
    storage = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text(encoding="utf-8"))["storage"]
    storage["custom"]["config"]["base_dir"] = str(home / "storage")
    (home / "dagster.yaml").write_text(
        yaml.safe_dump({"storage": storage, "telemetry": {"enabled": False}}), encoding="utf-8"
    )
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def test_poll_runs_between_redraws_store_no_chart_and_downstream_assets_keep_theirs(
    data_dir: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(settings.ENV_CHART_REFRESH_MINUTES, raising=False)
    with FakeGitHub([trim_event(e) for e in numbered_feed(150, serial=0)], poll_interval=1) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        job = defs().resolve_job_def(POLL_JOB_NAME)
        runs = []
        for serial in (1, 2, 3):
            fake.push([trim_event(e) for e in numbered_feed(40, serial=serial)])
            result = job.execute_in_process(instance=instance)
            assert result.success
            runs.append(result)

        first = {e.asset_key.to_user_string() for e in runs[0].get_asset_materialization_events()}
        assert first == {*METRIC_ASSETS, *FILTERED_ASSETS, "raw_events"}
        first_rows = {n: _latest_metadata(instance, n)["dagster/row_count"].value for n in first}
        for later in runs[1:]:
            # raw_events materialises on every poll (its poll outcome); the filtered and metric
            # tables are refreshed but record no materialisation until one is due.
            names = {e.asset_key.to_user_string() for e in later.get_asset_materialization_events()}
            assert names == {"raw_events"}
            assert _events_with_png(instance, later.run_id) == []
        # Even the run that drew every chart stores each PNG once: in the materialisation, not in
        # the step output as well.
        drawn = _events_with_png(instance, runs[0].run_id)
        assert drawn and all(
            kind == "ASSET_MATERIALIZATION" for kind in (d.split(":")[0] for d in drawn)
        )

        for name in METRIC_ASSETS:
            metadata = _latest_metadata(instance, name)
            assert len(_png(metadata["chart"].value)) > 1000, name
            assert "chart_drawn_at" in metadata
            spec = Path(metadata["chart_spec"].value)
            assert spec == data_dir / "charts" / f"{name}.vl.json", name
            assert "vega-lite" in json.loads(spec.read_text(encoding="utf-8"))["$schema"]
        pointer = _latest_metadata(instance, "raw_events")
        assert (
            PNG_PREFIX not in pointer["chart"].value
            and "redrawn every 10 min" in pointer["chart"].value
        )
        assert pointer["chart_drawn_at"].value == _drawn_at(instance, runs[0].run_id, "raw_events")

        # The tables are current even though they did not materialise.
        with duckdb.connect(str(settings.warehouse_path(data_dir)), read_only=True) as conn:
            stored = conn.execute("SELECT count(*) FROM raw_events").fetchone()[0]
            assert stored == 150 + 3 * 40
            pr_rows = conn.execute("SELECT sum(pr_events) FROM repo_pr_counts").fetchone()[0]
            prs = conn.execute("SELECT count(*) FROM pull_request_events").fetchone()[0]
            assert pr_rows == prs > 0
            tracked = {
                n: conn.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in FILTERED_ASSETS
            }
        assert sum(tracked.values()) > sum(first_rows[n] for n in FILTERED_ASSETS)

        # With redrawing on every poll (0), the next poll draws every chart again.
        monkeypatch.setenv(settings.ENV_CHART_REFRESH_MINUTES, "0")
        before = time.time()
        fake.push([trim_event(e) for e in numbered_feed(40, serial=4)])
        assert job.execute_in_process(instance=instance).success
        for name in (*METRIC_ASSETS, "raw_events"):
            metadata = _latest_metadata(instance, name)
            _png(metadata["chart"].value)
            assert metadata["chart_drawn_at"].value >= before, name
        # The filtered tables record again, with what the polls in between added.
        with duckdb.connect(str(settings.warehouse_path(data_dir)), read_only=True) as conn:
            for name in FILTERED_ASSETS:
                rows = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                metadata = _latest_metadata(instance, name)
                assert metadata["dagster/row_count"].value == rows, name
                since = metadata["rows_added_since_last_materialization"].value
                assert since == rows - first_rows[name], name


def _drawn_at(instance: dg.DagsterInstance, run_id: str, name: str) -> float:
    records = instance.fetch_materializations(dg.AssetKey(name), limit=100).records
    (record,) = [r for r in records if r.run_id == run_id]
    return record.asset_materialization.metadata["chart_drawn_at"].value


def test_chart_refresh_setting_rejects_nonsense() -> None:
    assert settings.chart_refresh_minutes("") == settings.DEFAULT_CHART_REFRESH_MINUTES
    assert settings.chart_refresh_minutes(" 0 ") == 0
    for bad in ("-1", "ten", "1.5"):
        with pytest.raises(ValueError, match=settings.ENV_CHART_REFRESH_MINUTES):
            settings.chart_refresh_minutes(bad)
