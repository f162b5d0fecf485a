"""Incremental maintenance equals full recomputation exactly, table by table.

Real recorded events are re-identified, re-dated and spread over a few repositories, then
delivered in random batches the way the live feed delivers them: mostly in order, some 30 s to 6 h
late, some delivered twice. Warehouse A applies every batch as a tick (raw → filtered → metrics,
in a random order, sometimes skipping a metric); warehouse B loads everything at once and takes
the full-rebuild path. Both are also checked against a plain-Python reading of the definitions.
"""

import copy
import itertools
import json
import random
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from gh_pipeline import warehouse
from gh_pipeline.model import filtered, metrics
from gh_pipeline.model.metrics import EVENT_COUNT_WINDOWS_MIN
from gh_pipeline.warehouse import catalogue, raw
from gh_pipeline.warehouse.catalogue import TRACKED_EVENT_TYPES
from gh_pipeline_tests.support.fake_github import archive_fixture_events, recorded_2019_feed

REPOS = ["octo/alpha", "octo/beta", "gamma/gamma", "d'quote/repo;x", "ünï/cödé", "solo/one"]
BASE = datetime(2024, 3, 10, 8, 0, tzinfo=UTC)
SPAN_S = 30 * 3600


TEMPLATES = recorded_2019_feed() + archive_fixture_events()
TRACKED = [e for e in TEMPLATES if e["type"] in TRACKED_EVENT_TYPES]
UNTRACKED = [e for e in TEMPLATES if e["type"] not in TRACKED_EVENT_TYPES]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _history(rng: random.Random, count: int) -> list[tuple[datetime, dict[str, Any]]]:
    """(arrival time, event) pairs, in arrival order."""
    out = []
    for i in range(count):
        pool = TRACKED if rng.random() < 0.75 else UNTRACKED
        event = copy.deepcopy(rng.choice(pool))
        event["id"] = f"{rng.randrange(10**6):06d}{i:05d}"
        created = BASE + timedelta(seconds=rng.uniform(0, SPAN_S))
        if rng.random() < 0.3:
            created = created.replace(second=0, microsecond=0)  # exactly on a minute boundary
        elif rng.random() < 0.5:
            created = created.replace(microsecond=0)  # GitHub's own precision
        event["created_at"] = _iso(created)
        repo = rng.choice(REPOS[:-1]) if rng.random() < 0.95 else REPOS[-1]
        event["repo"] = {"id": REPOS.index(repo) + 1, "name": repo, "url": ""}
        if event["type"] == "PullRequestEvent" and rng.random() < 0.6:
            event["payload"]["action"] = "opened"
        delay = timedelta(seconds=rng.uniform(0, 20))
        if rng.random() < 0.15:
            delay = timedelta(seconds=rng.uniform(30, 6 * 3600))  # a late event
        out.append((created + delay, event))
    out.sort(key=lambda pair: pair[0])
    return out


def _batches(
    rng: random.Random, history: list[tuple[datetime, dict[str, Any]]]
) -> list[tuple[datetime, list[dict[str, Any]]]]:
    """Cut the arrivals into polls; each poll also repeats some events already delivered (and
    sometimes one of its own twice), like the overlapping live feed."""
    batches = []
    i = 0
    delivered: list[dict[str, Any]] = []
    while i < len(history):
        size = rng.randint(1, 60)
        chunk = history[i : i + size]
        i += size
        events = [e for _, e in chunk]
        repeats = rng.sample(delivered, min(len(delivered), rng.randint(0, 10)))
        if events and rng.random() < 0.2:
            repeats.append(events[0])
        delivered.extend(events)
        # as_of: usually just after the last arrival; sometimes exactly on an event or on a
        # window edge of one, or on a whole minute.
        as_of = chunk[-1][0] + timedelta(microseconds=rng.randrange(1, 10**7))
        pick = rng.random()
        if pick < 0.15:
            as_of = datetime.fromisoformat(rng.choice(events)["created_at"])
        elif pick < 0.3:
            w = rng.choice(EVENT_COUNT_WINDOWS_MIN)
            as_of = datetime.fromisoformat(rng.choice(events)["created_at"]) + timedelta(minutes=w)
        elif pick < 0.4:
            as_of = as_of.replace(second=0, microsecond=0)
        batches.append((as_of, events + repeats))
    return batches


def _write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def _table(conn: duckdb.DuckDBPyConnection, table: str, columns: str = "*") -> list[tuple]:
    return conn.execute(f"SELECT {columns} FROM {table} ORDER BY ALL").fetchall()


FILTERED_COLUMNS = "event_id, created_at, actor_login, repo_id, repo_name, action, source"


def _python_pr_intervals(events: list[dict[str, Any]]) -> dict[str, tuple]:
    """pr_intervals straight from the definition, in Python, on the distinct events."""
    opened: dict[str, list[datetime]] = {}
    for e in events:
        if e["type"] == "PullRequestEvent" and e["payload"].get("action") == "opened":
            opened.setdefault(e["repo"]["name"], []).append(datetime.fromisoformat(e["created_at"]))
    out = {}
    for repo, times in opened.items():
        times.sort()
        gaps = sorted((b - a).total_seconds() for a, b in itertools.pairwise(times))

        def quantile(q: float, gaps: list[float] = gaps) -> float:
            pos = (len(gaps) - 1) * q
            lo = int(pos)
            hi = min(lo + 1, len(gaps) - 1)
            return gaps[lo] + (gaps[hi] - gaps[lo]) * (pos - lo)

        stats = (
            (statistics.fmean(gaps), quantile(0.5), quantile(0.9)) if gaps else (None, None, None)
        )
        out[repo] = (len(times), times[0], times[-1], *stats)
    return out


