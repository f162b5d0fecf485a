from pathlib import Path

import dagster as dg

from gh_pipeline import settings
from gh_pipeline.archive import hours
from gh_pipeline.defs.warehouse.keys import GHARCHIVE_HOURLY, RAW_EVENTS
from gh_pipeline.defs.warehouse.resources import WAREHOUSE_POOL, PipelineStorage, Warehouse
from gh_pipeline.ops import recovery, retention
from gh_pipeline.warehouse import catalogue, row_count

RETENTION_JOB_NAME = "raw_retention"
# Hourly, so landing files and raw JSON exceed their window by at most an hour (daily runs kept up
# to a day more) and untracked rows are rolled up an hour's worth at a time.
RETENTION_SCHEDULE_NAME = "raw_retention_hourly"
REBUILD_JOB_NAME = "rebuild_warehouse"


class RetentionConfig(dg.Config):
    dry_run: bool = False


class RebuildConfig(dg.Config):
    # Launched from the UI with no config this only reports: replacing the warehouse is a choice.
    dry_run: bool = True


@dg.op(pool=WAREHOUSE_POOL)
def apply_raw_retention(
    context: dg.OpExecutionContext,
    config: RetentionConfig,
    warehouse: Warehouse,
    storage: PipelineStorage,
) -> None:
    """Prune raw JSON and landing files, roll up and delete old untracked live events."""
    # Both read before anything is touched: a bad value fails the run with nothing pruned.
    days = settings.raw_retention_days()
    untracked_days = settings.untracked_retention_days()
    watch = settings.watched_repos()
    for error in watch.errors:
        context.log.warning(error)
    before = retention.disk_usage(storage.root)
    with warehouse.connect() as conn:
        report = retention.apply_retention(
            conn,
            storage.root,
            days=days,
            untracked_days=untracked_days,
            watched=watch.repos,
            dry_run=config.dry_run,
        )
        rows_after = row_count(conn, catalogue.RAW_EVENTS)
    after = retention.disk_usage(storage.root)
    context.log.info(report.summary())
    for kept in report.files_kept_unloaded:
        context.log.warning(f"kept old landing file whose events are not all loaded: {kept}")
    context.log_event(
        dg.AssetObservation(
            asset_key=RAW_EVENTS,
            metadata={
                "retention_days": days if days is not None else "forever",
                "cutoff": report.cutoff.isoformat() if report.cutoff else "none",
                "dry_run": config.dry_run,
                "events_pruned": report.rows_pruned,
                "rejected_lines_pruned": report.rejected_pruned,
                "landing_files_deleted": report.files_deleted,
                "landing_bytes_deleted": report.bytes_deleted,
                "landing_files_kept_unloaded": len(report.files_kept_unloaded),
                "untracked_retention_days": (
                    untracked_days if untracked_days is not None else "forever"
                ),
                "untracked_cutoff": (
                    report.untracked_cutoff.isoformat() if report.untracked_cutoff else "none"
                ),
                "untracked_events_rolled_up": report.untracked_deleted,
                "untracked_events_deleted": 0 if config.dry_run else report.untracked_deleted,
                "untracked_count_cells": report.untracked_hours,
                "untracked_rolled_up_by_type": dict(report.untracked_by_type),
                "dagster/row_count": rows_after,
                "warehouse_bytes_before": before["warehouse_bytes"],
                "warehouse_bytes_after": after["warehouse_bytes"],
                "landing_bytes_after": after["landing_bytes"],
            },
        )
    )


@dg.op(pool=WAREHOUSE_POOL)
def rebuild_warehouse_from_landing(
    context: dg.OpExecutionContext,
    config: RebuildConfig,
    warehouse: Warehouse,
    storage: PipelineStorage,
) -> None:
    """Rebuild the warehouse from landing files and GH Archive (dry_run: only report)."""
    live = Path(warehouse.database)
    # Dagster remembers which archive hours were loaded even when the warehouse cannot say.
    hours = [
        hours.ArchiveHour.from_partition_key(key)
        for key in sorted(context.instance.get_materialized_partitions(GHARCHIVE_HOURLY))
    ]
    if config.dry_run:
        plan = recovery.plan_rebuild(storage.root, warehouse=live, archive_hours=hours)
        context.log.info(plan.summary())
        return
    result = recovery.rebuild(storage.root, warehouse=live, archive_hours=hours)
    context.log.info(result.summary())
    context.log_event(
        dg.AssetObservation(
            asset_key=RAW_EVENTS,
            metadata={
                "rebuilt_from_landing_files": len(result.plan.files),
                "rebuilt_from_archive_hours": len(result.plan.archive_hours),
                "dagster/row_count": result.raw_events,
                "rejected_lines": result.rejected_lines,
                "previous_warehouse": str(result.backup) if result.backup else "none",
            },
        )
    )


@dg.job(
    name=RETENTION_JOB_NAME,
    executor_def=dg.in_process_executor,
    description=(
        "Prune raw JSON payloads and landing files older than the retention period; roll up and"
        " delete untracked live events older than theirs."
    ),
)
def raw_retention_job() -> None:
    apply_raw_retention()


@dg.job(
    name=REBUILD_JOB_NAME,
    executor_def=dg.in_process_executor,
    description=(
        "Rebuild the warehouse from the landing files into a new file and swap it in. "
        "Runs as a dry run unless the config says dry_run: false."
    ),
)
def rebuild_warehouse_job() -> None:
    rebuild_warehouse_from_landing()


raw_retention_schedule = dg.ScheduleDefinition(
    name=RETENTION_SCHEDULE_NAME,
    job=raw_retention_job,
    # Minute 17: away from the housekeeping job (minute 41) and the top of the hour.
    cron_schedule="17 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Hourly retention at minute 17: raw JSON and landing files"
        " (GH_PIPELINE_RAW_RETENTION_DAYS), untracked live events"
        " (GH_PIPELINE_UNTRACKED_RETENTION_DAYS), both default 1 day."
    ),
)
