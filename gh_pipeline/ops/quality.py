"""Data-quality checks over the warehouse, as plain SQL and Python (no Dagster import).

Each check returns a `Finding`; the Dagster asset checks in `defs/quality_checks.py` only turn
findings into check results. Severities follow the cost of being wrong: data that cannot be right
(duplicate ids, events from the future, metrics that contradict their inputs) is an ERROR; things
that are worth a look but may be legitimate (a new event type, a stale feed, a changed payload
shape) are a WARN.

Schema drift keeps a small baseline in the warehouse (`schema_profile`, `schema_profile_types`,
`schema_profile_watermark`): for every (source, event type) the share of recent events that carry
each key, down to `payload.<object>.<key>`, and the share of events missing each field the pipeline
relies on. Each run profiles only the raw events added since the last run, compares them with the
baseline, then folds them into it. The baseline is a moving average over roughly the last
`BASELINE_WEIGHT_CAP` events of each type, so a change warns once or twice and then becomes the
new normal instead of warning forever.
"""

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb

from gh_pipeline.live.models import DEFAULT_POLL_INTERVAL_S
from gh_pipeline.live.poll_state import PollState
from gh_pipeline.model.metrics import EVENT_COUNT_WINDOWS_MIN
from gh_pipeline.warehouse import scalar, table_exists, transaction
from gh_pipeline.warehouse.catalogue import TRACKED_EVENT_TYPES

ERROR = "ERROR"
WARN = "WARN"

# Event types of GitHub's Events API: the payload schemas in GitHub's event schema
# (gh_pipeline_tests/fixtures/api/event-schema.json, @octokit/openapi 23.0.2) plus the types
# GitHub's "GitHub event types" page documents without a schema there (PullRequestReviewThread,
# Sponsorship). Types GitHub retired long ago still occur in GH Archive hours, so they are known
# too. A type outside this list is a warning: GitHub adds types without notice.
CURRENT_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "CommitCommentEvent",
        "CreateEvent",
        "DeleteEvent",
        "DiscussionEvent",
        "ForkEvent",
        "GollumEvent",
        "IssueCommentEvent",
        "IssuesEvent",
        "MemberEvent",
        "PublicEvent",
        "PullRequestEvent",
        "PullRequestReviewCommentEvent",
        "PullRequestReviewEvent",
        "PullRequestReviewThreadEvent",
        "PushEvent",
        "ReleaseEvent",
        "SponsorshipEvent",
        "WatchEvent",
    }
)
RETIRED_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "DownloadEvent",
        "FollowEvent",
        "ForkApplyEvent",
        "GistEvent",
        "TeamAddEvent",
    }
)
KNOWN_EVENT_TYPES: frozenset[str] = CURRENT_EVENT_TYPES | RETIRED_EVENT_TYPES

# Clocks disagree a little: GitHub's created_at may run ahead of ours by this much.
CLOCK_SKEW = timedelta(minutes=5)

# A poll should succeed at least once in this many poll intervals.
FRESHNESS_INTERVALS = 3

# Fields the pipeline reads from the raw JSON, by event type ("*" = every type). A rising share of
# events without them silently empties typed columns, so the drift check watches them.
RELIED_ON_FIELDS: Mapping[str, tuple[str, ...]] = {
    "*": ("actor.login", "repo.id", "repo.name", "created_at", "payload"),
    "WatchEvent": ("payload.action",),
    "PullRequestEvent": ("payload.action", "payload.number"),
    "IssuesEvent": ("payload.action", "payload.issue.number"),
}

# Drift tuning. A key is "stable" when at least STABLE_SHARE of the baseline carries it, and has
# "vanished" when fewer than VANISHED_SHARE of a batch carries it; a relied-on field has "changed"
# when its missing share moves by RELIED_SHIFT or more. Small samples prove nothing, so a type is
# compared only once MIN_BASELINE_EVENTS were profiled and the batch has MIN_BATCH_EVENTS of it.
STABLE_SHARE = 0.95
VANISHED_SHARE = 0.5
RELIED_SHIFT = 0.10
MIN_BASELINE_EVENTS = 20
MIN_BATCH_EVENTS = 5
BASELINE_WEIGHT_CAP = 500
# A first profile of a large warehouse (or one after a big backfill) looks at the newest events
# only: the baseline needs a sample, not the history, and a check must stay quick.
MAX_PROFILE_BATCH = 5000


