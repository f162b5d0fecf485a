"""What GH Archive's hour files hold, era by era: the known changes, in one place, with their
sources (no Dagster import).

An hour's era says how far its events can be trusted as "every public event of that hour". The
boundaries are UTC hours; an era runs from its start up to, not including, the next era's start.
docs/gharchive.md explains what each era means for the metrics.
"""

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Era:
    name: str
    start: datetime
    summary: str  # one line for run metadata and the archive_hours table
    source: str  # where the fact comes from


_CRAWLER_CHANGE = (
    "igrigorik/gharchive.org issue #310, 'Drastic Drop Off in Events After 2025-05-23' "
    "(https://github.com/igrigorik/gharchive.org/issues/310)"
)
_TRIM = (
    "recorded GitHub events of both shapes (KrimsN/gh-pulse test data, MIT; see "
    "gh_pipeline_tests/fixtures/README.md): PullRequestEvent.payload.pull_request keeps only "
    "url/id/number/head/base since 2025-10-07"
)
_TRIMMED = "one-page-crawl-trimmed"
_TRIMMED_SUMMARY = (
    "one page per crawl, and GitHub's trimmed payloads (no pull_request.created_at, title, "
    "state; a merge is its own action)"
)
_TRIMMED_SOURCE = f"{_CRAWLER_CHANGE}; {_TRIM}"

ERAS: tuple[Era, ...] = (
    Era(
        "timeline-format",
        datetime(2011, 2, 12, tzinfo=UTC),
        "before 2015: GH Archive's older timeline format; its lines load as rejected lines",
        "https://www.gharchive.org (the Events API format is used since 2015-01-01)",
    ),
    Era(
        "complete",
        datetime(2015, 1, 1, tzinfo=UTC),
        "every page of /events crawled: the hour holds nearly every public event created in it",
        "https://www.gharchive.org",
    ),
    Era(
        "one-page-crawl",
        datetime(2025, 5, 24, tzinfo=UTC),
        "one page per crawl: most events are missing, and events are filed by crawl hour "
        "(an event near the boundary can sit in the next hour's file)",
        _CRAWLER_CHANGE,
    ),
    Era(_TRIMMED, datetime(2025, 10, 7, tzinfo=UTC), _TRIMMED_SUMMARY, _TRIMMED_SOURCE),
    Era(
        "outage",
        datetime(2025, 10, 8, tzinfo=UTC),
        "2025-10-08 to 2025-10-14: mostly lost; hours are missing or nearly empty",
        "this project's issue 15 (GH Archive's own files for those days; not re-checked here)",
    ),
    # The trimmed era again once GH Archive came back after the outage.
    Era(_TRIMMED, datetime(2025, 10, 15, tzinfo=UTC), _TRIMMED_SUMMARY, _TRIMMED_SOURCE),
)


def era_of(moment: datetime) -> Era:
    """The era an hour (or any moment) falls in; the first era for anything earlier."""
    if moment.tzinfo is None:
        raise ValueError(f"an era is looked up for an aware UTC time, not {moment!r}")
    found = ERAS[0]
    for era in ERAS:
        if era.start <= moment:
            found = era
    return found
