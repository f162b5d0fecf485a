"""Documented environment variables and the paths derived from them (no Dagster import)."""

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_DATA_DIR = "data"
USER_AGENT = "gh-pipeline/0.1 (+https://github.com/gh-pipeline)"

ENV_TOKEN = "GITHUB_TOKEN"
ENV_API_URL = "GITHUB_API_URL"
ENV_DATA_DIR = "GH_PIPELINE_DATA_DIR"
ENV_RAW_RETENTION_DAYS = "GH_PIPELINE_RAW_RETENTION_DAYS"
# One day of raw JSON and landing files: at the feed's maximum (300 new events a minute) they
# cost ~0.3 GB a day, which a month of 30 days would make ~9 GB (docs/operations.md#retention).
# The typed columns of events and the tracked-event tables are kept regardless (untracked live
# events' rows: GH_PIPELINE_UNTRACKED_RETENTION_DAYS).
DEFAULT_RAW_RETENTION_DAYS = 1
ENV_UNTRACKED_RETENTION_DAYS = "GH_PIPELINE_UNTRACKED_RETENTION_DAYS"
# The typed rows of untracked event types from the live feed (~77 % of events, ~0.1 kB each)
# were what kept a month at the feed's maximum above 1 GB: after a day they are counted per hour
# and type into untracked_event_counts and deleted (gh_pipeline.ops.retention).
DEFAULT_UNTRACKED_RETENTION_DAYS = 1
ENV_CHART_REFRESH_MINUTES = "GH_PIPELINE_CHART_REFRESH_MINUTES"
# A poll run redraws the charts (and records the filtered and metric tables' materialisations)
# only when the last ones are this old: a redraw costs ~200 kB of Dagster storage, a poll run in
# between ~70 kB (docs/operations.md#a-month-unattended).
DEFAULT_CHART_REFRESH_MINUTES = 10
ENV_RUN_RETENTION_DAYS = "GH_PIPELINE_RUN_RETENTION_DAYS"
ENV_FAILED_RUN_RETENTION_DAYS = "GH_PIPELINE_FAILED_RUN_RETENTION_DAYS"
# Dagster's own history: finished runs with their event logs and compute logs. A day of poll
# runs is 1,440 runs; failures are kept longer, for a person to look at.
DEFAULT_RUN_RETENTION_DAYS = 1
DEFAULT_FAILED_RUN_RETENTION_DAYS = 14
ENV_GHARCHIVE_URL = "GHARCHIVE_URL"
ENV_GHARCHIVE_START = "GHARCHIVE_START"
ENV_ARCHIVE_FULL_EVENTS = "GH_PIPELINE_ARCHIVE_FULL_EVENTS"
ENV_ARCHIVE_SCOPE = "GH_PIPELINE_ARCHIVE_SCOPE"
ARCHIVE_SCOPE_ALL = "all"
ARCHIVE_SCOPE_WATCHED = "watched"
DEFAULT_GHARCHIVE_URL = "https://data.gharchive.org"
# GH Archive switched to today's event format (the Events API's) on 2015-01-01.
DEFAULT_GHARCHIVE_START = "2015-01-01"

WAREHOUSE_FILE = "warehouse.duckdb"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: an explicit argument, else $GH_PIPELINE_DATA_DIR, else ./data."""
    raw = explicit if explicit is not None else os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR
    return Path(raw).expanduser()


def warehouse_path(directory: str | Path | None = None) -> Path:
    return data_dir(directory) / WAREHOUSE_FILE


def landing_dir(directory: str | Path | None = None) -> Path:
    return data_dir(directory) / "landing"


def state_dir(directory: str | Path | None = None) -> Path:
    return data_dir(directory) / "state"


def snapshot_dir(directory: str | Path | None = None) -> Path:
    return data_dir(directory) / "snapshot"


def charts_dir(directory: str | Path | None = None) -> Path:
    """Where each chart's latest Vega-Lite spec is written (<asset>.vl.json)."""
    return data_dir(directory) / "charts"


def _whole_number(name: str, value: str | None, *, default: int, unit: str, zero: str) -> int:
    """$name (or `value`) as a whole number >= 0; `default` when unset or blank. A bad value is
    refused naming the variable, the unit and what 0 means."""
    raw = value if value is not None else os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        number = int(raw.strip())
    except ValueError:
        number = -1
    if number < 0:
        raise ValueError(f"{name} must be a whole number of {unit} (0 {zero}), not {raw!r}")
    return number


