import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from gh_pipeline import settings
from gh_pipeline.charts import figures
from gh_pipeline.defs.charts.metadata import (
    CHART_DRAWN_AT,
    CHART_ENTRY,
    add_chart,
    chart_due,
    last_chart_drawn_at,
    only_in_materialization,
)
from gh_pipeline.defs.live.resources import GitHubApiResource
from gh_pipeline.defs.warehouse.keys import INGEST_GROUP, RAW_EVENTS
from gh_pipeline.defs.warehouse.resources import (
    WAREHOUSE_POOL,
    PipelineStorage,
    Warehouse,
)
from gh_pipeline.live import ingest, watched
from gh_pipeline.warehouse import catalogue
from gh_pipeline.warehouse.connection import row_count


def _outcome_metadata(outcome: ingest.PollOutcome) -> dict[str, Any]:
    gap = outcome.possible_gap
    return {
        "http_status": outcome.status,
        "pages": outcome.pages,
        "events_received": outcome.received,
        "new_events": outcome.new,
        "duplicates": outcome.duplicates,
        "rejected": outcome.rejected,
        "etag_matched": outcome.etag_matched,
        "reached_known_events": outcome.reached_known,
        "rate_limit_remaining": dg.MetadataValue.int(outcome.rate_limit_remaining)
        if outcome.rate_limit_remaining is not None
        else dg.MetadataValue.text("unknown"),
        "next_poll_at": outcome.next_poll_at.isoformat() if outcome.next_poll_at else "now",
        "next_poll_reason": outcome.next_poll_reason or "",
        "requests": outcome.requests,
        "possible_gap": gap is not None,
        "possible_gap_span": ingest.describe_gap(gap) if gap is not None else "none",
        "landing_file": str(outcome.landing_file) if outcome.landing_file else "none (no events)",
    }


@dg.asset(key=RAW_EVENTS, group_name=INGEST_GROUP, kinds={"github", "duckdb"}, pool=WAREHOUSE_POOL)
def raw_events(
    context: dg.AssetExecutionContext,
    github: GitHubApiResource,
    warehouse: Warehouse,
    storage: PipelineStorage,
) -> dg.MaterializeResult:
    """Every event polled from GitHub's /events feed, stored exactly once per event id."""
    draw = chart_due(context, RAW_EVENTS, now=time.time())
    watch = github.watch_list()
    for warning in watched.budget_warnings(
        repos=watch.repos, errors=watch.errors, authenticated=github.authenticated
    ):
        context.log.warning(warning)
    if watch.repos:
        return _poll_round(context, github, warehouse, storage, watch.repos, draw=draw)
    with github.client() as client, warehouse.connect() as conn:
        outcome = ingest.poll_once(
            client=client, conn=conn, data_dir=storage.root, poll_id=context.run.run_id
        )
        total = row_count(conn, catalogue.RAW_EVENTS)
        history = figures.poll_history_frame(conn) if draw else None
    context.log.info(
        f"poll {outcome.poll_id}: HTTP {outcome.status}, {outcome.pages} page(s), "
        f"{outcome.received} received, {outcome.new} new, {outcome.duplicates} duplicates"
    )
    gap = outcome.possible_gap
    if gap is not None:
        context.log.warning(f"possible gap: {ingest.describe_gap(gap)}")
    return only_in_materialization(
        context,
        {
            "dagster/row_count": total,
            **_outcome_metadata(outcome),
            **_chart_pointer(context, history, storage.charts_dir),
        },
    )


def _poll_round(
    context: dg.AssetExecutionContext,
    github: GitHubApiResource,
    warehouse: Warehouse,
    storage: PipelineStorage,
    repos: tuple[str, ...],
    *,
    draw: bool,
) -> dg.MaterializeResult:
    """The global feed and every watched repository that is due, in one run."""
    with github.client() as client, warehouse.connect() as conn:
        result = watched.poll_round(
            client=client,
            conn=conn,
            data_dir=storage.root,
            run_id=context.run.run_id,
            repos=repos,
        )
        total = row_count(conn, catalogue.RAW_EVENTS)
        history = figures.poll_history_frame(conn) if draw else None
    for feed, outcome in result.outcomes.items():
        context.log.info(
            f"poll {outcome.poll_id} ({feed.path}): HTTP {outcome.status}, {outcome.pages} "
            f"page(s), {outcome.received} received, {outcome.new} new, "
            f"{outcome.duplicates} duplicates"
        )
        if outcome.renamed_to:
            context.log.warning(
                f"{feed.repo} was renamed to {outcome.renamed_to}: its feed is followed there; "
                f"put {outcome.renamed_to} in GH_PIPELINE_REPOS"
            )
    for feed, error in result.errors.items():
        context.log.warning(f"{feed.path}: {error}")
    if result.deferred:
        context.log.warning(
            "rate budget down to its reserve: "
            + ", ".join(f.path for f in result.deferred)
            + " wait for the next round (least recently polled go first)"
        )
    rows = watched.repo_rows(watched.load_states(storage.state_dir, repos), now=datetime.now(UTC))
    if result.global_error is not None:
        context.log.info("watched repositories:\n" + watched.rows_text(rows))
        raise result.global_error
    glob = result.outcomes.get(ingest.GLOBAL_FEED)
    return only_in_materialization(
        context,
        {
            "dagster/row_count": total,
            **(_outcome_metadata(glob) if glob is not None else {"global_feed": "not due"}),
            "watched_repositories": dg.MetadataValue.md(watched.rows_markdown(rows)),
            "repositories_polled": sum(1 for f in result.outcomes if f.repo is not None),
            "repositories_failed": dg.MetadataValue.text(
                "; ".join(f"{f.repo}: {e}" for f, e in result.errors.items() if f.repo) or "none"
            ),
            "repositories_deferred": dg.MetadataValue.text(
                ", ".join(f.repo or "/events" for f in result.deferred) or "none"
            ),
            **_chart_pointer(context, history, storage.charts_dir),
        },
    )


def _chart_pointer(
    context: dg.AssetExecutionContext, history: pd.DataFrame | None, charts_dir: Path
) -> dict[str, dg.MetadataValue]:
    """Draw the poll-history chart on this materialisation, or (between redraws) say where the
    last one is: every poll materialises raw_events, and a chart on each would be most of a
    poll run's storage."""
    if history is not None:
        add_chart(context, figures.poll_history_chart(history), charts_dir)
        return {}
    drawn = last_chart_drawn_at(context.instance, RAW_EVENTS)
    if drawn is None:  # unreachable: chart_due draws when nothing was drawn yet
        return {}
    at = datetime.fromtimestamp(drawn, UTC).isoformat(timespec="seconds")
    minutes = settings.chart_refresh_minutes()
    return {
        CHART_ENTRY: dg.MetadataValue.md(
            f"The poll-history chart is redrawn every {minutes} min; the last one ({at}) is on "
            "an earlier materialisation (Events tab)."
        ),
        CHART_DRAWN_AT: dg.MetadataValue.timestamp(drawn),
    }
