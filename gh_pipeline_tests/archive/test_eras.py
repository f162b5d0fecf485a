"""The known eras of GH Archive: each boundary hour and the hour before it, by hand from the dates
issue 15 gives (crawler change 2025-05-24, payload trim 2025-10-07, outage 2025-10-08 to 14)."""

from datetime import UTC, datetime, timedelta

import pytest

from gh_pipeline.archive.eras import ERAS, era_of

HOUR = timedelta(hours=1)

# (boundary, era of the hour before it, era of the hour starting at it)
BOUNDARIES = [
    (datetime(2015, 1, 1, tzinfo=UTC), "timeline-format", "complete"),
    (datetime(2025, 5, 24, tzinfo=UTC), "complete", "one-page-crawl"),
    (datetime(2025, 10, 7, tzinfo=UTC), "one-page-crawl", "one-page-crawl-trimmed"),
    (datetime(2025, 10, 8, tzinfo=UTC), "one-page-crawl-trimmed", "outage"),
    (datetime(2025, 10, 15, tzinfo=UTC), "outage", "one-page-crawl-trimmed"),
]


@pytest.mark.parametrize(("boundary", "before", "after"), BOUNDARIES)
def test_hours_either_side_of_each_boundary(boundary: datetime, before: str, after: str) -> None:
    assert era_of(boundary - HOUR).name == before
    assert era_of(boundary).name == after
    assert era_of(boundary + HOUR).name == after


def test_today_and_long_ago() -> None:
    assert era_of(datetime(2026, 12, 3, 10, tzinfo=UTC)).name == "one-page-crawl-trimmed"
    assert era_of(datetime(2011, 2, 12, tzinfo=UTC)).name == "timeline-format"
    assert era_of(datetime(2000, 1, 1, tzinfo=UTC)).name == "timeline-format"


def test_every_era_says_what_it_means_and_where_that_comes_from() -> None:
    starts = [era.start for era in ERAS]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for era in ERAS:
        assert era.summary and era.source


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware UTC"):
        era_of(datetime(2025, 5, 24))
