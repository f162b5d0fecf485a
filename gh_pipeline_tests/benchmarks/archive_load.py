"""Benchmark: loading GH Archive hours into raw_events, beside DuckDB's own bare read_json.

    uv run python -m gh_pipeline_tests.benchmarks.archive_load                  # both eras, 120k events
    uv run python -m gh_pipeline_tests.benchmarks.archive_load --era pre-trim --repeat 3
    uv run python -m gh_pipeline_tests.benchmarks.archive_load --events 250000 --era pre-trim
    uv run python -m gh_pipeline_tests.benchmarks.archive_load --era pre-trim --scope both \
        --backfill-hours 0          # the load under GH_PIPELINE_ARCHIVE_SCOPE=all and =watched

It builds realistic synthetic hours from the real GH Archive events in
gh_pipeline_tests/fixtures/gharchive (1,850 recorded events of 2015-2024), one per era, each event
a copy of a recorded one chosen at random, so the sizes follow the recorded hours':

- pre-trim:  the events as recorded (about 3 KB each, as every hour before October 2025);
- post-trim: cut to the payload shape GitHub serves since 2025-10-07 (about 1.2 KB each).

Every hour has unique increasing ids, Zipf-like repository and actor popularity, timestamps spread
over the hour in feed order and the templates' own type mix. It is written as gzip NDJSON (cached
under <data_dir>/benchmarks/archive_load/), then, each in a fresh process (so peak memory is its
own) and a fresh DuckDB file:

- bare:      CREATE TABLE t AS SELECT * FROM read_json(file.json.gz, columns = {id, type, actor,
             repo, payload, public, created_at, org}) -- DuckDB's reader with pinned columns, as a
             user would write it (the baseline);
- bare auto: the same, auto-detected, on the decompressed NDJSON (the earlier baseline);
- download:  the pipeline's own download_hour() from a local HTTP server (no network): the stream
             is inflated and verified as it arrives and stored as NDJSON, as in production;
- load:      bulk_load.load_hour_file() on that NDJSON into an empty warehouse;
- reload:    the same hour again into the same warehouse (every event already stored).

With --scope watched (or both) the load and reload run with GH_PIPELINE_ARCHIVE_SCOPE=watched for
WATCHED_REPOS: ten of the hour's repositories spread over the popularity ranks, from a top one to
the long tail, as a user's ten repositories would be.

The figure the target speaks of is download + load (what the asset does) against the bare pinned
read of the same .json.gz. Rates are events per wall-clock second. The machine may be shared: CPU
seconds (all threads of the process) and the load average are printed too. Results are also
written to <data_dir>/benchmarks/archive_load/results.json.
"""

import argparse
import bisect
import copy
import functools
import gzip
import itertools
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline import settings, warehouse
from gh_pipeline.archive import bulk_load, fetch, hours

GENERATOR_VERSION = 2
ERAS = ("pre-trim", "post-trim")
DEFAULT_EVENTS = 120_000
HOUR = datetime(2025, 11, 3, 14, tzinfo=UTC)
FIRST_EVENT_ID = 55_000_000_000  # 2025-sized numeric ids
REPOS, ACTORS = 60_000, 90_000
TARGET_RATIO = 0.6  # download + load against the bare pinned read_json of the .json.gz
TARGET_RSS_MB = 2_000
TARGET_BACKFILL_RATIO = 1.5  # backfill wall time against plain downloads + bare reads
# Where each era's synthetic backfill day starts.
BACKFILL_START = {
    "pre-trim": datetime(2024, 3, 5, tzinfo=UTC),
    "post-trim": datetime(2025, 11, 3, tzinfo=UTC),
}
# The columns a user reading GH Archive with DuckDB pins (the issue's own baseline).
PINNED = (
    "{id: 'VARCHAR', type: 'VARCHAR', actor: 'JSON', repo: 'JSON', payload: 'JSON',"
    " public: 'BOOLEAN', created_at: 'TIMESTAMPTZ', org: 'JSON'}"
)
# Popularity ranks of the ten watched repositories of --scope watched (rank 0 is the busiest).
WATCHED_RANKS = (0, 3, 10, 30, 100, 300, 1000, 3000, 10_000, 30_000)
SCOPES = ("all", "watched")
_ID, _TS, _REPO, _REPO_ID, _ACTOR = "@@ID@@", "@@TS@@", "@@REPO@@", "@@RID@@", "@@ACTOR@@"


