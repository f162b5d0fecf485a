"""Bounded Dagster history: delete finished runs, their event logs and compute logs after a
retention window (failed runs kept longer), never a run that holds an asset's latest
materialisation or observation (of any partition) or a check's latest evaluation."""

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

from gh_pipeline import settings

HOUSEKEEPING_JOB_NAME = "dagster_housekeeping"
HOUSEKEEPING_SCHEDULE_NAME = "dagster_housekeeping_hourly"

SUCCESS_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.CANCELED]
FAILURE_STATUSES = [dg.DagsterRunStatus.FAILURE]
_PAGE = 500


@dataclass
class HousekeepingReport:
    success_cutoff: datetime | None
    failure_cutoff: datetime | None
    dry_run: bool
    deleted: list[str] = field(default_factory=list)
    deleted_failed: list[str] = field(default_factory=list)
    kept_for_latest: list[str] = field(default_factory=list)
    bytes_freed: int = 0

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        at = {
            "finished": self.success_cutoff,
            "failed": self.failure_cutoff,
        }
        windows = ", ".join(
            f"{kind} before {cut.isoformat(timespec='seconds') if cut else 'never (kept forever)'}"
            for kind, cut in at.items()
        )
        return (
            f"{verb} {len(self.deleted)} runs ({len(self.deleted_failed)} of them failed) with "
            f"their event and compute logs, {self.bytes_freed:,} bytes of run files; kept "
            f"{len(self.kept_for_latest)} older runs that hold an asset's latest "
            f"materialisation or a check's latest evaluation ({windows})"
        )


def _latest_asset_run_ids(instance: dg.DagsterInstance) -> set[str]:
    """Runs holding an asset's latest materialisation or observation, or the latest
    materialisation of one of its partitions (the asset pages and partition status read them).
    Compared by run: with SQLite storage a run's own shard numbers its events differently."""
    runs: set[str] = set()
    for record in instance.get_asset_records():
        entry = record.asset_entry
        for event in (entry.last_materialization_record, entry.last_observation_record):
            if event is not None:
                runs.add(event.run_id)
        by_partition = instance.event_log_storage.get_latest_storage_id_by_partition(
            entry.asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION
        )
        ids = sorted(by_partition.values())
        for start in range(0, len(ids), _PAGE):
            found = instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=entry.asset_key, storage_ids=ids[start : start + _PAGE]
                ),
                limit=_PAGE,
            )
            runs.update(r.run_id for r in found.records)
    return runs


def _latest_check_run_ids(
    instance: dg.DagsterInstance, check_keys: Iterable[dg.AssetCheckKey]
) -> set[str]:
    keys = list(check_keys)
    if not keys:
        return set()
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    return {execution.run_id for execution in latest.values() if execution is not None}


def _finished_before(
    instance: dg.DagsterInstance, statuses: list[dg.DagsterRunStatus], cutoff: datetime
) -> Iterator[dg.DagsterRun]:
    cursor = None
    while True:
        runs = instance.get_runs(
            filters=dg.RunsFilter(statuses=statuses, created_before=cutoff),
            cursor=cursor,
            limit=_PAGE,
        )
        yield from runs
        if len(runs) < _PAGE:
            return
        cursor = runs[-1].run_id


def _run_files(instance: dg.DagsterInstance, run_id: str) -> list[Path]:
    """The files only this run uses: its SQLite event-log shard and its compute-log folder
    (other storages keep a run's events in shared tables; deleting the rows is all there is)."""
    files: list[Path] = []
    events = instance.event_log_storage
    if isinstance(events, SqliteEventLogStorage):
        shard = Path(events.path_for_shard(run_id))
        files += [shard, Path(f"{shard}-wal"), Path(f"{shard}-shm")]
    logs = instance.compute_log_manager
    if isinstance(logs, LocalComputeLogManager):
        files.append(Path(logs._base_dir) / run_id)
    return files


