"""Benchmark: disk cost per million events, before and after raw-JSON retention.

    uv run python -m gh_pipeline_tests.benchmarks.disk_cost                  # 100k events, both shapes
    uv run python -m gh_pipeline_tests.benchmarks.disk_cost --events 300000 --shape trimmed

Builds a synthetic feed from the real recorded events in gh_pipeline_tests/fixtures (the 2019
/events session, the duckdb/duckdb page and the GH Archive samples), cycled with fresh ids and
cut into landing files of 300 events (one full poll each), in two shapes: `trimmed` (PullRequest
and Push payloads as GitHub serves them since 2025-10-07) and `full` (the shapes as recorded).
Each file goes through the real path: landing file → raw.load_ndjson → filtered tables. Then
retention.apply_retention prunes the raw JSON as if 31 days had passed, and then rolls up and
deletes the untracked events (GH_PIPELINE_UNTRACKED_RETENTION_DAYS).

It reports, per million events: landing files; the warehouse file and the bytes DuckDB reports
in use; the same after retention; and a compacted copy (COPY FROM DATABASE) of both, which is
what the data needs with no free blocks. Then, per event, what stays in the compacted warehouse
after raw retention for a tracked event (its typed row and its filtered-table row) and an
untracked one (its typed row, until the rollup deletes it), less the empty schema: the figures
the soak's 30-day projection uses. Figures go to stdout and <data_dir>/benchmarks/disk_cost.json.
"""

import argparse
import copy
import json
import platform
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline import settings, warehouse
from gh_pipeline.live import landing
from gh_pipeline.model import filtered
from gh_pipeline.ops import retention
from gh_pipeline.publish import snapshot
from gh_pipeline.warehouse import catalogue, raw

FIXTURES = Path(__file__).resolve().parents[2] / "gh_pipeline_tests" / "fixtures"
EVENTS_PER_FILE = 300
FIRST_EVENT_ID = 40_000_000_000


