"""A warehouse built the way the pipeline builds it, for the reader tests: real recorded events go
through raw.load_ndjson, then the real filtered and metric Dagster assets run and publish the
Parquet snapshot."""

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from gh_pipeline import settings as gh_settings
from gh_pipeline import warehouse
from gh_pipeline.defs.warehouse import keys as asset_keys
from gh_pipeline.warehouse import raw
from gh_pipeline_tests.support.fake_github import load_recorded, recorded_2019_feed

DUCKDB_FIXTURE = "repo-events-duckdb-2023-page01.json"
DOWNSTREAM_OF_RAW = [
    asset_keys.WATCH_EVENTS,
    asset_keys.PULL_REQUEST_EVENTS,
    asset_keys.ISSUES_EVENTS,
    asset_keys.PR_INTERVALS,
    asset_keys.EVENT_COUNTS,
    asset_keys.REPO_PR_COUNTS,
]


def fixture_events() -> list[dict[str, Any]]:
    """duckdb/duckdb's 100 events of April 2023 plus the 155 distinct 2019 /events events."""
    return load_recorded(DUCKDB_FIXTURE) + recorded_2019_feed()


def build_warehouse(data_dir: Path, events: list[dict[str, Any]]) -> None:
    """Load `events` into a fresh warehouse and run the real filtered + metric assets."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ndjson = data_dir.parent / f"{data_dir.name}-events.ndjson"
    ndjson.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    conn = warehouse.connect(gh_settings.warehouse_path(data_dir))
    try:
        stats = raw.load_ndjson(conn, ndjson, poll_id="fixture", source="fixture")
    finally:
        conn.close()
    assert stats.new == len({str(e["id"]) for e in events})
    with pytest.MonkeyPatch.context() as mp:
        # The resources take the data directory from the environment, at load and at run time.
        mp.setenv(gh_settings.ENV_DATA_DIR, str(data_dir))
        from gh_pipeline.definitions import defs

        job = defs().resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            asset_selection=DOWNSTREAM_OF_RAW, instance=dg.DagsterInstance.ephemeral()
        )
    assert result.success
