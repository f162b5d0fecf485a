from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import httpx
from pydantic import Field

from gh_pipeline import settings
from gh_pipeline.archive.bulk_load import load_hour_file, stored_from_hour
from gh_pipeline.archive.eras import era_of
from gh_pipeline.archive.fetch import (
    ArchiveDownloadError,
    ArchiveNotPublished,
    download_dir,
    download_hour,
    make_client,
)
from gh_pipeline.archive.hours import PARTITION_KEY_FORMAT, ArchiveHour
from gh_pipeline.defs.warehouse.keys import GHARCHIVE_HOURLY, INGEST_GROUP
from gh_pipeline.defs.warehouse.resources import WAREHOUSE_POOL, PipelineStorage, Warehouse, env_or

GHARCHIVE_RESOURCE_KEY = "gharchive"

# One partition per GH Archive hour, keys like 2021-07-21-06:00 (UTC), from $GHARCHIVE_START up to
# the last complete hour.
GHARCHIVE_PARTITIONS = dg.HourlyPartitionsDefinition(
    start_date=settings.gharchive_start().strftime(PARTITION_KEY_FORMAT), timezone="UTC"
)


class GHArchiveResource(dg.ConfigurableResource):
    """GH Archive's hourly files: data.gharchive.org, or a mirror or test server ($GHARCHIVE_URL)."""

    base_url: str = settings.DEFAULT_GHARCHIVE_URL
    timeout_s: float = Field(default=60.0, description="Connect/read timeout per request.")
    full_events: bool = Field(
        default=False,
        description="Keep each whole line in raw_events.event ($GH_PIPELINE_ARCHIVE_FULL_EVENTS).",
    )
    scope: str = Field(
        default=settings.ARCHIVE_SCOPE_ALL,
        description="Store every event of an hour (all) or only the watched repositories' "
        "(watched) ($GH_PIPELINE_ARCHIVE_SCOPE).",
    )
    repos: str = Field(
        default="",
        description="The watched repositories ($GH_PIPELINE_REPOS): the `watched` scope, and "
        "whose per-hour archive coverage is recorded.",
    )

    @property
    def url(self) -> str:
        return settings.gharchive_url(self.base_url)

    def client(self) -> httpx.Client:
        return make_client(self.timeout_s)

    def archive_scope(self) -> settings.ArchiveScope:
        """The scope to load in; ValueError naming the setting when it is unusable."""
        return settings.archive_scope(self.scope, self.repos)


# A backfill of many hours runs as few Dagster runs as sensible: each run loads up to this many
# hours, one download and one transaction per hour (a failed hour loses only itself). Between
# runs live polls get the warehouse again: the runs hold its single pool slot while they load.
HOURS_PER_RUN = 12
# Metadata keys of an hour's materialization that say which events the hour holds.
HOUR_SCOPE = "hour_scope"
HOUR_SCOPE_REPOS = "hour_scope_repos"


class _HourNotPublishedYet(Exception):
    """GH Archive answered 404 for an hour that may still come: nothing to load, not a failure."""


def _load_hour(
    hour: ArchiveHour,
    *,
    gharchive: GHArchiveResource,
    warehouse: Warehouse,
    storage: PipelineStorage,
    client: httpx.Client,
    log: dg.DagsterLogManager,
    scope: settings.ArchiveScope,
) -> dict[str, Any]:
    """Download, verify and load one hour; its materialization metadata. Raises dg.Failure when
    the hour cannot be loaded (then nothing of it is stored)."""
    now = datetime.now(UTC)
    try:
        download = download_hour(client, hour, gharchive.url, download_dir(storage.root))
    except ArchiveNotPublished as exc:
        if hour.not_yet_due(now):
            raise _HourNotPublishedYet(str(exc)) from None
        raise dg.Failure(
            description=f"{exc}. The hour ended at {hour.end.isoformat()}, long enough ago "
            "that GH Archive is missing it rather than late; nothing was loaded.",
            allow_retries=False,
        ) from None
    except ArchiveDownloadError as exc:
        raise dg.Failure(
            description=f"{exc}. Nothing was loaded; materialize the partition again."
        ) from None
    try:
        with warehouse.connect() as conn:
            load = load_hour_file(
                conn,
                download.path,
                hour,
                now=now,
                expected_lines=download.lines,
                keep_event=gharchive.full_events,
                scope=scope,
            )
            stored, rejected_total = stored_from_hour(conn, hour)
    finally:
        download.path.unlink(missing_ok=True)
    stats, coverage = load.stats, load.coverage
    era = era_of(hour.start)
    log.info(
        f"{hour.name}: {stats.received} events in the file, {stats.new} new, "
        f"{stats.duplicates} already stored, {stats.rejected} rejected, "
        f"{stats.skipped_by_scope} of other repositories skipped (scope {scope.name}); "
        f"loaded in {load.seconds:.1f}s ({load.events_per_s:,.0f} events/s); era {era.name}"
    )
    shares: dict[str, float] = {}
    if coverage.live_share_in_archive is not None:
        shares["coverage_live_in_archive_pct"] = round(100 * coverage.live_share_in_archive, 2)
    if coverage.live_events and coverage.archive_share_in_live is not None:
        shares["coverage_archive_in_live_pct"] = round(100 * coverage.archive_share_in_live, 2)
    repo_events: dict[str, Any] = {}
    if load.repo_events:
        # Per watched repository, its events in the hour's file (watched_repo_archive_hours).
        repo_events["watched_repo_events"] = dg.MetadataValue.json(dict(load.repo_events))
    return {
        # The partition's rows: events stored from this hour's file (stable across re-runs).
        "dagster/row_count": stored,
        # This load's scope, and what the hour holds over all its loads: the schedule reloads an
        # hour whose hour_scope lacks events the current scope wants (schedules.py).
        "scope": scope.name,
        HOUR_SCOPE: load.hour_scope,
        HOUR_SCOPE_REPOS: ", ".join(load.hour_scope_repos or ()),
        "lines_read": stats.received,
        "events_stored": stats.new,
        "events_skipped_by_scope": stats.skipped_by_scope,
        **repo_events,
        "url": dg.MetadataValue.url(download.url),
        "era": era.name,
        "era_summary": era.summary,
        "events_in_file": stats.received,
        "new_events": stats.new,
        "already_stored": stats.duplicates,
        "rejected_lines": stats.rejected,
        "rejected_lines_total": rejected_total,
        "coverage_live_events": coverage.live_events,
        "coverage_archive_events": coverage.archive_events,
        "coverage_in_both": coverage.in_both,
        "coverage_live_only": coverage.live_only,
        "coverage_archive_only": coverage.archive_only,
        **shares,
        "download_mb": round(download.compressed_bytes / 1e6, 2),
        "download_s": round(download.seconds, 2),
        "load_s": round(load.seconds, 2),
        "load_method": load.method,
        "load_events_per_s": round(load.events_per_s),
    }


