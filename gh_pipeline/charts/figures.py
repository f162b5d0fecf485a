"""Altair charts of the metric tables and of the poll history (no Dagster import).

Chart builders take pandas DataFrames shaped like the warehouse tables and return Altair charts;
the `*_frame` readers fetch those DataFrames from DuckDB. Rendering to PNG lives in
`gh_pipeline.charts.render`. Every builder answers an empty table with a "no data yet" chart
instead of an error, because the first materialisations of a fresh pipeline have nothing to show.
"""

from collections.abc import Sequence
from itertools import pairwise

import altair as alt
import duckdb
import pandas as pd

from gh_pipeline.live import poll_log
from gh_pipeline.model import metrics
from gh_pipeline.warehouse.catalogue import TRACKED_EVENT_TYPES

CHART_WIDTH = 640
BAR_STEP = 22  # pixels per bar row in horizontal bar charts
NO_DATA_TEXT = "No data yet"
TOP_REPOS = 20
TOP_INTERVAL_REPOS = 15
# Caps keep the inline data (and so the Vega-Lite spec entry) far below Dagster's 1 MB budget.
MAX_POLLS = 200
MAX_INTERVAL_POINTS = 500

OTHER_TYPES = "other types"
DUPLICATES = "duplicates (already stored)"
TYPE_COLORS: dict[str, str] = {
    "WatchEvent": "#f58518",
    "PullRequestEvent": "#4c78a8",
    "IssuesEvent": "#54a24b",
    OTHER_TYPES: "#b279a2",
}
DUPLICATE_COLOR = "#c7c7c7"
MEAN_COLOR = "#4c78a8"
MEDIAN_COLOR = "#f58518"

# Units for intervals: (name, abbreviation, seconds); the largest that fits the data is used.
_UNITS: tuple[tuple[str, str, int], ...] = (
    ("days", "d", 86_400),
    ("hours", "h", 3_600),
    ("minutes", "min", 60),
    ("seconds", "s", 1),
)


