"""Charts of the metric tables and the poll history: what they show, their PNG and spec entries,
the "no data yet" case, and the 1 MB budget per metadata entry."""

import base64
import gzip
import io
import json
import math
import struct
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import altair as alt
import dagster as dg
import duckdb
import pandas as pd
import pytest
import vl_convert as vlc
from PIL import Image, ImageChops

from gh_pipeline import warehouse
from gh_pipeline.charts import figures, render
from gh_pipeline.live import ingest
from gh_pipeline.live.github_client import GitHubEventsClient
from gh_pipeline.model import filtered, metrics
from gh_pipeline.warehouse import catalogue, raw
from gh_pipeline_tests.support.fake_github import (
    FakeGitHub,
    load_recorded,
    recorded_2019_feed,
    trim_event,
)

AS_OF = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


# -- helpers ---------------------------------------------------------------------------------


def png_of(markdown: str) -> bytes:
    """The PNG embedded in a chart's markdown entry."""
    prefix = "data:image/png;base64,"
    assert markdown.startswith("![") and prefix in markdown and markdown.endswith(")")
    return base64.b64decode(markdown.split(prefix, 1)[1][:-1], validate=True)


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """The chunks of a PNG, each CRC-checked: a truncated or corrupt image fails here."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind, data = png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + data) == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, data))
        offset += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    return chunks


def png_size(png: bytes) -> tuple[int, int]:
    chunks = png_chunks(png)
    width, height = struct.unpack(">II", chunks[0][1][:8])
    pixels = zlib.decompress(b"".join(d for k, d in chunks if k == b"IDAT"))
    bit_depth, color_type = chunks[0][1][8], chunks[0][1][9]
    channels = {2: 3, 6: 4, 0: 1, 4: 2, 3: 1}[color_type]
    # Every scanline present: filter byte + width * pixel bytes.
    assert bit_depth == 8 and len(pixels) == height * (1 + width * channels)
    return width, height


def render_chart(chart: alt.TopLevelMixin) -> tuple[bytes, dict[str, Any]]:
    entries = render.chart_entries("chart", chart)
    assert set(entries) == {"chart", "chart_spec"}
    return png_of(entries["chart"]), entries["chart_spec"]


def walk(spec: Any) -> list[dict[str, Any]]:
    """Every dict inside a spec (layers, concatenations, encodings)."""
    found: list[dict[str, Any]] = []
    stack = [spec]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def channels(spec: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [d["encoding"][name] for d in walk(spec) if name in d.get("encoding", {})]


def titles(spec: dict[str, Any], name: str) -> list[str]:
    """The axis titles given on a channel, whether on the encoding or on its axis."""
    found = []
    for channel in channels(spec, name):
        title = channel.get("title") or (channel.get("axis") or {}).get("title")
        if title:
            found.append(title)
    return found


def dataset_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for rows in spec.get("datasets", {}).values() for row in rows]


def texts(spec: dict[str, Any]) -> str:
    return json.dumps(spec)


def assert_readable(png: bytes, spec: dict[str, Any]) -> None:
    width, _ = png_size(png)
    assert width >= 600
    # An opaque white card reads the same on the UI's light and dark themes.
    assert spec["config"]["background"] == "white"
    widths = [d["width"] for d in walk(spec) if isinstance(d.get("width"), int)]
    assert widths and min(widths) >= 600


# -- event_counts ----------------------------------------------------------------------------


def test_event_counts_chart_groups_types_within_each_window_in_window_order() -> None:
    counts = pd.DataFrame(
        [
            (AS_OF, window, event_type, count)
            for window, by_type in {
                1440: {"WatchEvent": 40, "PullRequestEvent": 90, "IssuesEvent": 7},
                60: {"WatchEvent": 4, "PullRequestEvent": 9, "IssuesEvent": 1},
                5: {"WatchEvent": 0, "PullRequestEvent": 2, "IssuesEvent": 0},
                360: {"WatchEvent": 20, "PullRequestEvent": 30, "IssuesEvent": 5},
                15: {"WatchEvent": 1, "PullRequestEvent": 3, "IssuesEvent": 0},
            }.items()
            for event_type, count in by_type.items()
        ],
        columns=["as_of", "window_minutes", "event_type", "event_count"],
    )
    png, spec = render_chart(figures.event_counts_chart(counts))
    assert_readable(png, spec)
    x = channels(spec, "x")[0]
    assert x["sort"] == ["last 5 min", "last 15 min", "last 1 h", "last 6 h", "last 24 h"]
    # Within a window the bars run from the most frequent type (over all windows) down.
    assert channels(spec, "xOffset")[0]["sort"] == ["PullRequestEvent", "WatchEvent", "IssuesEvent"]
    assert set(titles(spec, "y")) == {"events (count)"}
    assert "as of 2026-01-02 12:00 UTC" in texts(spec)
    rows = {(r["window"], r["event_type"]): r["event_count"] for r in dataset_rows(spec)}
    assert rows[("last 24 h", "PullRequestEvent")] == 90
    assert rows[("last 5 min", "IssuesEvent")] == 0


def test_event_counts_with_only_zero_rows_says_no_data_yet() -> None:
    # The table always has its 15 rows; with no tracked event in 24 h they are all zero.
    counts = pd.DataFrame(
        [(AS_OF, w, t, 0) for w in (5, 15, 60, 360, 1440) for t in ("WatchEvent", "IssuesEvent")],
        columns=["as_of", "window_minutes", "event_type", "event_count"],
    )
    png, spec = render_chart(figures.event_counts_chart(counts))
    assert_readable(png, spec)
    assert figures.NO_DATA_TEXT in texts(spec)


# -- pr_intervals ----------------------------------------------------------------------------


def _warehouse_with(tmp_path: Path, events: list[dict[str, Any]]) -> duckdb.DuckDBPyConnection:
    """A real warehouse holding `events`, loaded and filtered the way the pipeline does it."""
    landing = tmp_path / "events.ndjson.gz"
    with gzip.open(landing, "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(e) + "\n" for e in events)
    conn = warehouse.connect(tmp_path / "warehouse.duckdb")
    warehouse.ensure_schema(conn)
    raw.load_ndjson(conn, landing, poll_id="fixture", source="fixture")
    for table in catalogue.FILTERED_TABLES:
        filtered.refresh_filtered(conn, table)
    return conn


def test_pr_intervals_chart_from_real_duckdb_events(tmp_path: Path) -> None:
    # duckdb/duckdb's recorded feed (2023-04-07) opens PRs at 12:00:25, 16:27:48 and 20:02:55:
    # gaps 4:27:23 = 16043 s and 3:35:07 = 12907 s, mean = median = 14475 s (4.02 h).
    events = [trim_event(e) for e in load_recorded("repo-events-duckdb-2023-page01.json")]
    conn = _warehouse_with(tmp_path, events)
    metrics.refresh_pr_intervals(conn)
    table = figures.table_frame(conn, metrics.PR_INTERVALS)
    assert figures.busiest_repo(table) == "duckdb/duckdb"
    gaps = figures.busiest_repo_gaps_frame(conn, "duckdb/duckdb")
    conn.close()
    assert gaps["gap_s"].tolist() == [12907.0, 16043.0]  # newest first

    png, spec = render_chart(figures.pr_intervals_chart(table, gaps))
    assert_readable(png, spec)
    assert "vconcat" in spec
    assert "interval between opened PRs (hours)" in titles(spec, "x")
    assert "interval since previous PR (hours)" in titles(spec, "y")
    assert "PR opened at (UTC)" in titles(spec, "x")
    rows = dataset_rows(spec)
    bars = {r["measure"]: r["value"] for r in rows if r.get("repo") == "duckdb/duckdb (3 PRs)"}
    assert bars == pytest.approx({"mean": 14475 / 3600, "median": 14475 / 3600})
    dots = sorted(r["value"] for r in rows if "gap_s" in r)
    assert dots == pytest.approx([12907 / 3600, 16043 / 3600])
    # The dashed line sits at the mean.
    rules = [
        d for d in walk(spec) if isinstance(d.get("mark"), dict) and d["mark"]["type"] == "rule"
    ]
    assert len(rules) == 1 and rules[0]["mark"]["strokeDash"]
    assert "mean 4 h 1 min" in texts(spec)


def test_pr_intervals_ranks_repositories_by_opened_prs_and_skips_single_prs() -> None:
    table = pd.DataFrame(
        {
            "repo_name": ["a/one", "b/many", "c/some", "d/single"],
            "pr_opened": [2, 9, 4, 1],
            "first_opened_at": [AS_OF] * 4,
            "last_opened_at": [AS_OF] * 4,
            "avg_interval_s": [30.0, 45.0, 60.0, None],
            "median_interval_s": [30.0, 40.0, 50.0, None],
            "p90_interval_s": [30.0, 80.0, 70.0, None],
        }
    )
    spec = figures.pr_intervals_chart(table).to_dict()
    y = next(c for c in channels(spec, "y") if c.get("field") == "repo")
    assert y["sort"] == ["b/many (9 PRs)", "c/some (4 PRs)", "a/one (2 PRs)"]
    assert "interval between opened PRs (seconds)" in titles(spec, "x")
    assert "d/single" not in texts(spec)
    # No interval rows loaded for the busiest repository: the chart says so instead of failing.
    assert "No intervals loaded for b/many" in texts(spec)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (2.5, "2.5 s"),
        (45, "45 s"),
        (90, "1 min 30 s"),
        (7200, "2 h"),
        (14475, "4 h 1 min"),
        (3599.9, "1 h"),
        (86399, "1 d"),
        (3 * 86400 + 5 * 3600, "3 d 5 h"),
    ],
)
def test_human_duration(seconds: float, expected: str) -> None:
    assert figures.human_duration(seconds) == expected


def test_human_duration_of_missing_value() -> None:
    assert figures.human_duration(math.nan) == "n/a"


# -- repo_pr_counts --------------------------------------------------------------------------


def test_repo_pr_counts_shows_top_20_sorted_with_opened_share() -> None:
    rows = [(f"org/repo{i:02d}", 100 - 3 * i, (100 - 3 * i) // 4) for i in range(25)]
    table = pd.DataFrame(rows[::-1], columns=["repo_name", "pr_events", "pr_opened"])
    png, spec = render_chart(figures.repo_pr_counts_chart(table))
    assert_readable(png, spec)
    y = channels(spec, "y")[0]
    assert y["sort"] == [f"org/repo{i:02d}" for i in range(20)]
    assert "org/repo20" not in texts(spec)
    assert "pull-request events (count)" in titles(spec, "x")
    split = {
        (r["repo_name"], r["action"]): r["events"] for r in dataset_rows(spec) if "action" in r
    }
    # org/repo00: 100 PR events of which 25 opened.
    assert split[("org/repo00", "opened")] == 25
    assert split[("org/repo00", "other actions")] == 75


# -- raw_events: the poll history ------------------------------------------------------------


def test_poll_history_counts_new_events_by_type_and_duplicates(data_dir: Path) -> None:
    older = [trim_event(e) for e in recorded_2019_feed()]  # 155 events
    newer = [trim_event(e) for e in load_recorded("repo-events-duckdb-2023-page01.json")]
    with FakeGitHub(older, poll_interval=1) as fake:
        conn = warehouse.connect(data_dir / "warehouse.duckdb")
        with GitHubEventsClient(api_url=fake.url) as client:
            ingest.poll_once(
                client=client, conn=conn, data_dir=data_dir, poll_id="poll-1", sleep=lambda _: None
            )
            fake.push(newer)
            ingest.poll_once(
                client=client, conn=conn, data_dir=data_dir, poll_id="poll-2", sleep=lambda _: None
            )
        history = figures.poll_history_frame(conn)
        conn.close()
    got = {(r.poll_id, r.category): int(r.events) for r in history.itertuples()}
    # Counted by hand from the fixtures: the 2019 feed has 5 WatchEvents, 17 PullRequestEvents,
    # 11 IssuesEvents and 122 others; the duckdb page 8, 12, 5 and 75. Poll 2 reads the duckdb
    # page (all new), then one page of 2019 events it already holds (100 duplicates) and stops.
    assert got == {
        ("poll-1", "WatchEvent"): 5,
        ("poll-1", "PullRequestEvent"): 17,
        ("poll-1", "IssuesEvent"): 11,
        ("poll-1", figures.OTHER_TYPES): 122,
        ("poll-1", figures.DUPLICATES): 0,
        ("poll-2", "WatchEvent"): 8,
        ("poll-2", "PullRequestEvent"): 12,
        ("poll-2", "IssuesEvent"): 5,
        ("poll-2", figures.OTHER_TYPES): 75,
        ("poll-2", figures.DUPLICATES): 100,
    }
    png, spec = render_chart(figures.poll_history_chart(history))
    assert_readable(png, spec)
    assert set(titles(spec, "y")) == {"events per poll (count)"}
    color = channels(spec, "color")[0]
    assert color["scale"]["domain"][-1] == figures.DUPLICATES
    assert "Last 2 polls" in texts(spec)


# -- empty tables ----------------------------------------------------------------------------

EMPTY_CASES: dict[str, Callable[[], alt.TopLevelMixin]] = {
    "event_counts": lambda: figures.event_counts_chart(
        pd.DataFrame(columns=["as_of", "window_minutes", "event_type", "event_count"])
    ),
    "pr_intervals": lambda: figures.pr_intervals_chart(
        pd.DataFrame(
            columns=[
                "repo_name",
                "pr_opened",
                "first_opened_at",
                "last_opened_at",
                "avg_interval_s",
                "median_interval_s",
                "p90_interval_s",
            ]
        )
    ),
    "repo_pr_counts": lambda: figures.repo_pr_counts_chart(
        pd.DataFrame(columns=["repo_name", "pr_events", "pr_opened"])
    ),
    "raw_events": lambda: figures.poll_history_chart(
        pd.DataFrame(columns=["poll_id", "polled_at", "category", "events"])
    ),
}


@pytest.mark.parametrize("name", sorted(EMPTY_CASES))
def test_empty_table_gives_a_png_that_says_no_data_yet(name: str) -> None:
    png, spec = render_chart(EMPTY_CASES[name]())
    assert_readable(png, spec)
    assert figures.NO_DATA_TEXT in texts(spec)


def test_empty_pipeline_materialises_no_data_charts(
    data_dir: Path, fake_github: FakeGitHub
) -> None:
    """The real poll job against a feed with no events: every charted asset still materialises
    with a PNG chart entry and the path of its spec."""
    import gh_pipeline.defs as defs_package
    from gh_pipeline.defs.live.jobs import POLL_JOB_NAME

    defs = dg.load_from_defs_folder(path_within_project=Path(defs_package.__file__).parent)
    result = defs.resolve_job_def(POLL_JOB_NAME).execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    metadata = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    for key in ("raw_events", "event_counts", "pr_intervals", "repo_pr_counts"):
        entry = metadata[key]
        assert isinstance(entry["chart"], dg.MarkdownMetadataValue)
        assert png_size(png_of(entry["chart"].value))[0] >= 600
        # The spec is a file under data/charts, the latest one per asset.
        spec_file = Path(entry["chart_spec"].value)
        assert spec_file.parent == data_dir / "charts" and spec_file.name == f"{key}.vl.json"
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/"), key
        assert figures.NO_DATA_TEXT in json.dumps(spec), key
        assert entry["dagster/row_count"].value == 0 or key == "event_counts"
    assert metadata["event_counts"]["tracked_events_last_1440_min"].value == 0
    assert metadata["repo_pr_counts"]["pr_events"].value == 0


# -- the metadata helper ---------------------------------------------------------------------


def _poll_history(polls: int) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (f"run-{i:04d}", AS_OF + pd.Timedelta(minutes=i), category, (i * 7 + j) % 40)
            for i in range(polls)
            for j, category in enumerate(["WatchEvent", figures.OTHER_TYPES, figures.DUPLICATES])
        ],
        columns=["poll_id", "polled_at", "category", "events"],
    )


def test_chart_entries_keep_the_full_chart_within_the_budget() -> None:
    entries = render.chart_entries("chart", figures.poll_history_chart(_poll_history(200)))
    assert len(entries["chart"].encode("utf-8")) < render.MAX_ENTRY_BYTES
    assert len(json.dumps(entries["chart_spec"]).encode("utf-8")) < render.MAX_ENTRY_BYTES
    assert len(dataset_rows(entries["chart_spec"])) == 600  # nothing dropped from the spec
    assert png_size(png_of(entries["chart"]))[0] >= 600


def test_chart_entries_shrink_or_omit_what_exceeds_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chart = figures.poll_history_chart(_poll_history(60))
    full = render.chart_entries("chart", chart)
    full_width = png_size(png_of(full["chart"]))[0]
    # A budget the full-size PNG and the spec exceed: the PNG comes back smaller, the spec as a
    # note saying why it is missing.
    budget = (
        min(len(json.dumps(full["chart_spec"]).encode("utf-8")), len(full["chart"].encode("utf-8")))
        - 1
    )
    monkeypatch.setattr(render, "MAX_ENTRY_BYTES", budget)
    small = render.chart_entries("chart", chart)
    assert len(small["chart"].encode("utf-8")) < budget
    assert png_size(png_of(small["chart"]))[0] < full_width
    assert set(small["chart_spec"]) == {"omitted"}
    # A budget nothing fits: text instead of an image, never a failure.
    monkeypatch.setattr(render, "MAX_ENTRY_BYTES", 500)
    tiny = render.chart_entries("chart", chart)
    assert "omitted" in tiny["chart"] and "base64" not in tiny["chart"]


@pytest.mark.parametrize(
    "chart",
    [
        pytest.param(lambda: figures.no_data_chart("A title"), id="no-data"),
        pytest.param(lambda: figures.poll_history_chart(_poll_history(60)), id="poll-history"),
    ],
)
def test_palette_png_looks_the_same_and_is_smaller(chart: Callable[[], alt.TopLevelMixin]) -> None:
    original = vlc.vegalite_to_png(chart().to_dict(), vl_version=render.VL_VERSION)
    palette = render.palette_png(original)

    def rgb_on_white(png: bytes) -> Image.Image:
        image = Image.open(io.BytesIO(png)).convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", image.size, "white"), image).convert("RGB")

    before, after = rgb_on_white(original), rgb_on_white(palette)
    assert after.size == before.size
    assert Image.open(io.BytesIO(palette)).mode == "P"  # one byte a pixel
    # Per pixel and channel: on average barely any change, and no pixel far off (a lost colour,
    # e.g. a series drawn in the wrong colour, would show up as a large maximum).
    diff = ImageChops.difference(before, after)
    channels = [v for px in diff.getdata() for v in px]
    assert sum(channels) / len(channels) < 1.5
    assert sorted(channels)[int(len(channels) * 0.999)] < 40
    # vl-convert's own PNG: RGBA, fastest compression.
    assert len(palette) < len(original) / 4


def test_palette_png_refuses_something_that_is_not_a_png() -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        render.palette_png(b"GIF89a...")