@dg.asset(
    key=GHARCHIVE_HOURLY,
    partitions_def=GHARCHIVE_PARTITIONS,
    group_name=INGEST_GROUP,
    kinds={"github", "duckdb"},
    pool=WAREHOUSE_POOL,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=HOURS_PER_RUN),
    # An hour GH Archive has not published yet is skipped (nothing yielded), not failed.
    output_required=False,
)
def gharchive_hourly(
    context: dg.AssetExecutionContext,
    gharchive: GHArchiveResource,
    warehouse: Warehouse,
    storage: PipelineStorage,
) -> Iterator[dg.MaterializeResult]:
    """One hour of GitHub's public event feed from GH Archive, loaded into raw_events once per id."""
    keys = context.partition_keys
    try:
        scope = gharchive.archive_scope()
    except ValueError as exc:
        raise dg.Failure(description=f"{exc}. Nothing was loaded.", allow_retries=False) from None
    resources = {"gharchive": gharchive, "warehouse": warehouse, "storage": storage, "scope": scope}
    with gharchive.client() as client:
        if len(keys) == 1:
            hour = ArchiveHour.from_partition_key(keys[0])
            try:
                metadata = _load_hour(hour, client=client, log=context.log, **resources)
            except _HourNotPublishedYet as exc:
                context.log.info(f"{exc}: not published yet, nothing loaded; the schedule retries")
                return
            yield dg.MaterializeResult(metadata=metadata)
            return
        # Several hours in one run (a backfill): each hour is recorded as its own partition's
        # materialization with its own metadata the moment it is stored, so a failure later in
        # the run neither hides it nor loads it again when the failed hours are retried.
        failed: dict[str, str] = {}
        for done, key in enumerate(keys, start=1):
            hour = ArchiveHour.from_partition_key(key)
            try:
                metadata = _load_hour(hour, client=client, log=context.log, **resources)
            except _HourNotPublishedYet as exc:
                failed[key] = f"not published yet ({exc})"
                continue
            except dg.Failure as exc:
                failed[key] = exc.description or str(exc)
                context.log.error(f"{hour.name} not loaded: {failed[key]}")
                continue
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=GHARCHIVE_HOURLY, partition=key, metadata=metadata
                )
            )
            context.log.info(f"{done} of {len(keys)} hours done, {len(failed)} failed")
    if failed:
        listed = "; ".join(f"{key}: {why}" for key, why in failed.items())
        raise dg.Failure(
            description=f"{len(failed)} of {len(keys)} hours were not loaded (the other "
            f"{len(keys) - len(failed)} are stored and materialized): {listed}",
            metadata={"failed_hours": sorted(failed)},
        )


@dg.definitions
def gharchive_definitions() -> dg.Definitions:
    # A module with a @dg.definitions function contributes only what that function returns, so the
    # asset is listed here next to the resource it needs.
    return dg.Definitions(
        assets=[gharchive_hourly],
        resources={
            GHARCHIVE_RESOURCE_KEY: GHArchiveResource(
                base_url=env_or(settings.ENV_GHARCHIVE_URL, settings.DEFAULT_GHARCHIVE_URL),
                full_events=settings.archive_full_events(),
                scope=env_or(settings.ENV_ARCHIVE_SCOPE, settings.ARCHIVE_SCOPE_ALL),
                repos=env_or(settings.ENV_REPOS, ""),
            )
        },
    )
