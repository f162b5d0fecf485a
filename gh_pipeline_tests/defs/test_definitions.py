import tomllib
from pathlib import Path

import dagster as dg
import yaml

from gh_pipeline.definitions import defs

REPO = Path(__file__).resolve().parents[2]
RAW, FILTERED, METRICS = (
    "raw_events",
    {"watch_events", "pull_request_events", "issues_events"},
    {"pr_intervals", "event_counts", "repo_pr_counts"},
)


def _graph() -> dg.Definitions:
    return defs()


def test_lineage_is_raw_then_filtered_then_metrics() -> None:
    graph = _graph().resolve_asset_graph()
    parents = {
        key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    for name in FILTERED:
        assert RAW in parents[name]
    assert parents["pr_intervals"] == {"pull_request_events"}
    assert parents["repo_pr_counts"] == {"pull_request_events"}
    assert parents["event_counts"] == FILTERED


def test_every_asset_is_described_grouped_and_kinded() -> None:
    graph = _graph().resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        assert node.group_name and node.group_name != "default", key
        assert node.kinds, key


def test_sensor_runs_by_default_and_targets_the_poll_job() -> None:
    d = _graph()
    sensor = d.resolve_sensor_def("github_events_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.description
    job = d.resolve_job_def("poll_github_events")
    selected = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert selected >= {RAW} | FILTERED | METRICS


def test_pyproject_and_workspace_name_the_same_module() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text(encoding="utf-8"))
    module = workspace["load_from"][0]["python_module"]["module_name"]
    assert project["tool"]["dagster"]["module_name"] == module
    assert project["tool"]["dg"]["project"]["code_location_target_module"] == module


def test_instance_config_serialises_warehouse_writers_and_persists_under_data() -> None:
    config = yaml.safe_load((REPO / "dagster.yaml").read_text(encoding="utf-8"))
    assert config["concurrency"]["pools"]["default_limit"] == 1
    storage = config["storage"]["custom"]
    assert (storage["module"], storage["class"]) == (
        "gh_pipeline.defs.ops.instance_storage",
        "SmallShardSqliteStorage",
    )
    assert storage["config"]["base_dir"].startswith("data/")
    graph = _graph().resolve_asset_graph()
    pools = {frozenset(graph.get(k).pools or ()) for k in graph.get_all_asset_keys()}
    assert pools == {frozenset({"duckdb_warehouse"})}
