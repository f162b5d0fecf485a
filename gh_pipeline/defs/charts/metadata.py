import json
import os
import time
from pathlib import Path
from typing import Any

import altair as alt
import dagster as dg

from gh_pipeline import settings
from gh_pipeline.charts.render import chart_entries
from gh_pipeline.defs.live.jobs import POLL_TAG

CHART_ENTRY = "chart"
# When the chart on an asset's materialisations was last drawn (on every materialisation of an
# asset whose poll runs skip the drawing in between, e.g. raw_events).
CHART_DRAWN_AT = "chart_drawn_at"


def chart_metadata(
    chart: alt.TopLevelMixin, spec_path: Path, name: str = CHART_ENTRY
) -> dict[str, Any]:
    """Metadata entries for one chart: the PNG as markdown (shown in the UI), and the path of
    its Vega-Lite spec, written to `spec_path` (replacing the previous one). A chart that fails
    to render becomes a text entry: the table is already committed, and a drawing problem must
    not fail the poll.

    The spec is a file, not a metadata entry: with its data inlined it is as large as the PNG
    (the poll-history spec ~35 kB), and Dagster keeps every materialisation's metadata twice on
    SQLite; only the latest spec is worth keeping."""
    try:
        entries = chart_entries(name, chart)
    except Exception as exc:  # a chart is decoration; the data it describes is already stored
        dg.get_dagster_logger().warning(f"chart {name!r} not rendered: {exc!r}")
        return {name: dg.MetadataValue.text(f"chart not rendered: {exc}")}
    out: dict[str, Any] = {name: dg.MetadataValue.md(entries[name])}
    try:
        _write_atomically(spec_path, json.dumps(entries[f"{name}_spec"]))
        out[f"{name}_spec"] = dg.MetadataValue.path(str(spec_path))
    except OSError as exc:  # a full or read-only disk: the PNG is still worth recording
        dg.get_dagster_logger().warning(f"chart spec {spec_path} not written: {exc!r}")
        out[f"{name}_spec"] = dg.MetadataValue.text(f"spec not written: {exc}")
    return out


def _write_atomically(path: Path, text: str) -> None:
    """Readers (and a concurrent redraw) see the old spec or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def spec_path(charts_dir: Path, key: dg.AssetKey) -> Path:
    return charts_dir / f"{key.to_user_string().replace('/', '__')}.vl.json"


def last_chart_drawn_at(instance: dg.DagsterInstance, key: dg.AssetKey) -> float | None:
    """When the chart on `key`'s latest materialisation was drawn (None: never, or unknown)."""
    event = instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return None
    value = materialization.metadata.get(CHART_DRAWN_AT)
    return float(value.value) if value is not None else None


def _due(context: dg.AssetExecutionContext, last: float | None, *, now: float) -> bool:
    """The one cadence of charts and downstream materialisations: a poll run records again
    once the last recording (`last`, None: never) is $GH_PIPELINE_CHART_REFRESH_MINUTES old;
    every other run (a materialisation from the UI, an archive hour, a rebuild) always."""
    if POLL_TAG not in context.run.tags or last is None:
        return True
    minutes = settings.chart_refresh_minutes()
    return minutes == 0 or now - last >= minutes * 60


def chart_due(context: dg.AssetExecutionContext, key: dg.AssetKey, *, now: float) -> bool:
    """Whether this run draws `key`'s chart: each chart is 10-40 kB in Dagster's event log
    (twice on SQLite), as much as all of a poll run's other events (see _due)."""
    return _due(context, last_chart_drawn_at(context.instance, key), now=now)


def materialization_due(
    context: dg.AssetExecutionContext, key: dg.AssetKey, *, now: float
) -> tuple[bool, int | None]:
    """Whether this run records a materialisation of `key`, a table without a chart refreshed on
    every poll (the filtered tables), on the charts' cadence (_due); also the row count the
    latest materialisation recorded (None: none recorded)."""
    event = context.instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event is not None else None
    previous = materialization.metadata.get("dagster/row_count") if materialization else None
    rows = int(previous.value) if previous is not None else None
    return _due(context, event.timestamp if event is not None else None, now=now), rows


def add_chart(
    context: dg.AssetExecutionContext,
    chart: alt.TopLevelMixin,
    charts_dir: Path,
    *,
    asset_key: dg.AssetKey | None = None,
) -> None:
    """Put the chart on the asset's materialisation only (`asset_key` in a multi-asset step).
    Metadata returned in a MaterializeResult is stored twice (Dagster copies it into the
    STEP_OUTPUT event too); asset metadata added through the context goes into the
    ASSET_MATERIALIZATION event alone."""
    key = asset_key or context.asset_key
    context.add_asset_metadata(
        {
            **chart_metadata(chart, spec_path(charts_dir, key)),
            CHART_DRAWN_AT: dg.MetadataValue.timestamp(time.time()),
        },
        asset_key=asset_key,
    )


def only_in_materialization(
    context: dg.AssetExecutionContext, metadata: dict[str, Any]
) -> dg.MaterializeResult:
    """A MaterializeResult whose metadata is stored once, in the ASSET_MATERIALIZATION event.
    Metadata passed in a MaterializeResult is copied into the STEP_OUTPUT event as well: for
    raw_events' poll outcome that is ~3.5 kB more on every poll run."""
    context.add_asset_metadata(metadata)
    return dg.MaterializeResult()