def _python_event_counts(events: list[dict[str, Any]], as_of: datetime) -> dict[tuple, int]:
    out = {}
    for w in EVENT_COUNT_WINDOWS_MIN:
        start = as_of - timedelta(minutes=w)
        for t in TRACKED_EVENT_TYPES:
            out[(w, t)] = sum(
                1
                for e in events
                if e["type"] == t and start < datetime.fromisoformat(e["created_at"]) <= as_of
            )
    return out


def _tick(conn: duckdb.DuckDBPyConnection, rng: random.Random, as_of: datetime) -> bool:
    """Refresh the filtered and metric tables in a random order, skipping some (a failed or
    not-yet-run asset); returns whether event_counts was refreshed for `as_of`."""
    for name in rng.sample(list(catalogue.FILTERED_TABLES), 3):
        if rng.random() < 0.85:
            filtered.refresh_filtered(conn, name)
    refreshed = False
    for step in rng.sample(["pr", "counts", "events"], 3):
        if rng.random() < 0.2:
            continue
        if step == "pr":
            metrics.refresh_pr_intervals(conn)
        elif step == "counts":
            metrics.refresh_repo_pr_counts(conn)
        else:
            metrics.refresh_event_counts(conn, as_of=as_of)
            refreshed = True
    return refreshed


def _event_counts(conn: duckdb.DuckDBPyConnection) -> dict[tuple, int]:
    rows = conn.execute("SELECT window_minutes, event_type, event_count FROM event_counts")
    return {(w, t): n for w, t, n in rows.fetchall()}


@pytest.mark.parametrize("seed", range(6))
def test_incremental_equals_full_recomputation(tmp_path: Path, seed: int):
    rng = random.Random(seed)
    history = _history(rng, 350)
    batches = _batches(rng, history)

    a = warehouse.connect(tmp_path / "incremental.duckdb")
    warehouse.ensure_schema(a)
    seen: dict[str, dict[str, Any]] = {}
    for n, (as_of, events) in enumerate(batches):
        raw.load_ndjson(
            a, _write(tmp_path / f"poll{n}.ndjson", events), poll_id=f"p{n}", source="api"
        )
        for e in events:
            seen.setdefault(e["id"], e)
        if _tick(a, rng, as_of):
            # Every event the filtered tables hold so far, against the definition.
            held = {
                r[0]
                for r in a.execute(
                    "SELECT event_id FROM watch_events UNION ALL SELECT event_id FROM"
                    " pull_request_events UNION ALL SELECT event_id FROM issues_events"
                ).fetchall()
            }
            assert _event_counts(a) == _python_event_counts([seen[i] for i in held], as_of), (
                f"event_counts at tick {n} (as_of {as_of.isoformat()})"
            )
    final_as_of = batches[-1][0] + timedelta(minutes=1)
    metrics.refresh_all(a, as_of=final_as_of)

    b = warehouse.connect(tmp_path / "full.duckdb")
    warehouse.ensure_schema(b)
    everything = list(seen.values())
    rng.shuffle(everything)
    raw.load_ndjson(b, _write(tmp_path / "all.ndjson", everything), poll_id="all", source="api")
    metrics.rebuild_all(b, as_of=final_as_of)

    assert _table(a, "raw_events", "event_id") == _table(b, "raw_events", "event_id")
    for name, table in catalogue.FILTERED_TABLES.items():
        columns = FILTERED_COLUMNS + (", number" if table.has_number else "")
        # seq differs between the two warehouses (arrival order); everything else must not.
        assert _table(a, name, columns) == _table(b, name, columns), name
    for table in (
        metrics.PR_INTERVALS,
        metrics.REPO_PR_COUNTS,
        metrics.EVENT_COUNTS,
        metrics.PR_OPENED_TIMES,
        metrics.EVENT_MINUTE_COUNTS,
    ):
        assert _table(a, table) == _table(b, table), table  # exact, floats included

    # And both equal the definitions read in plain Python.
    expected = _python_pr_intervals(everything)
    got = {r[0]: r[1:] for r in _table(a, metrics.PR_INTERVALS)}
    assert got.keys() == expected.keys()
    for repo, row in expected.items():
        assert got[repo][:3] == row[:3], repo
        if row[3] is None:
            assert got[repo][3:] == (None, None, None), repo
        else:
            assert got[repo][3:] == pytest.approx(row[3:], rel=1e-12), repo
    assert _event_counts(a) == _python_event_counts(everything, final_as_of)
    counts = {r[0]: r[1:] for r in _table(a, metrics.REPO_PR_COUNTS)}
    prs = [e for e in everything if e["type"] == "PullRequestEvent"]
    assert counts == {
        repo: (
            sum(1 for e in prs if e["repo"]["name"] == repo),
            sum(1 for e in prs if e["repo"]["name"] == repo and e["payload"]["action"] == "opened"),
        )
        for repo in {e["repo"]["name"] for e in prs}
    }
    a.close()
    b.close()
