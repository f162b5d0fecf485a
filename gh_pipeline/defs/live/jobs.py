import dagster as dg

from gh_pipeline.defs.warehouse.keys import RAW_EVENTS

POLL_JOB_NAME = "poll_github_events"
POLL_TAG = "gh_pipeline/poll"

# A run in any of these states may still make requests or write the warehouse.
IN_FLIGHT_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

# One process per poll: the ops run in order inside it, so the tick pays Python start-up once and
# DuckDB sees a single writer.
poll_job = dg.define_asset_job(
    name=POLL_JOB_NAME,
    # Without their checks: nine check evaluations per poll run were stored three times each
    # (the run's log, the asset index, asset_check_executions), a third of a poll run's Dagster
    # storage. The data_quality_checks job runs them all every 15 minutes.
    selection=dg.AssetSelection.assets(RAW_EVENTS).downstream().without_checks(),
    executor_def=dg.in_process_executor,
    tags={POLL_TAG: "true"},
    # The run's console copy of its events (DEBUG by default) lands in the compute logs: ~13 kB a
    # poll run of lines the event log already holds. INFO keeps warnings and the poll summary.
    config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    description="Poll GitHub /events once and refresh the filtered and metric tables.",
)
