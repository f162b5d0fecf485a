"""Benchmark: the cost of one tick, and of a full recomputation, as history grows.

    uv run python -m gh_pipeline_tests.benchmarks.tick                      # 100k, 1M and 10M events
    uv run python -m gh_pipeline_tests.benchmarks.tick --sizes 100000,1000000 --ticks 5

For every history size it builds a synthetic warehouse from real event templates (the recorded
events in gh_pipeline_tests/fixtures, PullRequest/Push payloads in the trimmed shape GitHub serves
since October 2025), with Zipf-like repository and actor popularity, the templates' own type mix
and PR-opened share, 30 days of history ending now, and 5 % of events arriving 30 s to 6 h late.
History is generated in bulk SQL, never row by row in Python.

Then, side by side:
- tick: a poll's 300 new events (5 % of them late) → the poll's id lookups and its landing
  file → raw_events → the three filtered tables → the three metric tables → Parquet snapshots
  for readers. Each step opens and closes the warehouse as its Dagster asset does; Dagster's own
  run overhead and the assets' chart metadata are not included.
- full: the full-recomputation path (filtered tables from raw, every metric from the filtered
  tables, every snapshot) on the same warehouse.
- queries: gh_pipeline.read.query's event_counts(60), pr_intervals(repo) and repo_pr_counts(20) on
  the published snapshots, p50/p95 over repeated calls, and the p50 of the first call after a
  publication (which opens the process's next sandboxed in-memory DuckDB).
Each phase runs in its own process so its peak memory (max RSS) is its own. The figures are
printed as a table and written to <data_dir>/benchmarks/tick.json.
"""

import argparse
import copy
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline import settings, warehouse
from gh_pipeline.live import landing
from gh_pipeline.model import filtered, metrics
from gh_pipeline.publish import snapshot
from gh_pipeline.read import query
from gh_pipeline.warehouse import catalogue, raw

FIXTURES = Path(__file__).resolve().parents[2] / "gh_pipeline_tests" / "fixtures"
GENERATOR_VERSION = 1
HISTORY_DAYS = 30
TICK_EVENTS = 300
LATE_SHARE = 0.05
SNAPSHOT_TABLES = (
    *catalogue.FILTERED_TABLES,
    metrics.PR_INTERVALS,
    metrics.EVENT_COUNTS,
    metrics.REPO_PR_COUNTS,
)
DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
FIRST_EVENT_ID = 40_000_000_000  # GitHub-sized numeric ids


# --- templates ---------------------------------------------------------------------------------


def _trim(event: dict[str, Any]) -> dict[str, Any]:
    # Imported lazily: the test package is a development dependency of this command only.
    from gh_pipeline_tests.support.fake_github import trim_event

    return trim_event(event)