def _styled(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """Explicit white background and dark text, so the PNG reads the same on the UI's light
    and dark themes (a transparent PNG would put dark text on a dark page)."""
    return (
        chart.configure(background="white", padding=16)
        .configure_title(
            fontSize=16,
            anchor="start",
            color="#1f2328",
            subtitleColor="#57606a",
            subtitleFontSize=12,
        )
        .configure_axis(
            labelFontSize=12, titleFontSize=13, labelColor="#1f2328", titleColor="#1f2328"
        )
        .configure_legend(
            labelFontSize=12, titleFontSize=12, labelColor="#1f2328", titleColor="#1f2328"
        )
        .configure_view(stroke=None)
    )


def no_data_chart(title: str, detail: str = "The table is empty.") -> alt.TopLevelMixin:
    """A placeholder that says "No data yet" in the chart area, with the chart's usual title."""
    frame = pd.DataFrame({"line": [NO_DATA_TEXT, detail], "y": [0, 1]})
    base = alt.Chart(frame).encode(y=alt.Y("y:O", axis=None), text="line:N")
    text = base.mark_text(align="center", baseline="middle", color="#57606a").encode(
        size=alt.condition(alt.datum.y == 0, alt.value(22), alt.value(13))
    )
    chart = text.properties(
        title=alt.Title(title, subtitle="The chart fills in as polls add events."),
        width=CHART_WIDTH,
        height=110,
    )
    return _styled(chart)


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _time_axis(times: pd.Series, title: str) -> alt.Axis:
    """A time axis whose label format suits the span shown (seconds for a few minutes of polls,
    dates once the data covers more than a day), so neighbouring labels never read the same."""
    span_s = (times.max() - times.min()).total_seconds() if len(times) else 0.0
    if span_s <= 600:
        fmt = "%H:%M:%S"
    elif span_s <= 86_400:
        fmt = "%H:%M"
    else:
        fmt = "%b %d %H:%M"
    return alt.Axis(title=title, format=fmt, labelAngle=-30, labelOverlap="greedy")


def _window_label(minutes: int) -> str:
    if minutes % 60 == 0:
        return f"last {minutes // 60} h"
    return f"last {minutes} min"


def event_counts_chart(counts: pd.DataFrame) -> alt.TopLevelMixin:
    """Grouped bars: tracked events by type within each look-back window.

    `counts` has the columns of the event_counts table: as_of, window_minutes, event_type,
    event_count.
    """
    title = "Tracked events in each look-back window"
    if counts.empty or int(counts["event_count"].sum()) == 0:
        return no_data_chart(title, "No tracked events in any look-back window yet.")
    frame = counts.copy()
    frame["window_minutes"] = frame["window_minutes"].astype(int)
    frame["event_count"] = frame["event_count"].astype(int)
    frame["window"] = frame["window_minutes"].map(_window_label)
    windows = [_window_label(m) for m in sorted(frame["window_minutes"].unique())]
    # Within each group, types keep one order: most events over the longest window first.
    types = (
        frame.groupby("event_type")["event_count"].sum().sort_values(ascending=False).index.tolist()
    )
    as_of = pd.Timestamp(frame["as_of"].iloc[0]).tz_convert("UTC") if "as_of" in frame else None
    subtitle = f"as of {as_of:%Y-%m-%d %H:%M} UTC" if as_of is not None else ""
    frame = frame[["window", "window_minutes", "event_type", "event_count"]]
    base = alt.Chart(frame).encode(
        x=alt.X("window:N", sort=windows, title="look-back window", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("event_type:N", sort=types),
        y=alt.Y("event_count:Q", title="events (count)"),
    )
    bars = base.mark_bar().encode(
        color=alt.Color(
            "event_type:N",
            sort=types,
            title="event type",
            scale=alt.Scale(domain=types, range=[TYPE_COLORS.get(t, "#888888") for t in types]),
        ),
        tooltip=[
            alt.Tooltip("window:N", title="window"),
            alt.Tooltip("event_type:N", title="type"),
            alt.Tooltip("event_count:Q", title="events"),
        ],
    )
    labels = base.mark_text(dy=-6, fontSize=11, color="#1f2328").encode(text="event_count:Q")
    chart = (bars + labels).properties(
        title=alt.Title(title, subtitle=subtitle), width=CHART_WIDTH, height=300
    )
    return _styled(chart)


def _pick_unit(seconds: Sequence[float] | pd.Series) -> tuple[str, str, int]:
    """The largest unit in which the typical (median) value is at least 1."""
    values = pd.Series(seconds, dtype="float64").dropna()
    typical = float(values.median()) if not values.empty else 0.0
    for unit in _UNITS:
        if typical >= unit[2]:
            return unit
    return _UNITS[-1]


def human_duration(seconds: float) -> str:
    """A duration in its two largest units, e.g. 90 -> '1 min 30 s', 14475 -> '4 h 1 min'."""
    if pd.isna(seconds):
        return "n/a"
    if seconds < 0:
        return "-" + human_duration(-seconds)
    if seconds < 10:
        return f"{seconds:.1f}".rstrip("0").rstrip(".") + " s"
    for (_, big, big_s), (_, small, small_s) in pairwise(_UNITS):
        # Rounded to the smaller unit first, so 3599.9 s reads '1 h', not '59 min 60 s'.
        rounded = round(seconds / small_s) * small_s
        if rounded >= big_s:
            whole, rest = divmod(rounded, big_s)
            part = rest // small_s
            return f"{whole} {big} {part} {small}" if part else f"{whole} {big}"
    return f"{round(seconds)} s"


# Watched repositories (GH_PIPELINE_REPOS): a row's `completeness` says whether it rests on every
# event of the repository ('complete') or on what the global feed happened to show ('sample').
# The column exists only once a repository is watched; without it the charts are unchanged.
COMPLETENESS = "completeness"
COMPLETENESS_NOTE = (
    "solid bars and ✓: complete (watched, no gap); faded: a sample of the global feed"
)


def _has_completeness(frame: pd.DataFrame) -> bool:
    return COMPLETENESS in frame.columns


def _mark_completeness(label: pd.Series, frame: pd.DataFrame) -> pd.Series:
    """The label with a ✓ for complete rows and '(sample)' for the others."""
    complete = frame[COMPLETENESS].fillna("sample").eq("complete")
    return label + complete.map({True: " ✓", False: " (sample)"})


def _completeness_opacity() -> alt.Opacity:
    return alt.Opacity(
        f"{COMPLETENESS}:N",
        title="events",
        scale=alt.Scale(domain=["complete", "sample"], range=[1.0, 0.45]),
        legend=alt.Legend(orient="top"),
    )


def pr_intervals_chart(
    intervals: pd.DataFrame, busiest_gaps: pd.DataFrame | None = None
) -> alt.TopLevelMixin:
    """Mean and median time between opened PRs for the repositories with the most opened PRs,
    above every interval of the busiest repository as a dot with its mean as a dashed line.

    `intervals` has the columns of the pr_intervals table; `busiest_gaps` (from
    `busiest_repo_gaps_frame`) has opened_at and gap_s for the busiest repository.
    """
    title = "Time between opened pull requests"
    measured = intervals[intervals["avg_interval_s"].notna()] if not intervals.empty else intervals
    if measured.empty:
        detail = (
            "The table is empty."
            if intervals.empty
            else "No repository has two opened pull requests yet."
        )
        return no_data_chart(title, detail)
    top = (
        measured.sort_values(["pr_opened", "repo_name"], ascending=[False, True])
        .head(TOP_INTERVAL_REPOS)
        .copy()
    )
    unit_name, _, unit_s = _pick_unit(pd.concat([top["avg_interval_s"], top["median_interval_s"]]))
    top["repo"] = top["repo_name"] + " (" + top["pr_opened"].astype(int).astype(str) + " PRs)"
    marked = _has_completeness(top)
    if marked:
        top["repo"] = _mark_completeness(top["repo"], top)
        top[COMPLETENESS] = top[COMPLETENESS].fillna("sample")
    order = top["repo"].tolist()
    long = top.melt(
        id_vars=["repo", COMPLETENESS] if marked else ["repo"],
        value_vars=["avg_interval_s", "median_interval_s"],
        var_name="measure",
        value_name="seconds",
    )
    long["measure"] = long["measure"].map({"avg_interval_s": "mean", "median_interval_s": "median"})
    long["value"] = long["seconds"] / unit_s
    long["label"] = long["seconds"].map(human_duration)
    base = alt.Chart(long).encode(
        # Each label already names the repository and its opened PRs.
        y=alt.Y("repo:N", sort=order, title=None),
        yOffset=alt.YOffset("measure:N", sort=["mean", "median"]),
        x=alt.X(
            "value:Q",
            title=f"interval between opened PRs ({unit_name})",
            axis=alt.Axis(tickCount=8),
        ),
    )
    bars = base.mark_bar().encode(
        color=alt.Color(
            "measure:N",
            title="statistic",
            scale=alt.Scale(domain=["mean", "median"], range=[MEAN_COLOR, MEDIAN_COLOR]),
        ),
        tooltip=[
            alt.Tooltip("repo:N", title="repository"),
            alt.Tooltip("measure:N"),
            alt.Tooltip("label:N", title="interval"),
        ],
    )
    if marked:
        bars = bars.encode(opacity=_completeness_opacity())
    labels = base.mark_text(align="left", dx=3, fontSize=10, color="#1f2328").encode(text="label:N")
    subtitle = (
        f"Top {_plural(len(top), 'repository', 'repositories')} by opened PRs "
        "(with at least 2): mean and median interval"
    )
    ranking = (bars + labels).properties(
        title=alt.Title(
            title,
            subtitle=[subtitle, COMPLETENESS_NOTE] if marked else subtitle,
        ),
        width=CHART_WIDTH,
        height=alt.Step(BAR_STEP),
    )
    busiest = top.iloc[0]
    detail = _busiest_repo_chart(busiest, busiest_gaps)
    return _styled(alt.vconcat(ranking, detail, spacing=36))


def _busiest_repo_chart(busiest: pd.Series, gaps: pd.DataFrame | None) -> alt.TopLevelMixin:
    repo = str(busiest["repo_name"])
    title = f"Every interval in {repo}, the busiest repository"
    if gaps is None or gaps.empty:
        frame = pd.DataFrame({"line": [f"No intervals loaded for {repo}."]})
        return (
            alt.Chart(frame)
            .mark_text(color="#57606a", fontSize=13)
            .encode(text="line:N")
            .properties(title=title, width=CHART_WIDTH, height=60)
        )
    gaps = gaps.dropna(subset=["gap_s"]).copy()
    mean_s = float(busiest["avg_interval_s"])
    unit_name, _, unit_s = _pick_unit(pd.concat([gaps["gap_s"], pd.Series([mean_s])]))
    gaps["value"] = gaps["gap_s"] / unit_s
    gaps["label"] = gaps["gap_s"].map(human_duration)
    gaps["opened_at"] = pd.to_datetime(gaps["opened_at"], utc=True).dt.tz_localize(None)
    dots = (
        alt.Chart(gaps)
        .mark_circle(size=70, opacity=0.8, color=MEAN_COLOR)
        .encode(
            x=alt.X(
                "opened_at:T",
                scale=alt.Scale(padding=12),
                axis=_time_axis(gaps["opened_at"], "PR opened at (UTC)"),
            ),
            y=alt.Y("value:Q", title=f"interval since previous PR ({unit_name})"),
            tooltip=[
                alt.Tooltip("opened_at:T", title="opened at", format="%Y-%m-%d %H:%M:%S"),
                alt.Tooltip("label:N", title="interval"),
            ],
        )
    )
    mean_frame = pd.DataFrame(
        {"value": [mean_s / unit_s], "label": [f"mean {human_duration(mean_s)}"]}
    )
    mean_rule = (
        alt.Chart(mean_frame)
        .mark_rule(strokeDash=[6, 4], color=MEDIAN_COLOR, strokeWidth=2)
        .encode(y="value:Q")
    )
    mean_label = (
        alt.Chart(mean_frame)
        .mark_text(align="right", dy=-7, x=CHART_WIDTH, color=MEDIAN_COLOR, fontSize=12)
        .encode(y="value:Q", text="label:N")
    )
    return (dots + mean_rule + mean_label).properties(
        title=alt.Title(
            title,
            subtitle=f"{_plural(len(gaps), 'interval')}; dashed line: the mean "
            f"({human_duration(mean_s)})",
        ),
        width=CHART_WIDTH,
        height=240,
    )


def repo_pr_counts_chart(counts: pd.DataFrame) -> alt.TopLevelMixin:
    """Horizontal bars: the top repositories by pull-request events, opened vs other actions.

    `counts` has the columns of the repo_pr_counts table: repo_name, pr_events, pr_opened.
    """
    title = f"Top {TOP_REPOS} repositories by pull-request events"
    if counts.empty:
        return no_data_chart(title)
    top = (
        counts.sort_values(["pr_events", "repo_name"], ascending=[False, True])
        .head(TOP_REPOS)
        .copy()
    )
    marked = _has_completeness(top)
    if marked:
        top["repo_name"] = _mark_completeness(top["repo_name"], top)
        top[COMPLETENESS] = top[COMPLETENESS].fillna("sample")
    order = top["repo_name"].tolist()
    top["opened"] = top["pr_opened"].astype(int)
    top["other actions"] = top["pr_events"].astype(int) - top["opened"]
    long = top.melt(
        id_vars=["repo_name", "pr_events", COMPLETENESS] if marked else ["repo_name", "pr_events"],
        value_vars=["opened", "other actions"],
        var_name="action",
        value_name="events",
    )
    bars = (
        alt.Chart(long)
        .mark_bar()
        .encode(
            y=alt.Y("repo_name:N", sort=order, title="repository"),
            x=alt.X(
                "events:Q",
                title="pull-request events (count)",
                stack="zero",
                # Room after the longest bar for its total label.
                scale=alt.Scale(domain=[0, int(top["pr_events"].max()) * 1.08], nice=False),
            ),
            color=alt.Color(
                "action:N",
                title="action",
                legend=alt.Legend(orient="top"),
                scale=alt.Scale(
                    domain=["opened", "other actions"],
                    range=[TYPE_COLORS["PullRequestEvent"], "#9ecae9"],
                ),
            ),
            order=alt.Order("action:N", sort="ascending"),
            tooltip=[
                alt.Tooltip("repo_name:N", title="repository"),
                alt.Tooltip("action:N"),
                alt.Tooltip("events:Q"),
                alt.Tooltip("pr_events:Q", title="all PR events"),
            ],
        )
    )
    if marked:
        bars = bars.encode(opacity=_completeness_opacity())
    totals = (
        alt.Chart(top)
        .mark_text(align="left", dx=4, fontSize=11, color="#1f2328")
        .encode(y=alt.Y("repo_name:N", sort=order), x="pr_events:Q", text="pr_events:Q")
    )
    subtitle = f"{len(counts)} repositories with PR events; bars split into opened vs other actions"
    chart = (bars + totals).properties(
        title=alt.Title(
            title,
            subtitle=[subtitle, COMPLETENESS_NOTE] if marked else subtitle,
        ),
        width=CHART_WIDTH,
        height=alt.Step(BAR_STEP),
    )
    return _styled(chart)


def poll_history_chart(history: pd.DataFrame) -> alt.TopLevelMixin:
    """Stacked bars per poll over time: new events by tracked type, then the duplicates.

    `history` (from `poll_history_frame`) has polled_at, poll_id, category and events, where
    category is a tracked event type, OTHER_TYPES or DUPLICATES.
    """
    title = "Events stored per poll: new by type vs duplicates"
    if history.empty:
        return no_data_chart(title, "No poll has run yet.")
    if int(history["events"].sum()) == 0:
        polls = _plural(history["poll_id"].nunique(), "poll")
        return no_data_chart(title, f"{polls} so far, none has received any events.")
    frame = history.copy()
    frame["polled_at"] = pd.to_datetime(frame["polled_at"], utc=True).dt.tz_localize(None)
    frame["events"] = frame["events"].astype(int)
    categories = [*TRACKED_EVENT_TYPES, OTHER_TYPES, DUPLICATES]
    colors = [TYPE_COLORS[c] for c in (*TRACKED_EVENT_TYPES, OTHER_TYPES)] + [DUPLICATE_COLOR]
    frame["stack_order"] = frame["category"].map({c: i for i, c in enumerate(categories)})
    polls = frame["poll_id"].nunique()
    # A continuous time axis shows gaps between polls; the bar width follows the number of polls.
    bar_px = max(2.0, min(36.0, CHART_WIDTH / max(polls, 1) * 0.6))
    chart = (
        alt.Chart(frame)
        .mark_bar(size=bar_px)
        .encode(
            x=alt.X(
                "polled_at:T",
                scale=alt.Scale(padding=bar_px),
                axis=_time_axis(frame["polled_at"], "poll started at (UTC)"),
            ),
            y=alt.Y("sum(events):Q", title="events per poll (count)"),
            color=alt.Color(
                "category:N",
                title="stored as",
                sort=categories,
                scale=alt.Scale(domain=categories, range=colors),
            ),
            order=alt.Order("stack_order:Q", sort="ascending"),
            tooltip=[
                alt.Tooltip("polled_at:T", title="poll started", format="%Y-%m-%d %H:%M:%S"),
                alt.Tooltip("poll_id:N", title="poll (run id)"),
                alt.Tooltip("category:N", title="stored as"),
                alt.Tooltip("sum(events):Q", title="events"),
            ],
        )
        .properties(
            title=alt.Title(
                title,
                subtitle=f"Last {_plural(polls, 'poll')}; coloured: new events by type, "
                "grey: duplicates",
            ),
            width=CHART_WIDTH,
            height=300,
        )
    )
    return _styled(chart)


# -- readers: warehouse tables → DataFrames for the builders above ----------------------------


def table_frame(conn: duckdb.DuckDBPyConnection, table: str) -> pd.DataFrame:
    """A whole metric table (they are small: one row per repository or per window and type).
    `table` must be one of the fixed table-name constants, never user input."""
    return conn.execute(f"SELECT * FROM {table}").df()


def busiest_repo(intervals: pd.DataFrame) -> str | None:
    """The repository with the most opened PRs among those that have an interval."""
    measured = intervals[intervals["avg_interval_s"].notna()] if not intervals.empty else intervals
    if measured.empty:
        return None
    top = measured.sort_values(["pr_opened", "repo_name"], ascending=[False, True])
    return str(top["repo_name"].iloc[0])


def busiest_repo_gaps_frame(conn: duckdb.DuckDBPyConnection, repo: str) -> pd.DataFrame:
    """Each interval between consecutive opened PRs of one repository (the same definition as
    the pr_intervals table), the most recent MAX_INTERVAL_POINTS."""
    return metrics.repo_intervals(conn, repo, limit=MAX_INTERVAL_POINTS)


def poll_history_frame(conn: duckdb.DuckDBPyConnection, limit: int = MAX_POLLS) -> pd.DataFrame:
    """Per poll (the latest `limit`): new events stored by category and the duplicates
    (gh_pipeline.live.poll_log.poll_history), in this module's categories."""
    return poll_log.poll_history(
        conn, limit=limit, tracked=TRACKED_EVENT_TYPES, other=OTHER_TYPES, duplicates=DUPLICATES
    )