def raw_retention_days(value: str | None = None) -> int | None:
    """Days raw JSON and landing files are kept ($GH_PIPELINE_RAW_RETENTION_DAYS, default 1);
    None when set to 0, which keeps them forever."""
    days = _whole_number(
        ENV_RAW_RETENTION_DAYS,
        value,
        default=DEFAULT_RAW_RETENTION_DAYS,
        unit="days",
        zero="keeps raw JSON forever",
    )
    return days or None


def untracked_retention_days(value: str | None = None) -> int | None:
    """Days the rows of untracked live events stay in raw_events before they are rolled up into
    hourly counts and deleted ($GH_PIPELINE_UNTRACKED_RETENTION_DAYS, default 1); None when set to
    0, which keeps them forever."""
    days = _whole_number(
        ENV_UNTRACKED_RETENTION_DAYS,
        value,
        default=DEFAULT_UNTRACKED_RETENTION_DAYS,
        unit="days",
        zero="keeps untracked events forever",
    )
    return days or None


def chart_refresh_minutes(value: str | None = None) -> int:
    """Minutes between chart redraws in poll runs ($GH_PIPELINE_CHART_REFRESH_MINUTES, default
    10); 0 redraws on every poll."""
    return _whole_number(
        ENV_CHART_REFRESH_MINUTES,
        value,
        default=DEFAULT_CHART_REFRESH_MINUTES,
        unit="minutes",
        zero="redraws every poll",
    )


def run_retention_days(failed: bool = False, value: str | None = None) -> int | None:
    """Days Dagster keeps finished runs ($GH_PIPELINE_RUN_RETENTION_DAYS, default 1) or failed
    runs ($GH_PIPELINE_FAILED_RUN_RETENTION_DAYS, default 14); None when set to 0 (forever)."""
    days = _whole_number(
        ENV_FAILED_RUN_RETENTION_DAYS if failed else ENV_RUN_RETENTION_DAYS,
        value,
        default=DEFAULT_FAILED_RUN_RETENTION_DAYS if failed else DEFAULT_RUN_RETENTION_DAYS,
        unit="days",
        zero="keeps runs forever",
    )
    return days or None


def gharchive_url(value: str | None = None) -> str:
    """GH Archive's base URL ($GHARCHIVE_URL, default https://data.gharchive.org), no trailing /."""
    raw = value if value is not None else os.environ.get(ENV_GHARCHIVE_URL, "")
    return (raw.strip() or DEFAULT_GHARCHIVE_URL).rstrip("/")


def gharchive_start(value: str | None = None) -> datetime:
    """The first GH Archive hour to offer as a partition ($GHARCHIVE_START, default 2015-01-01),
    as an aware UTC datetime on the hour. Accepts YYYY-MM-DD, YYYY-MM-DDTHH[:MM] or the
    partition-key form YYYY-MM-DD-HH:MM."""
    raw = (value if value is not None else os.environ.get(ENV_GHARCHIVE_START, "")).strip()
    raw = raw or DEFAULT_GHARCHIVE_START
    text = raw
    if len(raw) == 16 and raw[10] == "-":  # 2021-07-21-06:00, Dagster's hourly partition key
        text = f"{raw[:10]}T{raw[11:]}"
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{ENV_GHARCHIVE_START} must be a date such as 2015-01-01 or an hour such as"
            f" 2021-07-21T06:00 (UTC), not {raw!r}"
        ) from None
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    return start.replace(minute=0, second=0, microsecond=0)


def archive_full_events(value: str | None = None) -> bool:
    """Whether GH Archive rows keep the whole line in raw_events.event
    ($GH_PIPELINE_ARCHIVE_FULL_EVENTS: true/false, default false; payload and the typed columns
    are always kept)."""
    raw = (value if value is not None else os.environ.get(ENV_ARCHIVE_FULL_EVENTS, "")).strip()
    if raw.lower() in ("", "0", "false", "no", "off"):
        return False
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{ENV_ARCHIVE_FULL_EVENTS} must be true or false, not {raw!r}")


ENV_REPOS = "GH_PIPELINE_REPOS"
# GitHub's rules for owner and repository names: an owner is 1-39 letters, digits or single
# hyphens (not at either end); a repository name is letters, digits, '.', '-' and '_', not '.'
# or '..'.
_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
_REPO_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@dataclass(frozen=True)
class WatchList:
    """The repositories named in $GH_PIPELINE_REPOS: the valid ones (first spelling kept, repeats
    dropped case-insensitively, as GitHub treats names) and one message per refused entry."""

    repos: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


