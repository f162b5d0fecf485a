from typing import Any

import altair as alt
import dagster as dg

from gh_pipeline.charts.render import chart_entries

CHART_ENTRY = "chart"


def chart_metadata(chart: alt.TopLevelMixin, name: str = CHART_ENTRY) -> dict[str, Any]:
    """Metadata entries for one chart: the PNG as markdown (shown in the UI) and the Vega-Lite
    spec as JSON. A chart that fails to render becomes a text entry: the table is already
    committed, and a drawing problem must not fail the poll."""
    try:
        entries = chart_entries(name, chart)
    except Exception as exc:  # a chart is decoration; the data it describes is already stored
        dg.get_dagster_logger().warning(f"chart {name!r} not rendered: {exc!r}")
        return {name: dg.MetadataValue.text(f"chart not rendered: {exc}")}
    return {
        name: dg.MetadataValue.md(entries[name]),
        f"{name}_spec": dg.MetadataValue.json(entries[f"{name}_spec"]),
    }
