"""The metric charts mark which bars rest on every event of a watched repository (complete) and
which on a sample of the global feed; without watched repositories they are unchanged."""

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import vl_convert as vlc

from gh_pipeline.charts import figures

T = pd.Timestamp(datetime(2026, 1, 1, tzinfo=UTC))


def _intervals(with_completeness: bool) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "repo_name": ["o/watched", "x/other"],
            "pr_opened": [40, 12],
            "first_opened_at": [T, T],
            "last_opened_at": [T, T],
            "avg_interval_s": [600.0, 3000.0],
            "median_interval_s": [500.0, 2000.0],
            "p90_interval_s": [900.0, 5000.0],
        }
    )
    if with_completeness:
        frame["completeness"] = ["complete", "sample"]
    return frame


def _counts(with_completeness: bool) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"repo_name": ["o/watched", "x/other"], "pr_events": [90, 20], "pr_opened": [40, 12]}
    )
    if with_completeness:
        frame["completeness"] = ["complete", None]
    return frame


def _rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for rows in spec.get("datasets", {}).values() for row in rows]


def _opacity_fields(spec: Any) -> list[str]:
    found: list[str] = []
    if isinstance(spec, dict):
        opacity = spec.get("encoding", {}).get("opacity") if "encoding" in spec else None
        if isinstance(opacity, dict) and "field" in opacity:
            found.append(opacity["field"])
        for value in spec.values():
            found.extend(_opacity_fields(value))
    elif isinstance(spec, list):
        for value in spec:
            found.extend(_opacity_fields(value))
    return found


def test_complete_and_sampled_bars_are_marked_and_render() -> None:
    for chart in (
        figures.pr_intervals_chart(_intervals(True)),
        figures.repo_pr_counts_chart(_counts(True)),
    ):
        spec = chart.to_dict()
        labels = {r.get("repo") or r.get("repo_name") for r in _rows(spec)}
        assert any(str(label).startswith("o/watched") and label.endswith(" ✓") for label in labels)
        assert any(
            str(label).startswith("x/other") and label.endswith(" (sample)") for label in labels
        )
        assert "completeness" in _opacity_fields(spec)
        assert figures.COMPLETENESS_NOTE in chart.to_json()
        assert vlc.vegalite_to_png(chart.to_json())[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_watched_repositories_the_charts_carry_no_marks() -> None:
    for chart in (
        figures.pr_intervals_chart(_intervals(False)),
        figures.repo_pr_counts_chart(_counts(False)),
    ):
        spec = chart.to_dict()
        assert _opacity_fields(spec) == []
        assert "✓" not in chart.to_json() and "(sample)" not in chart.to_json()