def _delete_check_executions(instance: dg.DagsterInstance, run_id: str) -> None:
    """Dagster's delete_run removes a run's events but not its rows in asset_check_executions
    (each with a copy of its evaluation event, ~1.4 kB): without this, the 9 checks of every
    15-minute quality run would stay in the asset index forever (~1.2 MB a day)."""
    events = instance.event_log_storage
    if not isinstance(events, SqlEventLogStorage):
        return
    with events.index_connection() as conn:
        conn.execute(
            AssetCheckExecutionsTable.delete().where(AssetCheckExecutionsTable.c.run_id == run_id)
        )


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def housekeep(
    instance: dg.DagsterInstance,
    *,
    success_cutoff: datetime | None,
    failure_cutoff: datetime | None,
    check_keys: Iterable[dg.AssetCheckKey] = (),
    dry_run: bool = False,
) -> HousekeepingReport:
    """Delete runs that finished (SUCCESS/CANCELED) and were created before `success_cutoff`, or
    failed and were created before `failure_cutoff` (None: keep them), with their event logs
    and compute logs; keep any that holds an asset's latest materialisation or observation, a
    partition's latest materialisation or a check's latest evaluation."""
    report = HousekeepingReport(success_cutoff, failure_cutoff, dry_run)
    protected = _latest_asset_run_ids(instance) | _latest_check_run_ids(instance, check_keys)
    for statuses, cutoff in (
        (SUCCESS_STATUSES, success_cutoff),
        (FAILURE_STATUSES, failure_cutoff),
    ):
        if cutoff is None:
            continue
        for run in list(_finished_before(instance, statuses, cutoff)):
            if run.run_id in protected:
                report.kept_for_latest.append(run.run_id)
                continue
            files = _run_files(instance, run.run_id)
            report.bytes_freed += sum(_size(f) for f in files)
            report.deleted.append(run.run_id)
            if run.status == dg.DagsterRunStatus.FAILURE:
                report.deleted_failed.append(run.run_id)
            if dry_run:
                continue
            instance.delete_run(run.run_id)
            _delete_check_executions(instance, run.run_id)
            for path in files:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            if isinstance(instance.event_log_storage, SqliteEventLogStorage):
                # The storage remembers which shards it created tables in; a later read of the
                # deleted run in this process must create a fresh (empty) shard, not fail.
                instance.event_log_storage._initialized_dbs.discard(run.run_id)
    return report


def cutoffs(now: datetime) -> tuple[datetime | None, datetime | None]:
    """The creation times before which finished and failed runs go, from the settings."""
    days, failed_days = settings.run_retention_days(), settings.run_retention_days(failed=True)
    return (
        now - timedelta(days=days) if days is not None else None,
        now - timedelta(days=failed_days) if failed_days is not None else None,
    )


def _check_keys() -> set[dg.AssetCheckKey]:
    # The op's context has the repository only when launched from a code location; the
    # definitions themselves always know their checks.
    from gh_pipeline.definitions import defs

    return set(defs().resolve_asset_graph().asset_check_keys)


class HousekeepingConfig(dg.Config):
    dry_run: bool = False


@dg.op
def delete_old_runs(context: dg.OpExecutionContext, config: HousekeepingConfig) -> dg.Output[None]:
    """Delete runs past GH_PIPELINE_RUN_RETENTION_DAYS / GH_PIPELINE_FAILED_RUN_RETENTION_DAYS."""
    success_cutoff, failure_cutoff = cutoffs(datetime.now(UTC))
    report = housekeep(
        context.instance,
        success_cutoff=success_cutoff,
        failure_cutoff=failure_cutoff,
        check_keys=_check_keys(),
        dry_run=config.dry_run,
    )
    context.log.info(report.summary())
    return dg.Output(
        None,
        metadata={
            "dry_run": config.dry_run,
            "runs_deleted": len(report.deleted),
            "failed_runs_deleted": len(report.deleted_failed),
            "runs_kept_for_latest_events": len(report.kept_for_latest),
            "run_file_bytes_freed": report.bytes_freed,
            "finished_runs_created_before": report.success_cutoff.isoformat()
            if report.success_cutoff
            else "kept forever",
            "failed_runs_created_before": report.failure_cutoff.isoformat()
            if report.failure_cutoff
            else "kept forever",
            "deleted_run_ids": dg.MetadataValue.json(report.deleted[:200]),
        },
    )


@dg.job(
    name=HOUSEKEEPING_JOB_NAME,
    executor_def=dg.in_process_executor,
    description=(
        "Delete old runs with their event logs and compute logs (GH_PIPELINE_RUN_RETENTION_DAYS, "
        "failed runs GH_PIPELINE_FAILED_RUN_RETENTION_DAYS), keeping every asset's latest "
        "materialisation."
    ),
)
def housekeeping_job() -> None:
    delete_old_runs()


housekeeping_schedule = dg.ScheduleDefinition(
    name=HOUSEKEEPING_SCHEDULE_NAME,
    job=housekeeping_job,
    cron_schedule="41 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: delete runs past the run retention window (Dagster keeps them forever).",
)
