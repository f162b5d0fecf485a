"""Charts: Altair figures of the metric tables and the poll history (`figures`), rendered to a
PNG and a Vega-Lite spec for Dagster's metadata (`render`)."""