def load_templates() -> list[dict[str, Any]]:
    """Every distinct recorded event of the public feed in fixtures, in today's trimmed shape."""
    # Imported lazily: the test package is a development dependency of this command only.
    from gh_pipeline_tests.support.fake_github import archive_fixture_events

    events: dict[str, dict[str, Any]] = {}
    for event in archive_fixture_events():
        events.setdefault(str(event["id"]), event)
    for path in sorted((FIXTURES / "api").glob("events-2019-10-21-page*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for event in data["events"] if isinstance(data, dict) else data:
            events.setdefault(str(event["id"]), event)
    return [_trim(e) for e in events.values()]


_ID, _TS, _REPO, _REPO_ID, _ACTOR = "@@ID@@", "@@TS@@", "@@REPO@@", "@@RID@@", "@@ACTOR@@"


def _template_row(tid: int, event: dict[str, Any]) -> dict[str, Any]:
    """The event as JSON text with placeholders for what each synthetic copy changes."""
    event = copy.deepcopy(event)
    event["id"] = _ID
    event["created_at"] = _TS
    event["repo"] = {"id": _REPO_ID, "name": _REPO, "url": f"https://api.github.com/repos/{_REPO}"}
    actor = event.get("actor") or {}
    actor["login"] = _ACTOR
    if "display_login" in actor:
        actor["display_login"] = _ACTOR
    event["actor"] = actor
    text = json.dumps(event, separators=(",", ":")).replace(f'"{_REPO_ID}"', _REPO_ID)
    return {
        "tid": tid,
        "event_type": event["type"],
        "event_text": text,
        "payload_text": json.dumps(event.get("payload", {}), separators=(",", ":")),
    }


# Zipf-like popularity: rank k has weight 1 / (k + Q) (Zipf-Mandelbrot, s = 1), drawn by inverse
# CDF from a uniform u: k = Q * ((R + Q) / Q) ** u - Q. Q keeps the top repository near 0.1 % of
# events, as on the real feed, instead of the several percent plain Zipf would give it.
_REPO_Q, _ACTOR_Q = 100.0, 10.0

_GENERATE_SQL = f"""
INSERT INTO raw_events (event_id, event_type, created_at, actor_login, repo_id, repo_name,
                        payload, event, ingested_at, poll_id, source)
WITH g AS (
    SELECT i,
           hash(i, 'template') % $templates AS tid,
           floor({_REPO_Q} * pow(($repos + {_REPO_Q}) / {_REPO_Q},
                 (hash(i, 'repo') % 1000000007) / 1000000007.0) - {_REPO_Q})::BIGINT AS repo_rank,
           floor({_ACTOR_Q} * pow(($actors + {_ACTOR_Q}) / {_ACTOR_Q},
                 (hash(i, 'actor') % 1000000007) / 1000000007.0) - {_ACTOR_Q})::BIGINT AS actor_rank,
           $start::TIMESTAMPTZ + to_microseconds((i * $step_us)::BIGINT)
               - CASE WHEN hash(i, 'late') % 10000 < {int(LATE_SHARE * 10000)}
                      THEN to_seconds(30 + (hash(i, 'delay') % (6 * 3600 - 30))::BIGINT)
                      ELSE INTERVAL 0 SECOND END AS created_at
    FROM range($lo, $hi) r(i)
), e AS (
    SELECT g.i, t.event_type, t.event_text, t.payload_text,
           date_trunc('second', g.created_at) AS created_at,
           'owner' || (g.repo_rank // 5) || '/repo-' || g.repo_rank AS repo_name,
           1000000 + g.repo_rank AS repo_id,
           'user' || g.actor_rank AS actor_login,
           ($first_id + g.i)::VARCHAR AS event_id
    FROM g JOIN templates t ON t.tid = g.tid
)
SELECT event_id, event_type, created_at, actor_login, repo_id, repo_name, payload_text,
       replace(replace(replace(replace(replace(event_text,
           '{_ID}', event_id),
           '{_TS}', strftime(created_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ')),
           '{_REPO_ID}', repo_id::VARCHAR),
           '{_REPO}', repo_name),
           '{_ACTOR}', actor_login),
       $ingested_at, 'history-' || (i // 300), 'synthetic'
FROM e
"""


# --- helpers -----------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def _timed(into: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    into[key] = into.get(key, 0.0) + (time.perf_counter() - start)


@contextmanager
def _warehouse(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """What gh_pipeline.defs.warehouse.resources.Warehouse.connect does for every asset."""
    conn = warehouse.connect(path)
    try:
        warehouse.ensure_schema(conn)
        yield conn
    finally:
        conn.close()


def _size_dir(workdir: Path, size: int) -> Path:
    return workdir / f"n{size}"


def _describe_machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- phase: generate ---------------------------------------------------------------------------


def generate(size_dir: Path, size: int, *, seed_now: datetime) -> dict[str, Any]:
    """Build the warehouse with `size` events of history, then its filtered and metric tables
    and snapshots through the full-rebuild path."""
    if size_dir.exists():
        shutil.rmtree(size_dir)
    size_dir.mkdir(parents=True)
    templates = [_template_row(i, e) for i, e in enumerate(load_templates())]
    path = settings.warehouse_path(size_dir)
    timings: dict[str, float] = {}
    conn = warehouse.connect(path)
    try:
        # A good neighbour on a shared machine; the bulk insert streams in 1M-row chunks anyway.
        conn.execute("SET memory_limit = '4GB'")
        warehouse.ensure_schema(conn)
        conn.execute(
            "CREATE TEMP TABLE templates (tid BIGINT, event_type VARCHAR, event_text VARCHAR,"
            " payload_text VARCHAR)"
        )
        conn.executemany(
            "INSERT INTO templates VALUES ($tid, $event_type, $event_text, $payload_text)",
            templates,
        )
        end = seed_now - timedelta(minutes=2)
        start = end - timedelta(days=HISTORY_DAYS)
        step_us = HISTORY_DAYS * 86400 * 1_000_000 / size
        chunk = 1_000_000
        with _timed(timings, "raw_s"):
            for lo in range(0, size, chunk):
                conn.execute(
                    _GENERATE_SQL,
                    {
                        "templates": len(templates),
                        "repos": max(1000, size // 3),
                        "actors": max(1000, size // 5),
                        "start": start,
                        "step_us": step_us,
                        "lo": lo,
                        "hi": min(size, lo + chunk),
                        "first_id": FIRST_EVENT_ID,
                        "ingested_at": seed_now,
                    },
                )
        with _timed(timings, "rebuild_s"):
            metrics.rebuild_all(conn, as_of=seed_now)
        with _timed(timings, "snapshot_s"):
            for table in SNAPSHOT_TABLES:
                snapshot.publish_table(conn, settings.snapshot_dir(size_dir), table)
        conn.execute("CHECKPOINT")
        counts = {
            t: int(warehouse.scalar(conn, f"SELECT count(*) FROM {t}"))
            for t in ("raw_events", *SNAPSHOT_TABLES)
        }
        mix = conn.execute(
            "SELECT count(*) FILTER (WHERE event_type = 'PullRequestEvent'),"
            " count(*) FILTER (WHERE event_type IN ('WatchEvent', 'PullRequestEvent',"
            " 'IssuesEvent')), count(DISTINCT repo_name) FROM raw_events"
        ).fetchall()[0]
        opened = warehouse.scalar(
            conn, "SELECT count(*) FROM pull_request_events WHERE action = 'opened'"
        )
    finally:
        conn.close()
    (size_dir / "generated.json").write_text(
        json.dumps({"size": size, "version": GENERATOR_VERSION, "at": seed_now.isoformat()}),
        encoding="utf-8",
    )
    return {
        "timings": timings,
        "rows": counts,
        "pr_share": mix[0] / size,
        "tracked_share": mix[1] / size,
        "pr_opened_share_of_pr": int(opened) / max(1, mix[0]),
        "distinct_repos": mix[2],
        "warehouse_mb": round(path.stat().st_size / 2**20, 1),
        "templates": len(templates),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _generated_ok(size_dir: Path, size: int) -> bool:
    marker = size_dir / "generated.json"
    if not marker.exists() or not settings.warehouse_path(size_dir).exists():
        return False
    info = json.loads(marker.read_text(encoding="utf-8"))
    return info.get("size") == size and info.get("version") == GENERATOR_VERSION


# --- phase: ticks ------------------------------------------------------------------------------


def _tick_events(
    rng: random.Random, templates: list[dict[str, Any]], *, first_id: int, now: datetime, repos: int
) -> list[dict[str, Any]]:
    events = []
    for i in range(TICK_EVENTS):
        event = copy.deepcopy(rng.choice(templates))
        event["id"] = str(first_id + i)
        age = rng.uniform(0, 60) if rng.random() >= LATE_SHARE else rng.uniform(30, 6 * 3600)
        event["created_at"] = (now - timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
        u = rng.random()
        rank = int(_REPO_Q * ((repos + _REPO_Q) / _REPO_Q) ** u - _REPO_Q)
        name = f"owner{rank // 5}/repo-{rank}"
        event["repo"] = {"id": 1_000_000 + rank, "name": name, "url": ""}
        events.append(event)
    return events


def run_tick(
    size_dir: Path, events: list[dict[str, Any]], poll_id: str, now: datetime
) -> dict[str, float]:
    """One poll's worth of work, step by step as the assets do it."""
    path = settings.warehouse_path(size_dir)
    snap = settings.snapshot_dir(size_dir)
    t: dict[str, float] = {}
    start = time.perf_counter()
    with _timed(t, "raw"):
        file = landing.write_landing_file(
            landing.landing_path(
                settings.landing_dir(size_dir), source="api", poll_id=poll_id, at=now
            ),
            events,
        )
        with _warehouse(path) as conn:
            # poll_once looks each page's ids up twice: to stop paging at known events, and to
            # count the page's duplicates for poll_log.
            pages = [events[i : i + 100] for i in range(0, len(events), 100)]
            for page in pages + pages:
                raw.known_event_ids(conn, [str(e["id"]) for e in page])
            raw.load_ndjson(conn, file, poll_id=poll_id, source="api")
            warehouse.scalar(conn, "SELECT count(*) FROM raw_events")
    for name in catalogue.FILTERED_TABLES:
        with _warehouse(path) as conn:
            with _timed(t, "filtered"):
                filtered.refresh_filtered(conn, name)
                filtered.row_count(conn, name)
            with _timed(t, "snapshot_filtered"):
                snapshot.publish_table(conn, snap, name)
    steps: list[tuple[str, Callable[[duckdb.DuckDBPyConnection], Any]]] = [
        (metrics.PR_INTERVALS, metrics.refresh_pr_intervals),
        (metrics.EVENT_COUNTS, lambda c: metrics.refresh_event_counts(c, as_of=now)),
        (metrics.REPO_PR_COUNTS, metrics.refresh_repo_pr_counts),
    ]
    for table, refresh in steps:
        with _warehouse(path) as conn:
            with _timed(t, "metrics"):
                refresh(conn)
            with _timed(t, "snapshot_metrics"):
                snapshot.publish_table(conn, snap, table)
    t["total"] = time.perf_counter() - start
    # Opening and closing (checkpointing) the warehouse for the six steps after raw.
    t["open_close"] = t["total"] - sum(v for k, v in t.items() if k != "total")
    return t


def ticks(size_dir: Path, count: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    templates = load_templates()
    path = settings.warehouse_path(size_dir)
    with _warehouse(path) as conn:
        next_id = int(warehouse.scalar(conn, "SELECT max(event_id::BIGINT) FROM raw_events")) + 1
        repos = int(warehouse.scalar(conn, "SELECT count(*) FROM raw_events")) // 3
    runs = []
    for k in range(count):
        now = datetime.now(UTC)
        events = _tick_events(rng, templates, first_id=next_id, now=now, repos=max(1000, repos))
        next_id += TICK_EVENTS
        runs.append(run_tick(size_dir, events, f"bench-{seed}-{k}-{next_id}", now))
    totals = [r["total"] for r in runs]
    steps = {key: statistics.median(r[key] for r in runs) for key in runs[0] if key != "total"}
    return {
        "ticks": count,
        "tick_s_median": statistics.median(totals),
        "tick_s_min": min(totals),
        "tick_s_max": max(totals),
        "tick_s_all": totals,
        "snapshot_filtered_s_all": [r["snapshot_filtered"] for r in runs],
        "snapshot_metrics_s_all": [r["snapshot_metrics"] for r in runs],
        "steps_s_median": steps,
        "peak_rss_mb": _peak_rss_mb(),
    }


# --- phase: full recomputation -----------------------------------------------------------------


def full(size_dir: Path) -> dict[str, Any]:
    path = settings.warehouse_path(size_dir)
    snap = settings.snapshot_dir(size_dir)
    t: dict[str, float] = {}
    start = time.perf_counter()
    with _warehouse(path) as conn:
        with _timed(t, "filtered"):
            filtered.rebuild_filtered(conn)
        with _timed(t, "metrics"):
            metrics.rebuild_metrics(conn, as_of=datetime.now(UTC))
        with _timed(t, "snapshot"):
            for table in SNAPSHOT_TABLES:
                snapshot.publish_table(conn, snap, table)
    total = time.perf_counter() - start
    return {"full_s": total, "steps_s": t, "peak_rss_mb": _peak_rss_mb()}


# --- phase: queries ----------------------------------------------------------------------------


def queries(size_dir: Path, reps: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    con = duckdb.connect()
    pr_file = snapshot.snapshot_file(settings.snapshot_dir(size_dir), metrics.PR_INTERVALS)
    repos = [
        r[0]
        for r in con.execute(
            "SELECT repo_name FROM read_parquet($p) USING SAMPLE 200 ROWS", {"p": str(pr_file)}
        ).fetchall()
    ]
    con.close()
    calls: dict[str, Callable[[], Any]] = {
        "event_counts(60)": lambda: query.event_counts(60, data_dir=size_dir),
        "pr_intervals(repo)": lambda: query.pr_intervals(rng.choice(repos), data_dir=size_dir),
        "repo_pr_counts(20)": lambda: query.repo_pr_counts(20, data_dir=size_dir),
    }
    out: dict[str, Any] = {"source": "gh_pipeline.read.query"}

    def timed(call: Callable[[], Any], before: Callable[[], None]) -> list[float]:
        samples = []
        for _ in range(reps):
            before()
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        return sorted(samples)

    def forget_engine() -> None:
        # The first call after a publication opens a new sandboxed engine (query._reader).
        query._SANDBOXES.clear()

    for name, call in calls.items():
        call()  # warm the OS cache once; a notebook calls the same files again and again
        samples = timed(call, lambda: None)
        cold = timed(call, forget_engine)
        out[name] = {
            "p50_ms": 1000 * statistics.median(samples),
            "p95_ms": 1000 * samples[min(len(samples) - 1, int(0.95 * len(samples)))],
            "first_after_publication_p50_ms": 1000 * statistics.median(cold),
        }
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


# --- orchestration -----------------------------------------------------------------------------


def _worker(args: argparse.Namespace) -> None:
    size_dir = Path(args.size_dir)
    if args.worker == "generate":
        result = generate(size_dir, args.size, seed_now=datetime.now(UTC))
    elif args.worker == "ticks":
        result = ticks(size_dir, args.ticks, args.seed)
    elif args.worker == "full":
        result = full(size_dir)
    else:
        result = queries(size_dir, args.query_reps, args.seed)
    print(json.dumps(result))


def _spawn(phase: str, size: int, size_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "gh_pipeline_tests.benchmarks.tick", "--worker", phase,
        "--size", str(size), "--size-dir", str(size_dir), "--ticks", str(args.ticks),
        "--query-reps", str(args.query_reps), "--seed", str(args.seed),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{phase} at {size:,} events failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    return result


def _fmt_size(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def _no_snapshot(ticks: dict[str, Any]) -> float:
    """Median over ticks of the tick without its snapshot steps."""
    return statistics.median(
        total - a - b
        for total, a, b in zip(
            ticks["tick_s_all"],
            ticks["snapshot_filtered_s_all"],
            ticks["snapshot_metrics_s_all"],
            strict=True,
        )
    )


def _table(results: dict[str, Any]) -> str:
    sizes = results["sizes"]
    heads = [_fmt_size(int(s)) for s in sizes]
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, fn: Callable[[dict[str, Any]], Any]) -> None:
        cells = []
        for s in sizes:
            try:
                cells.append(fn(results["by_size"][s]))
            except (KeyError, TypeError):
                cells.append("-")
        rows.append((label, cells))

    add(
        "tracked events (filtered rows)",
        lambda r: f"{sum(r['generate']['rows'][t] for t in catalogue.FILTERED_TABLES):,}",
    )
    add("repos in pr_intervals", lambda r: f"{r['generate']['rows']['pr_intervals']:,}")
    add("warehouse size", lambda r: f"{r['generate']['warehouse_mb'] / 1024:.1f} GB")
    add("tick, median (s)", lambda r: f"{r['ticks']['tick_s_median']:.3f}")
    add(
        "tick, min-max (s)",
        lambda r: f"{r['ticks']['tick_s_min']:.3f}-{r['ticks']['tick_s_max']:.3f}",
    )
    for step in (
        "raw",
        "filtered",
        "metrics",
        "open_close",
        "snapshot_filtered",
        "snapshot_metrics",
    ):
        add(f"  {step} (s)", lambda r, step=step: f"{r['ticks']['steps_s_median'][step]:.3f}")
    add(
        "tick without snapshots, median (s)",
        lambda r: f"{_no_snapshot(r['ticks']):.3f}",
    )
    add(
        f"  / same at {heads[0]}",
        lambda r: (
            f"{_no_snapshot(r['ticks']) / _no_snapshot(results['by_size'][sizes[0]]['ticks']):.2f}x"
        ),
    )
    add(
        f"tick / tick at {heads[0]}",
        lambda r: (
            f"{r['ticks']['tick_s_median'] / results['by_size'][sizes[0]]['ticks']['tick_s_median']:.2f}x"
        ),
    )
    add("full recomputation (s)", lambda r: f"{r['full']['full_s']:.2f}")
    for step in ("filtered", "metrics", "snapshot"):
        add(f"  {step} (s)", lambda r, step=step: f"{r['full']['steps_s'][step]:.2f}")
    add("full / tick", lambda r: f"{r['full']['full_s'] / r['ticks']['tick_s_median']:.1f}x")
    for q in ("event_counts(60)", "pr_intervals(repo)", "repo_pr_counts(20)"):
        add(
            f"{q} p50 / p95 (ms)",
            lambda r, q=q: f"{r['queries'][q]['p50_ms']:.0f} / {r['queries'][q]['p95_ms']:.0f}",
        )
    for q in ("event_counts(60)", "pr_intervals(repo)", "repo_pr_counts(20)"):
        add(
            f"  {q}, 1st after publication p50 (ms)",
            lambda r, q=q: f"{r['queries'][q]['first_after_publication_p50_ms']:.0f}",
        )
    add("peak RSS: tick (MB)", lambda r: f"{r['ticks']['peak_rss_mb']:.0f}")
    add("peak RSS: full (MB)", lambda r: f"{r['full']['peak_rss_mb']:.0f}")
    add("peak RSS: queries (MB)", lambda r: f"{r['queries']['peak_rss_mb']:.0f}")
    add("peak RSS: generation (MB)", lambda r: f"{r['generate']['peak_rss_mb']:.0f}")
    add("history generation (s)", lambda r: f"{r['generate']['wall_s']:.0f}")
    width = max(len(label) for label, _ in rows)
    lines = [
        "| " + "metric".ljust(width) + " | " + " | ".join(h.rjust(13) for h in heads) + " |",
        "|" + "-" * (width + 2) + "|" + "|".join("-" * 15 for _ in heads) + "|",
    ]
    for label, cells in rows:
        lines.append(
            "| " + label.ljust(width) + " | " + " | ".join(c.rjust(13) for c in cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="comma-separated history sizes in events",
    )
    parser.add_argument("--ticks", type=int, default=7, help="ticks measured per size")
    parser.add_argument(
        "--phases",
        default="ticks,queries,full",
        help="comma-separated phases after generation (ticks, queries, full); e.g. 'queries' for"
        " query latency alone at 100M, where the full recomputation is the slow part",
    )
    parser.add_argument("--query-reps", type=int, default=40, help="calls per query")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", default=None, help="default: $GH_PIPELINE_DATA_DIR or data")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse a warehouse generated earlier for the same size"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated warehouses")
    parser.add_argument(
        "--worker", choices=("generate", "ticks", "full", "queries"), help=argparse.SUPPRESS
    )
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(phases) - {"ticks", "queries", "full"})
    if unknown:
        parser.error(f"--phases: unknown phase(s) {', '.join(unknown)}; use ticks, queries, full")
    out_dir = settings.data_dir(args.data_dir) / "benchmarks"
    workdir = out_dir / "tick"
    results: dict[str, Any] = {
        "benchmark": "gh_pipeline_tests.benchmarks.tick",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": _describe_machine(),
        "settings": {
            "ticks": args.ticks,
            "tick_events": TICK_EVENTS,
            "history_days": HISTORY_DAYS,
            "late_share": LATE_SHARE,
            "query_reps": args.query_reps,
        },
        "sizes": [str(s) for s in sizes],
        "by_size": {},
    }
    for size in sizes:
        size_dir = _size_dir(workdir, size)
        entry: dict[str, Any] = {}
        if args.reuse and _generated_ok(size_dir, size):
            entry["generate"] = json.loads(
                (size_dir / "generate-result.json").read_text(encoding="utf-8")
            )
            print(f"[{_fmt_size(size)}] reusing {size_dir}", flush=True)
        else:
            print(f"[{_fmt_size(size)}] generating history ...", flush=True)
            entry["generate"] = _spawn("generate", size, size_dir, args)
            (size_dir / "generate-result.json").write_text(
                json.dumps(entry["generate"]), encoding="utf-8"
            )
        for phase in phases:
            print(f"[{_fmt_size(size)}] {phase} ...", flush=True)
            entry[phase] = _spawn(phase, size, size_dir, args)
        results["by_size"][str(size)] = entry
        if not args.keep and not args.reuse:
            shutil.rmtree(size_dir, ignore_errors=True)
    results["finished_at"] = datetime.now(UTC).isoformat()
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    table = _table(results)
    results["table_markdown"] = table
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "tick.json"
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print()
    print(table)
    m = results["machine"]
    print(
        f"\nmachine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, duckdb {m['duckdb']};"
        f" load average {m['load_average_at_start']} at start, {m['load_average_at_end']} at end"
    )
    print(f"figures written to {out}")


if __name__ == "__main__":
    main()