def real_events() -> list[dict[str, Any]]:
    # Imported lazily: the test package is a development dependency of this command only.
    from gh_pipeline_tests.support.fake_github import archive_fixture_events

    seen: dict[str, dict[str, Any]] = {}
    for path in sorted((FIXTURES / "api").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        events = data["events"] if isinstance(data, dict) and "events" in data else data
        if isinstance(events, list):
            for e in events:
                if isinstance(e, dict) and "id" in e and "type" in e:
                    seen.setdefault(str(e["id"]), e)
    for e in archive_fixture_events():
        seen.setdefault(str(e["id"]), e)
    return list(seen.values())


def _shape(events: list[dict[str, Any]], shape: str) -> list[dict[str, Any]]:
    if shape == "full":
        return events
    from gh_pipeline_tests.support.fake_github import trim_event

    return [trim_event(e) for e in events]


def _used_bytes(conn: duckdb.DuckDBPyConnection) -> int:
    block_size, used = conn.execute(
        "SELECT block_size, used_blocks FROM pragma_database_size()"
    ).fetchall()[0]
    return int(block_size) * int(used)


def _compacted(conn: duckdb.DuckDBPyConnection, work: Path, name: str) -> int:
    out = work / f"{name}.duckdb"
    out.unlink(missing_ok=True)
    conn.execute("ATTACH $p AS compact", {"p": str(out)})
    try:
        db = conn.execute("SELECT current_database()").fetchall()[0][0]
        conn.execute(f'COPY FROM DATABASE "{db}" TO compact')
    finally:
        conn.execute("DETACH compact")
    size = out.stat().st_size
    out.unlink()
    return size


def measure(n_events: int, shape: str, work: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pool = _shape(real_events(), shape)
    start = datetime.now(UTC) - timedelta(days=1)
    t0 = time.perf_counter()
    files = []
    for f in range(-(-n_events // EVENTS_PER_FILE)):
        batch = []
        for i in range(f * EVENTS_PER_FILE, min((f + 1) * EVENTS_PER_FILE, n_events)):
            event = copy.copy(pool[i % len(pool)])
            event["id"] = str(FIRST_EVENT_ID + i)
            event["created_at"] = (start + timedelta(seconds=i / 5)).strftime("%Y-%m-%dT%H:%M:%SZ")
            batch.append(event)
        path = landing.landing_path(
            settings.landing_dir(work), source="api", poll_id=f"poll-{f:06d}", at=start
        )
        files.append(landing.write_landing_file(path, batch))
    landing_bytes = sum(p.stat().st_size for p in files)
    conn = warehouse.connect(settings.warehouse_path(work))
    warehouse.ensure_schema(conn)
    for path in files:
        raw.load_ndjson(conn, path, poll_id=path.name.split(".")[0], source="api")
    for name in catalogue.FILTERED_TABLES:
        filtered.refresh_filtered(conn, name)
    conn.execute("CHECKPOINT")
    json_bytes = int(
        warehouse.scalar(
            conn,
            "SELECT sum(strlen(event::VARCHAR)) FROM raw_events",
        )
    )
    loaded = {
        "file": retention.disk_usage(work)["warehouse_bytes"],
        "used": _used_bytes(conn),
        "compacted": _compacted(conn, work, "loaded"),
    }
    later = datetime.now(UTC) + timedelta(days=31)
    report = retention.apply_retention(conn, work, now=later, days=30, untracked_days=None)
    assert report.rows_pruned == n_events, report
    pruned = {
        "file": retention.disk_usage(work)["warehouse_bytes"],
        "used": _used_bytes(conn),
        "compacted": _compacted(conn, work, "pruned"),
    }
    tracked = int(
        warehouse.scalar(
            conn,
            "SELECT count(*) FROM raw_events WHERE list_contains($t, event_type)",
            {"t": list(catalogue.TRACKED_EVENT_TYPES)},
        )
    )
    # The tracked tables' reader snapshots, published once (one Parquet part a table, as
    # compaction keeps them): they grow with the tracked events, forever.
    snap = work / "snapshot"
    for table in catalogue.FILTERED_TABLES.values():
        snapshot.publish_table(conn, snap, table.name)
    snapshot_bytes = sum(f.stat().st_size for f in snap.rglob("*.parquet") if f.is_file())
    rolled = retention.apply_retention(conn, work, now=later, days=30, untracked_days=30)
    assert rolled.untracked_deleted == n_events - tracked, rolled
    rolled_up = _compacted(conn, work, "rolled_up")
    conn.close()
    empty_conn = warehouse.connect(work / "empty_schema.duckdb")
    empty = _compacted(empty_conn, work, "empty")
    empty_conn.close()
    seconds = time.perf_counter() - t0
    per_m = 1_000_000 / n_events
    result = {
        "shape": shape,
        "events": n_events,
        "avg_event_json_bytes": round(json_bytes / n_events),
        "per_million_events_mb": {
            "landing_files": round(landing_bytes * per_m / 1e6, 1),
            "warehouse_file": round(loaded["file"] * per_m / 1e6, 1),
            "warehouse_in_use": round(loaded["used"] * per_m / 1e6, 1),
            "warehouse_compacted": round(loaded["compacted"] * per_m / 1e6, 1),
            "after_retention_file": round(pruned["file"] * per_m / 1e6, 1),
            "after_retention_in_use": round(pruned["used"] * per_m / 1e6, 1),
            "after_retention_compacted": round(pruned["compacted"] * per_m / 1e6, 1),
            "after_untracked_rollup_compacted": round(rolled_up * per_m / 1e6, 1),
        },
        "tracked_share": round(tracked / n_events, 3),
        "rolled_up_count_rows": rolled.untracked_hours,
        # What an event keeps costing after raw retention, compacted, less the empty schema.
        "bytes_per_event_after_retention": {
            "tracked": round((rolled_up - empty) / max(1, tracked), 1),
            "untracked": round((pruned["compacted"] - rolled_up) / max(1, n_events - tracked), 1),
            "all": round((pruned["compacted"] - empty) / n_events, 1),
        },
        "snapshot_bytes_per_tracked_event": round(snapshot_bytes / max(1, tracked), 1),
        "empty_schema_bytes": empty,
        "seconds": round(seconds, 1),
    }
    shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--shape", choices=("trimmed", "full", "both"), default="both")
    args = parser.parse_args(argv)
    out_dir = settings.data_dir() / "benchmarks"
    shapes = ("trimmed", "full") if args.shape == "both" else (args.shape,)
    results = [measure(args.events, s, out_dir / f"disk_cost_{s}") for s in shapes]
    print(f"disk cost per million events (MB), measured on {args.events} events per shape")
    rows = list(results[0]["per_million_events_mb"])
    print(f"{'':34}" + "".join(f"{r['shape']:>12}" for r in results))
    print(
        f"{'avg event JSON (bytes)':34}"
        + "".join(f"{r['avg_event_json_bytes']:>12}" for r in results)
    )
    for row in rows:
        print(f"{row:34}" + "".join(f"{r['per_million_events_mb'][row]:>12}" for r in results))
    print(
        f"{'tracked share of the events':34}"
        + "".join(f"{r['tracked_share']:>12}" for r in results)
    )
    print(
        f"{'snapshot bytes/tracked event':34}"
        + "".join(f"{r['snapshot_bytes_per_tracked_event']:>12}" for r in results)
    )
    for kind in ("tracked", "untracked", "all"):
        label = f"bytes/event after retention, {kind}"
        print(
            f"{label:34}"
            + "".join(f"{r['bytes_per_event_after_retention'][kind]:>12}" for r in results)
        )
    record = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}",
        "duckdb": duckdb.__version__,
        "results": results,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "disk_cost.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