# --- the synthetic hour ------------------------------------------------------------------------


def _trim(event: dict[str, Any]) -> dict[str, Any]:
    from gh_pipeline_tests.support.fake_github import trim_event

    event = trim_event(event)
    # Review events lost their embedded pull request in the same October 2025 change.
    if event.get("type") in ("PullRequestReviewEvent", "PullRequestReviewCommentEvent"):
        pr = event.get("payload", {}).get("pull_request") or {}
        event["payload"]["pull_request"] = {k: pr.get(k) for k in ("id", "number", "url")}
    return event


def load_templates(era: str = "post-trim") -> list[str]:
    """Every recorded GH Archive event as JSON text with placeholders for what each copy changes,
    as recorded (pre-trim) or cut to the October 2025 payload shape (post-trim)."""
    from gh_pipeline_tests.support.fake_github import archive_fixture_events

    templates = []
    for recorded in archive_fixture_events():
        event = copy.deepcopy(_trim(recorded) if era == "post-trim" else recorded)
        event["id"] = _ID
        event["created_at"] = _TS
        event["repo"] = {
            "id": _REPO_ID,
            "name": _REPO,
            "url": f"https://api.github.com/repos/{_REPO}",
        }
        actor = event.get("actor") or {}
        actor["login"] = _ACTOR
        if "display_login" in actor:
            actor["display_login"] = _ACTOR
        event["actor"] = actor
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        templates.append(text.replace(f'"{_REPO_ID}"', _REPO_ID))
    return templates


def _repo_name(rank: int) -> str:
    return f"owner{rank // 4}/repo-{rank}"


def watched_scope() -> settings.ArchiveScope:
    return settings.archive_scope("watched", " ".join(_repo_name(r) for r in WATCHED_RANKS))


def _zipf_cum_weights(n: int, q: float) -> list[float]:
    # Zipf-Mandelbrot (s = 1): rank k has weight 1 / (k + q); q keeps the top one near 0.1 %.
    return list(itertools.accumulate(1.0 / (k + q) for k in range(n)))


