"""Every warehouse table, declared once (no Dagster import).

A table's name, the step that writes it, whether readers get it as a snapshot and whether it only
ever grows are said here and nowhere else. What depends on them is derived: the Dagster asset keys
(gh_pipeline.defs.warehouse.keys), the published-table lists of the snapshot writer, the query
module and the rebuild (PUBLISHED_TABLES), the append-only publication (APPEND_ONLY_TABLES) and the
event type -> filtered table map (FILTERED_TABLES, TRACKED_EVENT_TYPES).
"""

from dataclasses import dataclass

# Steps of the flow that write tables (see the README's flow map).
LIVE = "live"
ARCHIVE = "archive"
MODEL = "model"
OPS = "ops"


@dataclass(frozen=True)
class Table:
    name: str
    written_by: str  # the step (package) that writes it
    description: str
    published: bool = False  # copied to snapshot/ after each materialisation for readers
    append_only: bool = False  # rows are only ever added, in `seq` order (published as parts)
    asset: bool = False  # a Dagster asset of the same name materialises it


@dataclass(frozen=True)
class FilteredTable:
    """A typed table holding the events of one tracked type (written by gh_pipeline.model)."""

    name: str
    event_type: str
    has_number: bool
    # Where the payload keeps the number, first match wins (an IssuesEvent has it only inside
    # `issue`; a PullRequestEvent at the top, and inside `pull_request` in the trimmed shape too).
    number_paths: tuple[str, ...] = ()


RAW_EVENTS = "raw_events"
REJECTED_EVENTS = "rejected_events"
POLL_LOG = "poll_log"
POLL_GAPS = "poll_gaps"
ARCHIVE_HOURS = "archive_hours"
WATERMARKS = "incremental_watermarks"
WATCH_EVENTS = "watch_events"
PULL_REQUEST_EVENTS = "pull_request_events"
ISSUES_EVENTS = "issues_events"
PR_INTERVALS = "pr_intervals"
EVENT_COUNTS = "event_counts"
REPO_PR_COUNTS = "repo_pr_counts"
# Working state of the metrics, not published: what lets the public tables be updated in place.
PR_OPENED_TIMES = "pr_opened_times"
EVENT_MINUTE_COUNTS = "event_minute_counts"
# Watched repositories (GH_PIPELINE_REPOS): their coverage, its gaps, and the ids each
# repository feed released (what its paging and its coverage are judged against).
WATCHED_REPOS = "watched_repos"
WATCHED_REPO_GAPS = "watched_repo_gaps"
WATCHED_REPO_EVENTS = "watched_repo_events"
# Which GH Archive hours were read for each watched repository, and what they held.
WATCHED_REPO_ARCHIVE_HOURS = "watched_repo_archive_hours"
# Per hour and type, the untracked live events retention deleted from raw_events.
UNTRACKED_EVENT_COUNTS = "untracked_event_counts"
SCHEMA_PROFILE = "schema_profile"
SCHEMA_PROFILE_TYPES = "schema_profile_types"
SCHEMA_PROFILE_WATERMARK = "schema_profile_watermark"

FILTERED_TABLES: dict[str, FilteredTable] = {
    WATCH_EVENTS: FilteredTable(WATCH_EVENTS, "WatchEvent", has_number=False),
    PULL_REQUEST_EVENTS: FilteredTable(
        PULL_REQUEST_EVENTS,
        "PullRequestEvent",
        has_number=True,
        number_paths=("$.number", "$.pull_request.number"),
    ),
    ISSUES_EVENTS: FilteredTable(
        ISSUES_EVENTS, "IssuesEvent", has_number=True, number_paths=("$.issue.number",)
    ),
}

# The tracked event types, in the order tables, charts and query results list them.
TRACKED_EVENT_TYPES: tuple[str, ...] = tuple(t.event_type for t in FILTERED_TABLES.values())
# The filtered table behind each tracked type.
TABLE_OF_TYPE: dict[str, str] = {t.event_type: t.name for t in FILTERED_TABLES.values()}

TABLES: tuple[Table, ...] = (
    Table(RAW_EVENTS, LIVE, "every event, once per id (live polls and GH Archive)", asset=True),
    Table(REJECTED_EVENTS, LIVE, "lines that were not a usable event, with the reason"),
    Table(POLL_LOG, LIVE, "one row per HTTP request of a poll"),
    Table(POLL_GAPS, LIVE, "polls that may have missed events"),
    Table(ARCHIVE_HOURS, ARCHIVE, "each loaded GH Archive hour: its era, counts and live overlap"),
    Table(
        WATCHED_REPOS,
        LIVE,
        "per watched repository: polls, complete since/until, gaps, status",
    ),
    Table(WATCHED_REPO_GAPS, LIVE, "spans a watched repository's polls did not overlap"),
    Table(WATCHED_REPO_EVENTS, LIVE, "the event ids each watched repository's feed released"),
    Table(
        WATCHED_REPO_ARCHIVE_HOURS,
        ARCHIVE,
        "per watched repository and GH Archive hour: its events in the file, era caveat",
    ),
    Table(WATERMARKS, MODEL, "the highest source seq each derived table has folded in"),
    *(
        Table(
            t.name,
            MODEL,
            f"{t.event_type}s with typed columns",
            published=True,
            append_only=True,
            asset=True,
        )
        for t in FILTERED_TABLES.values()
    ),
    Table(
        PR_INTERVALS, MODEL, "time between opened PRs per repository", published=True, asset=True
    ),
    Table(
        EVENT_COUNTS,
        MODEL,
        "tracked events by type over look-back windows",
        published=True,
        asset=True,
    ),
    Table(REPO_PR_COUNTS, MODEL, "pull-request events per repository", published=True, asset=True),
    Table(PR_OPENED_TIMES, MODEL, "per repository, the sorted times its PRs were opened"),
    Table(EVENT_MINUTE_COUNTS, MODEL, "tracked events per type and minute"),
    Table(
        UNTRACKED_EVENT_COUNTS,
        OPS,
        "per hour (created_at), type and source: untracked live events deleted by retention",
    ),
    Table(SCHEMA_PROFILE, OPS, "payload key shares per source and event type (drift baseline)"),
    Table(SCHEMA_PROFILE_TYPES, OPS, "events each drift baseline stands for"),
    Table(SCHEMA_PROFILE_WATERMARK, OPS, "the raw seq the drift baseline has profiled"),
)
TABLE_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}

# Published for readers, in the order the query module's last_updated() lists them and the
# rebuild recomputes and publishes them.
PUBLISHED_TABLES: tuple[str, ...] = tuple(t.name for t in TABLES if t.published)
APPEND_ONLY_TABLES: frozenset[str] = frozenset(t.name for t in TABLES if t.append_only)
METRIC_TABLES: tuple[str, ...] = tuple(t.name for t in TABLES if t.published and not t.append_only)