def _repo_error(entry: str) -> str | None:
    owner, slash, name = entry.partition("/")
    if not slash or "/" in name:
        return f"{entry!r} is not owner/name"
    if not _OWNER.match(owner):
        return (
            f"{entry!r}: owner {owner!r} is not a GitHub login (letters, digits and single "
            "hyphens, at most 39)"
        )
    if not _REPO_NAME.match(name) or name in (".", ".."):
        return (
            f"{entry!r}: repository name {name!r} may hold only letters, digits, '.', '-' and '_'"
        )
    return None


def watched_repos(value: str | None = None) -> WatchList:
    """Parse $GH_PIPELINE_REPOS (comma- or whitespace-separated owner/name). A bad entry is
    refused with a message naming it; the good ones still count."""
    raw = value if value is not None else os.environ.get(ENV_REPOS, "")
    repos: list[str] = []
    seen: set[str] = set()
    errors: list[str] = []
    for entry in re.split(r"[\s,]+", raw.strip()):
        if not entry:
            continue
        entry = entry.removeprefix("https://github.com/").rstrip("/")
        error = _repo_error(entry)
        if error is not None:
            errors.append(f"{ENV_REPOS}: {error}; ignored")
        elif entry.lower() not in seen:
            seen.add(entry.lower())
            repos.append(entry)
    return WatchList(tuple(repos), tuple(errors))


@dataclass(frozen=True)
class ArchiveScope:
    """Which events of a GH Archive hour are stored ($GH_PIPELINE_ARCHIVE_SCOPE): `all`, or only
    the `watched` repositories' ($GH_PIPELINE_REPOS). `watched` holds the watched repositories
    under either scope: their per-hour archive coverage is recorded whenever some are named."""

    name: str = ARCHIVE_SCOPE_ALL
    watched: tuple[str, ...] = ()

    @property
    def repos(self) -> list[str] | None:
        """The repositories whose events are stored, lower-cased (GitHub names are
        case-insensitive); None for every repository."""
        if self.name == ARCHIVE_SCOPE_ALL:
            return None
        return sorted({repo.lower() for repo in self.watched})


def archive_scope(value: str | None = None, repos: str | None = None) -> ArchiveScope:
    """$GH_PIPELINE_ARCHIVE_SCOPE (`all`, the default, or `watched`) with the watched repositories
    of $GH_PIPELINE_REPOS (or `value`, `repos`). `watched` with no valid repository named is
    refused rather than storing nothing."""
    raw = (value if value is not None else os.environ.get(ENV_ARCHIVE_SCOPE, "")).strip()
    name = raw.lower() or ARCHIVE_SCOPE_ALL
    if name not in (ARCHIVE_SCOPE_ALL, ARCHIVE_SCOPE_WATCHED):
        raise ValueError(
            f"{ENV_ARCHIVE_SCOPE} must be {ARCHIVE_SCOPE_ALL!r} or {ARCHIVE_SCOPE_WATCHED!r},"
            f" not {raw!r}"
        )
    watch = watched_repos(repos)
    if name == ARCHIVE_SCOPE_WATCHED and not watch.repos:
        refused = f" ({'; '.join(watch.errors)})" if watch.errors else ""
        raise ValueError(
            f"{ENV_ARCHIVE_SCOPE}=watched stores only the watched repositories' events, but"
            f" {ENV_REPOS} names none{refused}: name them in {ENV_REPOS}, or set"
            f" {ENV_ARCHIVE_SCOPE}=all"
        )
    return ArchiveScope(name, watch.repos)


ENV_MALLOC_ARENA_MAX = "MALLOC_ARENA_MAX"
DEFAULT_MALLOC_ARENA_MAX = 2


def malloc_arena_max(value: str | None = None) -> int:
    """glibc malloc arenas per Dagster process ($MALLOC_ARENA_MAX, default 2); 0 keeps glibc's
    own default (8 per core)."""
    return _whole_number(
        ENV_MALLOC_ARENA_MAX,
        value,
        default=DEFAULT_MALLOC_ARENA_MAX,
        unit="malloc arenas per process",
        zero="keeps glibc's default",
    )