def generate(
    path: Path,
    events: int,
    seed: int,
    era: str = "post-trim",
    *,
    hour: datetime = HOUR,
    first_id: int = FIRST_EVENT_ID,
) -> dict[str, Any]:
    rng = random.Random(seed)
    templates = load_templates(era)
    repo_cum, actor_cum = _zipf_cum_weights(REPOS, 100.0), _zipf_cum_weights(ACTORS, 10.0)
    repo_total, actor_total = repo_cum[-1], actor_cum[-1]
    step = 3600.0 / events
    total_bytes = 0
    tmp = path.with_name(f".{path.name}.tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6, newline="\n") as handle:
        for i in range(events):
            repo = bisect.bisect_left(repo_cum, rng.random() * repo_total)
            actor = bisect.bisect_left(actor_cum, rng.random() * actor_total)
            # Feed order with a little jitter, as GH Archive writes events as they arrive.
            at = hour + timedelta(seconds=min(3599.0, max(0.0, i * step + rng.uniform(-2, 2))))
            line = (
                rng.choice(templates)
                .replace(_ID, str(first_id + i))
                .replace(_TS, at.strftime("%Y-%m-%dT%H:%M:%SZ"))
                .replace(_REPO_ID, str(10_000_000 + repo))
                .replace(_REPO, _repo_name(repo))
                .replace(_ACTOR, f"user{actor}")
            )
            total_bytes += len(line.encode("utf-8")) + 1
            handle.write(line)
            handle.write("\n")
    tmp.replace(path)
    return {
        "era": era,
        "events": events,
        "mean_event_bytes": total_bytes / events,
        "bytes": total_bytes,
    }


# --- phases (each runs in its own process) ------------------------------------------------------


def _usage() -> tuple[float, float]:
    times = os.times()
    return time.perf_counter(), times.user + times.system


def _since(start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = _usage()
    return {"wall_s": wall - start[0], "cpu_s": cpu - start[1]}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def phase_bare(file: Path, db: Path, pinned: bool = False) -> dict[str, Any]:
    conn = duckdb.connect(str(db))
    start = _usage()
    columns = f", columns = {PINNED}, format = 'newline_delimited'" if pinned else ""
    conn.execute(f"CREATE TABLE t AS SELECT * FROM read_json($path{columns})", {"path": str(file)})
    timing = _since(start)
    rows = int(warehouse.scalar(conn, "SELECT count(*) FROM t"))
    conn.close()
    return {"rows": rows, **timing, "peak_rss_mb": _peak_rss_mb()}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def phase_load(file: Path, db: Path, scope_name: str = "all") -> dict[str, Any]:
    scope = watched_scope() if scope_name == "watched" else settings.ArchiveScope()
    hour = hours.ArchiveHour(HOUR)
    served = file.parent / "served"
    served.mkdir(exist_ok=True)
    (served / hour.file_name).unlink(missing_ok=True)
    (served / hour.file_name).symlink_to(file.resolve())
    handler = functools.partial(_Quiet, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start = _usage()
        with fetch.make_client() as client:
            download = fetch.download_hour(
                client, hour, f"http://127.0.0.1:{server.server_address[1]}", db.parent
            )
        fetched = _since(start)
    finally:
        server.shutdown()
        server.server_close()
    try:
        conn = warehouse.connect(db)
        start = _usage()
        first = bulk_load.load_hour_file(
            conn, download.path, hour, expected_lines=download.lines, scope=scope
        )
        load = _since(start)
        rss_after_load = _peak_rss_mb()
        start = _usage()
        again = bulk_load.load_hour_file(
            conn, download.path, hour, expected_lines=download.lines, scope=scope
        )
        reload = _since(start)
        stored = int(warehouse.scalar(conn, "SELECT count(*) FROM raw_events"))
        conn.close()
    finally:
        download.path.unlink(missing_ok=True)
    return {
        "lines": download.lines,
        "download": fetched,
        "scope": scope_name,
        "load": {
            **load,
            "new": first.stats.new,
            "method": first.method,
            "skipped_by_scope": first.stats.skipped_by_scope,
        },
        "reload": {**reload, "new": again.stats.new, "method": again.method},
        "stored": stored,
        "peak_rss_mb_load": rss_after_load,
        "peak_rss_mb": _peak_rss_mb(),
        "warehouse_mb": db.stat().st_size / 1e6,
    }


def _serve(directory: Path) -> ThreadingHTTPServer:
    handler = functools.partial(_Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def phase_backfill(served: Path, db: Path) -> dict[str, Any]:
    """The hours under `served` loaded through Dagster, as a backfill runs them: runs of
    HOURS_PER_RUN hours (in process, so without the run launcher's process start)."""
    import dagster as dg

    from gh_pipeline.defs.archive.assets import HOURS_PER_RUN, GHArchiveResource, gharchive_hourly
    from gh_pipeline.defs.warehouse.resources import PipelineStorage, Warehouse

    names = sorted(p.name for p in served.glob("*.json.gz"))
    keys = sorted(hours.ArchiveHour(_hour_of(name)).partition_key for name in names)
    server = _serve(served)
    resources = {
        "gharchive": GHArchiveResource(base_url=f"http://127.0.0.1:{server.server_address[1]}"),
        "warehouse": Warehouse(database=str(db)),
        "storage": PipelineStorage(data_dir=str(db.parent / "data")),
    }
    instance = dg.DagsterInstance.ephemeral()
    start = _usage()
    runs = 0
    try:
        for at in range(0, len(keys), HOURS_PER_RUN):
            chunk = keys[at : at + HOURS_PER_RUN]
            result = dg.materialize(
                [gharchive_hourly],
                resources=resources,
                instance=instance,
                tags={
                    "dagster/asset_partition_range_start": chunk[0],
                    "dagster/asset_partition_range_end": chunk[-1],
                },
            )
            runs += 1
            assert result.success
    finally:
        server.shutdown()
        server.server_close()
    timing = _since(start)
    conn = warehouse.connect(db, read_only=True)
    stored = int(warehouse.scalar(conn, "SELECT count(*) FROM raw_events"))
    conn.close()
    materialized = len(instance.get_materialized_partitions(dg.AssetKey("gharchive_hourly")))
    return {
        "hours": len(keys),
        "runs": runs,
        "materialized": materialized,
        "stored": stored,
        **timing,
        "peak_rss_mb": _peak_rss_mb(),
        "warehouse_mb": db.stat().st_size / 1e6,
    }


def phase_bare_hours(served: Path, db: Path) -> dict[str, Any]:
    """The same hours as a user would read them: a plain HTTP download of each .json.gz, then
    DuckDB's pinned-column read_json of it into a table."""
    server = _serve(served)
    downloads = reads = 0.0
    try:
        with fetch.make_client() as client:
            for i, name in enumerate(sorted(p.name for p in served.glob("*.json.gz"))):
                target = db.parent / f"plain-{name}"
                started = time.perf_counter()
                with (
                    client.stream(
                        "GET", f"http://127.0.0.1:{server.server_address[1]}/{name}"
                    ) as r,
                    target.open("wb") as handle,
                ):
                    for chunk in r.iter_raw(fetch.CHUNK_BYTES):
                        handle.write(chunk)
                downloads += time.perf_counter() - started
                conn = duckdb.connect(str(db))
                started = time.perf_counter()
                conn.execute(
                    f"CREATE TABLE t{i} AS SELECT * FROM read_json($path, columns = {PINNED},"
                    " format = 'newline_delimited')",
                    {"path": str(target)},
                )
                reads += time.perf_counter() - started
                conn.close()
                target.unlink()
    finally:
        server.shutdown()
        server.server_close()
    return {"download_s": downloads, "read_s": reads, "peak_rss_mb": _peak_rss_mb()}


def _hour_of(name: str) -> datetime:
    day, hour = name.removesuffix(".json.gz").rsplit("-", 1)
    return datetime.fromisoformat(day).replace(hour=int(hour), tzinfo=UTC)


def bench_backfill(work: Path, era: str, hours_n: int, events: int, seed: int) -> dict[str, Any]:
    """A day (or `hours_n` hours) of history through Dagster, against plain download + read."""
    served = work / f"backfill-v{GENERATOR_VERSION}-{era}-{hours_n}x{events}-{seed}"
    served.mkdir(parents=True, exist_ok=True)
    first = BACKFILL_START[era]
    total_bytes = 0
    for h in range(hours_n):
        at = first + timedelta(hours=h)
        path = served / hours.ArchiveHour(at).file_name
        meta_path = served / f"{path.name}.meta.json"
        if not (path.exists() and meta_path.exists()):
            print(f"  generating {path.name} ...", flush=True)
            meta = generate(
                path, events, seed + h, era, hour=at, first_id=FIRST_EVENT_ID + h * 10_000_000
            )
            meta_path.write_text(json.dumps(meta), encoding="utf-8")
        total_bytes += json.loads(meta_path.read_text(encoding="utf-8"))["bytes"]
    print(
        f"  {era} backfill: {hours_n} hours x {events:,} events ({total_bytes / 1e9:.1f} GB NDJSON)"
    )
    print("  plain download + bare pinned read_json of each hour ...", flush=True)
    bare = _spawn("bare_hours", served, work / "bare_hours.duckdb")
    print("  the backfill through Dagster ...", flush=True)
    ours = _spawn("backfill", served, work / "backfill.duckdb")
    baseline = bare["download_s"] + bare["read_s"]
    ratio = ours["wall_s"] / baseline if baseline else 0.0
    day_s = ours["wall_s"] * 24 / hours_n
    print(
        f"  baseline {baseline:.1f}s (downloads {bare['download_s']:.1f}s + reads "
        f"{bare['read_s']:.1f}s); backfill {ours['wall_s']:.1f}s wall, {ours['cpu_s']:.1f} CPU-s "
        f"in {ours['runs']} runs, {ours['stored']:,} events "
        f"({_rate(ours['stored'], ours['wall_s']):,.0f}/s), {ours['materialized']} hours "
        f"materialized; peak RSS {ours['peak_rss_mb']:,.0f} MB"
    )
    print(
        f"  backfill / baseline: {ratio:.2f}x (target <= {TARGET_BACKFILL_RATIO}x: "
        f"{'met' if ratio <= TARGET_BACKFILL_RATIO else 'NOT met'}); "
        f"{day_s / 60:.1f} min of wall time per day of history"
    )
    return {"bare": bare, "backfill": ours, "ratio": ratio, "seconds_per_day": day_s}


def _spawn(phase: str, file: Path, db: Path, scope: str = "all") -> dict[str, Any]:
    for stale in db.parent.glob(f"{db.name}*"):
        stale.unlink()
    cmd = [sys.executable, "-m", "gh_pipeline_tests.benchmarks.archive_load", "--worker", phase]
    cmd += ["--file", str(file), "--db", str(db), "--scope", scope]
    load_before = os.getloadavg()[0]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"phase {phase} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_avg_1m"] = [load_before, os.getloadavg()[0]]
    for stale in db.parent.glob(f"{db.name}*"):
        stale.unlink()
    return result


def _rate(events: int, seconds: float) -> float:
    return events / seconds if seconds > 0 else 0.0


def _hour_file(work: Path, era: str, events: int, seed: int) -> tuple[Path, dict[str, Any]]:
    file = work / f"hour-v{GENERATOR_VERSION}-{era}-{events}-{seed}.json.gz"
    meta_path = file.with_suffix(".meta.json")
    if file.exists() and meta_path.exists():
        print(f"reusing {file}")
        return file, json.loads(meta_path.read_text(encoding="utf-8"))
    print(f"generating {events:,} {era} events into {file} ...", flush=True)
    started = time.perf_counter()
    meta = generate(file, events, seed, era)
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    print(f"  done in {time.perf_counter() - started:.0f}s", flush=True)
    return file, meta


def bench_era(
    work: Path, era: str, events: int, seed: int, repeat: int, scopes: tuple[str, ...] = ("all",)
) -> dict[str, Any]:
    file, meta = _hour_file(work, era, events, seed)
    events = int(meta["events"])
    print(
        f"{era} hour: {events:,} events, {meta['mean_event_bytes']:.0f} B/event on average, "
        f"{meta['bytes'] / 1e6:.0f} MB NDJSON, {file.stat().st_size / 1e6:.0f} MB gzip"
    )
    ndjson = file.with_suffix("").with_suffix(".ndjson")
    if not ndjson.exists():
        fetch.expand_gzip_file(file, ndjson)
    load_keys = {scope: "load" if scope == "all" else f"load_{scope}" for scope in scopes}
    runs: dict[str, list[dict[str, Any]]] = {"bare_pinned_gz": [], "bare_auto": []}
    runs.update({key: [] for key in load_keys.values()})
    for i in range(repeat):
        for phase, worker, source, scope in (
            ("bare_pinned_gz", "bare_pinned", file, "all"),
            ("bare_auto", "bare", ndjson, "all"),
            *((load_keys[scope], "load", file, scope) for scope in scopes),
        ):
            print(f"  run {i + 1}/{repeat}: {phase} ...", flush=True)
            runs[phase].append(_spawn(worker, source, work / f"{phase}.duckdb", scope))
    ndjson.unlink(missing_ok=True)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    main_key = load_keys[scopes[0]]
    bare = med([r["wall_s"] for r in runs["bare_pinned_gz"]])
    download = med([r["download"]["wall_s"] for r in runs[main_key]])
    load = med([r["load"]["wall_s"] for r in runs[main_key]])
    in_asset = med([r["download"]["wall_s"] + r["load"]["wall_s"] for r in runs[main_key]])
    rows = [
        ("bare read_json, pinned, .json.gz", runs["bare_pinned_gz"], None),
        ("bare read_json, auto, NDJSON", runs["bare_auto"], None),
        ("download + verify, localhost", runs[main_key], "download"),
    ]
    for scope, key in load_keys.items():
        first = runs[key][0]
        rows += [
            (f"our load, {scope} ({first['load']['method']})", runs[key], "load"),
            (f"our reload, {scope} ({first['reload']['method']})", runs[key], "reload"),
        ]
    loads = [x for r in itertools.chain(*runs.values()) for x in r["load_avg_1m"]]
    print(
        f"  {platform.machine()} {os.cpu_count()} cores, duckdb {duckdb.__version__}, "
        f"1-min load average during the runs {min(loads):.1f}-{max(loads):.1f}"
    )
    print(f"  {'phase':34s} {'wall s':>7s} {'cpu s':>7s} {'events/s':>10s} {'peak RSS MB':>12s}")
    for name, results, key in rows:
        parts = [r[key] if key else r for r in results]
        wall = med([p["wall_s"] for p in parts])
        cpu = med([p["cpu_s"] for p in parts])
        rss = max(r["peak_rss_mb_load" if key == "load" else "peak_rss_mb"] for r in results)
        print(f"  {name:34s} {wall:7.2f} {cpu:7.2f} {_rate(events, wall):10,.0f} {rss:12,.0f}")
    for scope, key in load_keys.items():
        first = runs[key][0]
        print(
            f"  scope {scope}: {first['stored']:,} events stored, "
            f"{first['load']['skipped_by_scope']:,} skipped by scope; warehouse "
            f"{med([r['warehouse_mb'] for r in runs[key]]):.1f} MB"
        )
    ratio = bare / in_asset if in_asset else 0.0
    peak = max(r["peak_rss_mb"] for r in runs[main_key])
    print(
        f"  download + load {in_asset:.2f}s vs bare pinned read_json {bare:.2f}s: {ratio:.2f}x "
        f"(target >= {TARGET_RATIO}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'}); "
        f"peak RSS {peak:,.0f} MB (target < {TARGET_RSS_MB:,} MB); warehouse "
        f"{med([r['warehouse_mb'] for r in runs[main_key]]):.0f} MB ({scopes[0]})"
    )
    return {
        "hour": meta,
        "runs": runs,
        "summary": {
            "bare_pinned_gz_s": bare,
            "download_s": download,
            "load_s": load,
            "download_plus_load_s": in_asset,
            "ratio": ratio,
            "load_events_per_s": _rate(events, load),
            "peak_rss_mb": peak,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events in the hour")
    parser.add_argument("--era", choices=(*ERAS, "both"), default="both")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each phase (medians)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", help="working directory (default <data_dir>/benchmarks/...)")
    parser.add_argument(
        "--backfill-hours", type=int, default=24, help="hours in the Dagster backfill (0: skip)"
    )
    parser.add_argument(
        "--backfill-events", type=int, default=DEFAULT_EVENTS, help="events per backfill hour"
    )
    parser.add_argument(
        "--worker",
        choices=("bare", "bare_pinned", "load", "backfill", "bare_hours"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--scope",
        choices=(*SCOPES, "both"),
        default="all",
        help="GH_PIPELINE_ARCHIVE_SCOPE of the load (watched: the ten WATCHED_RANKS repositories)",
    )
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        file, db = Path(args.file), Path(args.db)
        if args.worker == "load":
            print(json.dumps(phase_load(file, db, args.scope)))
        elif args.worker == "backfill":
            print(json.dumps(phase_backfill(file, db)))
        elif args.worker == "bare_hours":
            print(json.dumps(phase_bare_hours(file, db)))
        else:
            print(json.dumps(phase_bare(file, db, pinned=args.worker == "bare_pinned")))
        return

    work = Path(args.dir) if args.dir else settings.data_dir() / "benchmarks" / "archive_load"
    work.mkdir(parents=True, exist_ok=True)
    eras = ERAS if args.era == "both" else (args.era,)
    results: dict[str, Any] = {}
    for era in eras:
        scopes = SCOPES if args.scope == "both" else (args.scope,)
        results[era] = bench_era(work, era, args.events, args.seed, args.repeat, scopes)
        if args.backfill_hours > 0:
            results[era]["backfill"] = bench_backfill(
                work, era, args.backfill_hours, args.backfill_events, args.seed
            )
    (work / "results.json").write_text(
        json.dumps({"measured_at": datetime.now(UTC).isoformat(), "eras": results}, indent=2),
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