@dataclass(frozen=True)
class Finding:
    """The outcome of one check: passed, how bad a failure is, a one-line summary, details."""

    passed: bool
    severity: str
    summary: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _not_built(table: str, severity: str) -> Finding:
    return Finding(True, severity, f"{table} has not been built yet; nothing to check")


# -- raw_events ------------------------------------------------------------------------------


def _has_primary_key(conn: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return bool(
        scalar(
            conn,
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name = $t"
            " AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')"
            " AND constraint_column_names = [$c] AND schema_name = current_schema()",
            {"t": table, "c": column},
        )
    )


def check_unique_ids(conn: duckdb.DuckDBPyConnection) -> Finding:
    """Every event id occurs once in raw_events.

    With the primary key in place DuckDB refuses any write that would duplicate an id, which
    covers every row at no cost; scanning 10 million ids for duplicates takes ~10 s and would run
    on every poll. So the check verifies the key and scans only when the key is missing (a table
    recreated by hand or by a faulty migration), to say how many ids are duplicated.
    """
    if not table_exists(conn, "raw_events"):
        return _not_built("raw_events", ERROR)
    total = int(scalar(conn, "SELECT count(*) FROM raw_events"))
    if _has_primary_key(conn, "raw_events", "event_id"):
        return Finding(
            True,
            ERROR,
            f"all {total} event ids are unique (enforced by the primary key)",
            {"rows": total, "primary_key": True, "duplicated_ids": 0},
        )
    examples = conn.execute(
        "SELECT event_id, count(*) AS n FROM raw_events GROUP BY event_id HAVING count(*) > 1"
        " ORDER BY n DESC, event_id LIMIT 10"
    ).fetchall()
    dup_ids = int(
        scalar(
            conn,
            "SELECT count(*) FROM (SELECT event_id FROM raw_events GROUP BY event_id"
            " HAVING count(*) > 1)",
        )
    )
    meta: dict[str, Any] = {"rows": total, "primary_key": False, "duplicated_ids": dup_ids}
    if dup_ids:
        meta["examples"] = {event_id: int(n) for event_id, n in examples}
        summary = f"{dup_ids} event ids occur more than once (raw_events has no primary key)"
    else:
        summary = "ids are unique today, but raw_events has lost its primary key on event_id"
    return Finding(False, ERROR, summary, meta)


def check_event_types(conn: duckdb.DuckDBPyConnection) -> Finding:
    """Every event type is one GitHub documents (a new type is a warning, not an error)."""
    if not table_exists(conn, "raw_events"):
        return _not_built("raw_events", WARN)
    counts = dict(
        conn.execute("SELECT event_type, count(*) FROM raw_events GROUP BY event_type").fetchall()
    )
    unknown = {t: int(n) for t, n in sorted(counts.items()) if t not in KNOWN_EVENT_TYPES}
    meta: dict[str, Any] = {"event_types": len(counts), "unknown_types": unknown}
    if unknown:
        listed = ", ".join(f"{t} ({n})" for t, n in unknown.items())
        return Finding(False, WARN, f"event types GitHub does not document: {listed}", meta)
    return Finding(True, WARN, f"all {len(counts)} event types are known", meta)


def check_created_at(
    conn: duckdb.DuckDBPyConnection, *, now: datetime, skew: timedelta = CLOCK_SKEW
) -> Finding:
    """No event claims to have happened later than now plus a small clock skew."""
    if not table_exists(conn, "raw_events"):
        return _not_built("raw_events", ERROR)
    limit = now + skew
    n, latest = conn.execute(
        "SELECT count(*), max(created_at) FROM raw_events WHERE created_at > $limit",
        {"limit": limit},
    ).fetchall()[0]
    meta: dict[str, Any] = {
        "checked_at": now.isoformat(),
        "allowed_skew_s": int(skew.total_seconds()),
        "future_events": int(n),
    }
    if n:
        meta["latest_created_at"] = latest.isoformat()
        return Finding(
            False,
            ERROR,
            f"{n} events have created_at after {limit.isoformat()} (latest {latest.isoformat()})",
            meta,
        )
    return Finding(True, ERROR, "no event is dated in the future", meta)


# A poll succeeded when the last request it made was answered 200 or 304 without error: a failed
# poll ends on its failing request, while retries that recovered end on a good answer.
_LAST_GOOD_POLL_SQL = """
WITH ranked AS (
    SELECT status, error,
           min(requested_at) OVER (PARTITION BY poll_id) AS started,
           row_number() OVER (PARTITION BY poll_id ORDER BY requested_at DESC, page DESC) AS rn
    FROM poll_log
)
SELECT max(started) FROM ranked WHERE rn = 1 AND status IN (200, 304) AND error IS NULL
"""


def last_successful_poll(
    conn: duckdb.DuckDBPyConnection | None, state: PollState
) -> datetime | None:
    """When the last poll that GitHub answered (200 or 304) began, from poll_log and the state file."""
    candidates = []
    if state.last_poll_started_at is not None and _succeeded(state):
        candidates.append(state.last_poll_started_at)
    if conn is not None and table_exists(conn, "poll_log"):
        logged = scalar(conn, _LAST_GOOD_POLL_SQL)
        if logged is not None:
            candidates.append(logged)
    return max(candidates) if candidates else None


def _succeeded(state: PollState) -> bool:
    return state.last_status in (200, 304) and not getattr(state, "consecutive_failures", 0)


def expected_interval_s(state: PollState) -> int:
    """The time between polls when all is well: X-Poll-Interval, or longer when the rate budget
    spaces polls out (unauthenticated: ~200 s). Only a successful last poll's plan counts: after a
    failure or refusal the plan is a backoff, and staleness is exactly what should show then."""
    interval = state.poll_interval_s or DEFAULT_POLL_INTERVAL_S
    if _succeeded(state) and state.next_poll_at and state.last_poll_started_at:
        planned = (state.next_poll_at - state.last_poll_started_at).total_seconds()
        interval = max(interval, int(planned))
    return interval


def check_freshness(
    conn: duckdb.DuckDBPyConnection | None, *, state: PollState, now: datetime
) -> Finding:
    """A poll has succeeded within FRESHNESS_INTERVALS poll intervals."""
    interval_s = expected_interval_s(state)
    allowed = timedelta(seconds=FRESHNESS_INTERVALS * interval_s)
    last = last_successful_poll(conn, state)
    meta: dict[str, Any] = {
        "poll_interval_s": interval_s,
        "allowed_age_s": int(allowed.total_seconds()),
        "last_successful_poll_at": last.isoformat() if last else "never",
    }
    if state.reason:
        meta["poll_state_reason"] = state.reason
    if last is None:
        return Finding(False, WARN, "no poll has succeeded yet", meta)
    age = now - last
    meta["age_s"] = int(age.total_seconds())
    if age > allowed:
        return Finding(
            False,
            WARN,
            f"no successful poll for {int(age.total_seconds())} s"
            f" (more than {FRESHNESS_INTERVALS} poll intervals of {interval_s} s)",
            meta,
        )
    return Finding(True, WARN, f"last successful poll {int(age.total_seconds())} s ago", meta)


# -- schema drift ----------------------------------------------------------------------------


def event_key_paths(event: Mapping[str, Any]) -> set[str]:
    """Key paths of an event: top-level keys, keys of top-level objects, and one level deeper
    inside `payload` (payload.pull_request.title); deeper levels are GitHub's nested resources."""
    paths: set[str] = set()
    for k1, v1 in event.items():
        paths.add(k1)
        if isinstance(v1, dict):
            for k2, v2 in v1.items():
                paths.add(f"{k1}.{k2}")
                if k1 == "payload" and isinstance(v2, dict):
                    paths.update(f"{k1}.{k2}.{k3}" for k3 in v2)
    return paths


def _lookup(event: Mapping[str, Any], path: str) -> Any:
    node: Any = event
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def relied_on_fields(event_type: str) -> tuple[str, ...]:
    return RELIED_ON_FIELDS["*"] + RELIED_ON_FIELDS.get(event_type, ())


@dataclass
class _TypeBatch:
    events: int = 0
    keys: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    missing: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(frozen=True)
class TypeDrift:
    source: str
    event_type: str
    events: int
    new_keys: tuple[str, ...]
    vanished_keys: tuple[str, ...]
    relied_changes: tuple[tuple[str, float, float], ...]  # (field, baseline missing, batch missing)

    @property
    def drifted(self) -> bool:
        return bool(self.new_keys or self.vanished_keys or self.relied_changes)


def _profile_batch(
    rows: Iterable[tuple[str, str, str]],
) -> dict[tuple[str, str], _TypeBatch]:
    batches: dict[tuple[str, str], _TypeBatch] = defaultdict(_TypeBatch)
    for source, event_type, text in rows:
        try:
            event = json.loads(text)
        except ValueError:
            continue  # the load validated it; a bad row here is not a schema question
        if not isinstance(event, dict):
            continue
        batch = batches[(source, event_type)]
        batch.events += 1
        for path in event_key_paths(event):
            batch.keys[path] += 1
        for path in relied_on_fields(event_type):
            if _lookup(event, path) is None:
                batch.missing[path] += 1
    return batches


def profile_schema(
    conn: duckdb.DuckDBPyConnection,
    *,
    now: datetime,
    max_batch: int = MAX_PROFILE_BATCH,
    min_baseline_events: int = MIN_BASELINE_EVENTS,
    min_batch_events: int = MIN_BATCH_EVENTS,
) -> Finding:
    """Profile raw events added since the last run, compare with the baseline, fold them in.

    Runs in one transaction: a crash leaves the baseline and its watermark as they were.
    """
    with transaction(conn):
        finding = _profile_schema(
            conn,
            now=now,
            max_batch=max_batch,
            min_baseline_events=min_baseline_events,
            min_batch_events=min_batch_events,
        )
    return finding


def _profile_schema(
    conn: duckdb.DuckDBPyConnection,
    *,
    now: datetime,
    max_batch: int,
    min_baseline_events: int,
    min_batch_events: int,
) -> Finding:
    watermark = int(
        scalar(conn, "SELECT coalesce(max(profiled_seq), 0) FROM schema_profile_watermark")
    )
    max_seq = scalar(conn, "SELECT max(seq) FROM raw_events")
    if max_seq is None or int(max_seq) <= watermark:
        return Finding(
            True, WARN, "no new events to profile", {"profiled_up_to_seq": watermark, "events": 0}
        )
    # Newest first, so a capped batch is the most recent sample. Rows whose raw JSON retention
    # already removed carry nothing to profile.
    rows = conn.execute(
        "SELECT source, event_type, event::VARCHAR FROM raw_events"
        " WHERE seq > $watermark AND event IS NOT NULL ORDER BY seq DESC LIMIT $cap",
        {"watermark": watermark, "cap": max_batch},
    ).fetchall()
    skipped = int(
        scalar(conn, "SELECT count(*) FROM raw_events WHERE seq > $w", {"w": watermark})
    ) - len(rows)
    batches = _profile_batch(rows)

    baseline_types = {
        (s, t): (float(w), int(n))
        for s, t, w, n in conn.execute(
            "SELECT source, event_type, weight, events_profiled FROM schema_profile_types"
        ).fetchall()
    }
    baseline: dict[tuple[str, str], dict[tuple[str, str], tuple[float, datetime]]] = defaultdict(
        dict
    )
    for s, t, kind, path, share, first_seen in conn.execute(
        "SELECT source, event_type, kind, path, share, first_seen_at FROM schema_profile"
    ).fetchall():
        baseline[(s, t)][(kind, path)] = (float(share), first_seen)

    drifts: list[TypeDrift] = []
    started: list[str] = []
    for (source, event_type), batch in sorted(batches.items()):
        weight, profiled = baseline_types.get((source, event_type), (0.0, 0))
        base = baseline[(source, event_type)]
        n = batch.events
        batch_key_share = {p: c / n for p, c in batch.keys.items()}
        batch_missing_share = {p: batch.missing.get(p, 0) / n for p in relied_on_fields(event_type)}
        if profiled >= min_baseline_events:
            new_keys = tuple(sorted(p for p in batch_key_share if ("key", p) not in base))
            vanished: tuple[str, ...] = ()
            relied: tuple[tuple[str, float, float], ...] = ()
            if n >= min_batch_events:
                vanished = tuple(
                    sorted(
                        p
                        for (kind, p), (share, _) in base.items()
                        if kind == "key"
                        and share >= STABLE_SHARE
                        and batch_key_share.get(p, 0.0) < VANISHED_SHARE
                    )
                )
                relied = tuple(
                    (p, base[("missing", p)][0], batch_missing_share[p])
                    for p in relied_on_fields(event_type)
                    if ("missing", p) in base
                    and abs(batch_missing_share[p] - base[("missing", p)][0]) >= RELIED_SHIFT
                )
            drifts.append(TypeDrift(source, event_type, n, new_keys, vanished, relied))
        else:
            started.append(f"{event_type} ({source})")
        # Fold the batch into the moving baseline (a key absent from the batch counts as 0).
        total = weight + n
        for kind, shares in (("key", batch_key_share), ("missing", batch_missing_share)):
            for p in set(shares) | {p for (k, p) in base if k == kind}:
                old_share, first_seen = base.get((kind, p), (0.0, now))
                base[(kind, p)] = (
                    (old_share * weight + shares.get(p, 0.0) * n) / total,
                    first_seen,
                )
        baseline_types[(source, event_type)] = (min(total, BASELINE_WEIGHT_CAP), profiled + n)

    _save_baseline(conn, baseline, baseline_types, batches.keys(), now=now)
    conn.execute("DELETE FROM schema_profile_watermark")
    conn.execute(
        "INSERT INTO schema_profile_watermark VALUES ($seq, $now)", {"seq": max_seq, "now": now}
    )
    return _drift_finding(drifts, started, events=len(rows), skipped=skipped, seq=int(max_seq))


def _save_baseline(
    conn: duckdb.DuckDBPyConnection,
    baseline: Mapping[tuple[str, str], Mapping[tuple[str, str], tuple[float, datetime]]],
    types: Mapping[tuple[str, str], tuple[float, int]],
    touched: Iterable[tuple[str, str]],
    *,
    now: datetime,
) -> None:
    cols: dict[str, list[Any]] = {k: [] for k in ("s", "t", "kind", "p", "share", "first")}
    for s, t in touched:
        conn.execute(
            "DELETE FROM schema_profile WHERE source = $s AND event_type = $t", {"s": s, "t": t}
        )
        conn.execute(
            "DELETE FROM schema_profile_types WHERE source = $s AND event_type = $t",
            {"s": s, "t": t},
        )
        weight, profiled = types[(s, t)]
        conn.execute(
            "INSERT INTO schema_profile_types VALUES ($s, $t, $w, $n, $now)",
            {"s": s, "t": t, "w": weight, "n": profiled, "now": now},
        )
        for (kind, p), (share, first) in baseline[(s, t)].items():
            for key, value in zip(cols, (s, t, kind, p, share, first), strict=True):
                cols[key].append(value)
    if cols["s"]:
        # Column lists unnested side by side: one statement instead of a row-by-row executemany.
        conn.execute(
            "INSERT INTO schema_profile SELECT unnest($s), unnest($t), unnest($kind), unnest($p),"
            " unnest($share)::DOUBLE, unnest($first)::TIMESTAMPTZ",
            cols,
        )


def _drift_finding(
    drifts: list[TypeDrift], started: list[str], *, events: int, skipped: int, seq: int
) -> Finding:
    drifted = [d for d in drifts if d.drifted]
    meta: dict[str, Any] = {
        "events_profiled": events,
        "events_skipped": skipped,
        "profiled_up_to_seq": seq,
        "types_compared": len(drifts),
        "types_drifted": len(drifted),
    }
    if started:
        meta["baseline_started_for"] = ", ".join(started)
    if drifted:
        lines = ["| type | source | events | new keys | vanished keys | relied-on fields |"]
        lines.append("|---|---|---|---|---|---|")
        for d in drifted:
            relied = "; ".join(f"{p}: missing {a:.0%} → {b:.0%}" for p, a, b in d.relied_changes)
            lines.append(
                f"| {d.event_type} | {d.source} | {d.events} | {_short(d.new_keys)} "
                f"| {_short(d.vanished_keys)} | {relied} |"
            )
        meta["drift"] = "\n".join(lines)
        meta["drift_detail"] = {
            f"{d.event_type} ({d.source})": {
                "new_keys": list(d.new_keys),
                "vanished_keys": list(d.vanished_keys),
                "relied_on_missing": {p: [a, b] for p, a, b in d.relied_changes},
            }
            for d in drifted
        }
        names = ", ".join(f"{d.event_type} ({d.source})" for d in drifted)
        return Finding(False, WARN, f"payload shape changed for {names}", meta)
    return Finding(True, WARN, f"no schema drift in {events} new events", meta)


def _short(items: tuple[str, ...], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … (+{len(items) - limit})" if len(items) > limit else "")


# -- metric tables ---------------------------------------------------------------------------

_PR_INTERVALS_PROBLEMS_SQL = """
WITH expected AS (
    SELECT repo_name, count(*) AS opened FROM pull_request_events
    WHERE action = 'opened' GROUP BY repo_name
)
SELECT
    count(*) FILTER (WHERE m.avg_interval_s < 0 OR m.median_interval_s < 0
                     OR m.p90_interval_s < 0) AS negative_interval,
    count(*) FILTER (WHERE m.avg_interval_s IS NOT NULL AND m.pr_opened < 2) AS avg_without_two,
    count(*) FILTER (WHERE m.avg_interval_s IS NULL AND m.pr_opened >= 2) AS two_without_avg,
    count(*) FILTER (WHERE m.first_opened_at > m.last_opened_at) AS first_after_last,
    count(*) FILTER (WHERE m.median_interval_s > m.p90_interval_s + 1e-6) AS median_above_p90,
    count(*) FILTER (WHERE m.repo_name IS NULL OR e.repo_name IS NULL
                     OR m.pr_opened <> e.opened) AS count_mismatch
FROM pr_intervals m FULL OUTER JOIN expected e ON m.repo_name = e.repo_name
"""

_REPO_PR_COUNTS_PROBLEMS_SQL = """
WITH expected AS (
    SELECT repo_name, count(*) AS events, count(*) FILTER (WHERE action = 'opened') AS opened
    FROM pull_request_events GROUP BY repo_name
)
SELECT
    count(*) FILTER (WHERE m.repo_name IS NULL OR e.repo_name IS NULL
                     OR m.pr_events <> e.events) AS pr_events_mismatch,
    count(*) FILTER (WHERE m.pr_opened <> e.opened) AS pr_opened_mismatch,
    count(*) FILTER (WHERE m.pr_opened > m.pr_events OR m.pr_opened < 0) AS opened_above_events
FROM repo_pr_counts m FULL OUTER JOIN expected e ON m.repo_name = e.repo_name
"""

# Recount the latest as_of from the filtered tables in one pass over the longest window; the
# created_at range lets DuckDB skip row groups outside it, so the cost follows a day of events.
_EVENT_COUNTS_PROBLEMS_SQL = """
WITH latest AS (
    SELECT max(as_of) AS as_of FROM event_counts
), tracked AS (
    SELECT 'WatchEvent' AS event_type, created_at FROM watch_events
    UNION ALL SELECT 'PullRequestEvent', created_at FROM pull_request_events
    UNION ALL SELECT 'IssuesEvent', created_at FROM issues_events
), recent AS (
    SELECT t.event_type, t.created_at FROM tracked t, latest l
    WHERE t.created_at > l.as_of - to_minutes($longest::BIGINT) AND t.created_at <= l.as_of
), expected AS (
    SELECT w.window_minutes, y.event_type,
           (SELECT count(*) FROM recent r, latest l
            WHERE r.event_type = y.event_type
              AND r.created_at > l.as_of - to_minutes(w.window_minutes::BIGINT)) AS expected
    FROM unnest($windows) AS w(window_minutes) CROSS JOIN unnest($types) AS y(event_type)
), stored AS (
    SELECT c.*,
           lag(c.event_count) OVER (PARTITION BY c.event_type ORDER BY c.window_minutes) AS shorter
    FROM event_counts c
)
SELECT
    count(*) FILTER (WHERE s.event_count IS DISTINCT FROM e.expected) AS count_mismatch,
    count(*) FILTER (WHERE s.event_count < 0) AS negative_count,
    count(*) FILTER (WHERE s.event_count < s.shorter) AS longer_window_smaller,
    count(*) FILTER (WHERE s.window_minutes IS NULL OR e.window_minutes IS NULL)
        AS missing_or_extra_cells,
    (SELECT count(DISTINCT as_of) FROM event_counts) AS as_of_values,
    count(s.window_minutes) AS cells
FROM stored s FULL OUTER JOIN expected e
  ON s.window_minutes = e.window_minutes AND s.event_type = e.event_type
"""


def _problems(
    conn: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None
) -> dict[str, int]:
    cursor = conn.execute(sql, params or {})
    names = [d[0] for d in cursor.description]
    values = cursor.fetchall()[0]
    return {name: int(v or 0) for name, v in zip(names, values, strict=True)}


def _metric_finding(table: str, problems: Mapping[str, int], rows: int) -> Finding:
    bad = {k: v for k, v in problems.items() if v}
    meta: dict[str, Any] = {"rows": rows, **problems}
    if bad:
        listed = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in bad.items())
        return Finding(False, ERROR, f"{table}: {listed}", meta)
    return Finding(True, ERROR, f"{table}: {rows} rows consistent with the filtered tables", meta)


def check_pr_intervals(conn: duckdb.DuckDBPyConnection) -> Finding:
    """Intervals non-negative, an average only where pr_opened ≥ 2, counts match the filtered table."""
    if not table_exists(conn, "pr_intervals"):
        return _not_built("pr_intervals", ERROR)
    rows = int(scalar(conn, "SELECT count(*) FROM pr_intervals"))
    return _metric_finding("pr_intervals", _problems(conn, _PR_INTERVALS_PROBLEMS_SQL), rows)


def check_repo_pr_counts(conn: duckdb.DuckDBPyConnection) -> Finding:
    """Per-repository counts equal a recount of pull_request_events."""
    if not table_exists(conn, "repo_pr_counts"):
        return _not_built("repo_pr_counts", ERROR)
    rows = int(scalar(conn, "SELECT count(*) FROM repo_pr_counts"))
    return _metric_finding("repo_pr_counts", _problems(conn, _REPO_PR_COUNTS_PROBLEMS_SQL), rows)


def check_event_counts(conn: duckdb.DuckDBPyConnection) -> Finding:
    """Window counts equal a recount of the filtered tables at as_of, every (window, type) cell is
    there once, and a longer window never counts fewer events."""
    if not table_exists(conn, "event_counts"):
        return _not_built("event_counts", ERROR)
    problems = _problems(
        conn,
        _EVENT_COUNTS_PROBLEMS_SQL,
        {
            "longest": max(EVENT_COUNT_WINDOWS_MIN),
            "windows": list(EVENT_COUNT_WINDOWS_MIN),
            "types": list(TRACKED_EVENT_TYPES),
        },
    )
    cells = problems.pop("cells")
    problems["mixed_as_of"] = int(problems.pop("as_of_values") > 1)
    return _metric_finding("event_counts", problems, cells)
