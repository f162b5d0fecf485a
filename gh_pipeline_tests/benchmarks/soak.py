"""Soak benchmark: the real pipeline unattended, and what it costs in Dagster's storage.

    uv run python -m gh_pipeline_tests.benchmarks.soak                 # 300 polls, 10,000 runs
    uv run python -m gh_pipeline_tests.benchmarks.soak --polls 60 --ui-runs 2000
    uv run python -m gh_pipeline_tests.benchmarks.soak --ui-only       # UI timing on the last soak

Starts `uv run dagster dev` (the repository's dagster.yaml and workspace.yaml, in a fresh working
directory under <data>/benchmarks/soak) against the fake GitHub feed at a 1 s poll interval, with
`--batch` new real recorded events (trimmed to today's shape, fresh ids) arriving every second,
and lets the real daemon and sensor poll until `--polls` poll runs have succeeded. Every 10 s it
samples the RSS of the daemon, the webserver and the code server, and the sizes of the Dagster
home, the warehouse, the landing files and the reader snapshots. Then it stops dagster dev and
prints:

- Dagster storage per poll run: the growth of data/dagster_home over the soak divided by the poll
  runs, and the median SQLite run shard and compute-log folder of a poll run;
- warehouse / landing / snapshot bytes per poll and per event;
- RSS over time (first and last quarter of the samples);
- the housekeeping job's effect: `housekeep` with the cutoff at the middle of the soak;
- the 30-day projection at one poll a minute with the default retention settings;
- the UI's runs page and asset page GraphQL queries (p50/p95 of 20 calls each) against
  `dagster-webserver` once `--ui-runs` run records exist (cloned from the soak's real poll runs
  through DagsterInstance.add_run; their event logs are not cloned).

The figures are also written to <data>/benchmarks/soak.json.
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from gh_pipeline import settings
from gh_pipeline.defs.live.jobs import POLL_JOB_NAME
from gh_pipeline_tests.support.dagster_process import (
    BIN,
    REPO_ROOT,
    base_env,
    free_port,
    kill_group,
    running,
    wait_for,
)
from gh_pipeline_tests.support.fake_github import FakeGitHub, numbered_feed, trim_event

DAY_POLLS = 1440  # one poll a minute
SAMPLE_EVERY_S = 10.0


def _du(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _runs(home: Path) -> list[tuple[str, str, str]]:
    db = home / "storage" / "history" / "runs.db"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute(
                "SELECT run_id, pipeline_name, status FROM runs ORDER BY create_timestamp"
            ).fetchall()
    except sqlite3.OperationalError:
        return []


def _group_rss(pgid: int) -> dict[str, int]:
    """RSS (bytes) of the dagster dev process group, by role."""
    out: dict[str, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="ascii").rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            cmd = (
                (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
            status = (stat.parent / "status").read_text(encoding="ascii")
        except (OSError, IndexError, ValueError):
            continue
        rss = next(
            (
                int(line.split()[1]) * 1024
                for line in status.splitlines()
                if line.startswith("VmRSS")
            ),
            0,
        )
        if "dagster._daemon" in cmd:
            role = "daemon"
        elif "dagster_webserver" in cmd:
            role = "webserver"
        elif "api grpc" in cmd or "code-server" in cmd:
            role = "code_server"
        elif "dagster dev" in cmd or " dev " in cmd:
            role = "dagster_dev"
        else:
            role = "other"
        out[role] = out.get(role, 0) + rss
    return out


def _sizes(data: Path) -> dict[str, int]:
    return {
        "dagster_home": _du(data / "dagster_home"),
        "warehouse": _du(settings.warehouse_path(data)),
        "landing": _du(settings.landing_dir(data)),
        "snapshot": _du(settings.snapshot_dir(data)),
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


RUNS_QUERY = """
query Runs($limit: Int) { runsOrError(limit: $limit) { __typename ... on Runs { results {
  id runId status jobName startTime endTime updateTime tags { key value } assetSelection { path }
} } } }
"""
ASSET_QUERY = """
query Asset($key: AssetKeyInput!) { assetOrError(assetKey: $key) { __typename ... on Asset {
  key { path }
  assetMaterializations(limit: 25) { runId timestamp metadataEntries { label __typename } }
  definition { description groupName }
} } }
"""


def _time_query(url: str, query: str, variables: dict[str, Any], n: int = 20) -> dict[str, float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        answer = httpx.post(
            f"{url}/graphql", json={"query": query, "variables": variables}, timeout=120
        )
        times.append(time.perf_counter() - start)
        answer.raise_for_status()
        assert "errors" not in answer.json(), answer.text[:500]
    return {"p50_s": round(_pct(times, 0.5), 3), "p95_s": round(_pct(times, 0.95), 3)}


def _ui_timings(work: Path, ui_runs: int, log: Path) -> dict[str, Any]:
    import dagster as dg

    os.chdir(work)
    with dg.DagsterInstance.from_config(str(work)) as instance:
        polls = instance.get_runs(filters=dg.RunsFilter(job_name=POLL_JOB_NAME), limit=50)
        existing = instance.get_runs_count()
        start = time.perf_counter()
        for i in range(max(0, ui_runs - existing)):
            template = polls[i % len(polls)]
            instance.add_run(template._replace(run_id=str(uuid.uuid4())))
        cloned_s = time.perf_counter() - start
        total = instance.get_runs_count()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        str(BIN / "dagster-webserver"),
        "-w",
        "workspace.yaml",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with running(args, cwd=work, env=base_env(), log=log):
        wait_for(lambda: _up(url), timeout_s=240, what="dagster-webserver")
        _time_query(url, RUNS_QUERY, {"limit": 30}, n=2)  # warm-up
        runs_page = _time_query(url, RUNS_QUERY, {"limit": 30})
        asset_page = {
            name: _time_query(url, ASSET_QUERY, {"key": {"path": [name]}})
            for name in ("raw_events", "event_counts")
        }
    return {
        "runs_in_history": total,
        "cloned_runs_s": round(cloned_s, 1),
        "runs_page": runs_page,
        "asset_page": asset_page,
    }


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--polls", type=int, default=300, help="successful poll runs (default 300)")
    parser.add_argument("--batch", type=int, default=12, help="new events a second (default 12)")
    parser.add_argument(
        "--ui-runs", type=int, default=10_000, help="runs for the UI timing; 0 skips"
    )
    parser.add_argument(
        "--data-dir", default=None, help="where benchmark output goes (default ./data)"
    )
    parser.add_argument(
        "--ui-only",
        action="store_true",
        help="only the UI timing, on the history a previous soak left in <data>/benchmarks/soak",
    )
    args = parser.parse_args()

    out_dir = settings.data_dir(args.data_dir).resolve() / "benchmarks"
    work = out_dir / "soak"
    if args.ui_only:
        print(json.dumps(_ui_timings(work, args.ui_runs, out_dir / "soak-webserver.log"), indent=2))
        return
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(REPO_ROOT / name, work / name)
    data = work / "data"
    home = data / "dagster_home"
    log = out_dir / "soak-dagster-dev.log"
    log.unlink(missing_ok=True)

    feed = [trim_event(e) for e in numbered_feed(150, serial=0)]
    stop = threading.Event()
    samples: list[dict[str, Any]] = []
    with FakeGitHub(feed, poll_interval=1) as fake:

        def arrive() -> None:
            serial = 0
            while not stop.wait(1.0):
                serial += 1
                fake.push([trim_event(e) for e in numbered_feed(args.batch, serial=serial)])

        pusher = threading.Thread(target=arrive, daemon=True)
        pusher.start()
        env = base_env(GITHUB_API_URL=fake.url)
        port = free_port()
        cmd = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-p", str(port)]
        started = time.monotonic()
        with running(cmd, cwd=work, env=env, log=log) as proc:
            wait_for(lambda: _up(f"http://127.0.0.1:{port}"), timeout_s=300, what="the UI")
            ui_up_s = time.monotonic() - started
            print(
                f"UI up after {ui_up_s:.0f} s; polling until {args.polls} poll runs succeed",
                flush=True,
            )
            deadline = time.monotonic() + max(600, args.polls * 20)
            while time.monotonic() < deadline:
                runs = _runs(home)
                ok = sum(
                    1 for _, job, status in runs if job == POLL_JOB_NAME and status == "SUCCESS"
                )
                sample = {
                    "t_s": round(time.monotonic() - started),
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "poll_runs_ok": ok,
                    "runs": len(runs),
                    **_sizes(data),
                    "rss": _group_rss(proc.pid),
                }
                samples.append(sample)
                print(
                    f"  t={sample['t_s']:>5}s polls={ok:>4} runs={len(runs):>4} "
                    f"dagster_home={sample['dagster_home'] / 1e6:7.1f} MB "
                    f"warehouse={sample['warehouse'] / 1e6:6.1f} MB "
                    + " ".join(f"{k}={v / 1e6:.0f}MB" for k, v in sorted(sample["rss"].items())),
                    flush=True,
                )
                if ok >= args.polls:
                    break
                time.sleep(SAMPLE_EVERY_S)
            kill_group(proc)
        stop.set()
        served = len(fake.requests)

    runs = _runs(home)
    polls_ok = [r for r in runs if r[1] == POLL_JOB_NAME and r[2] == "SUCCESS"]
    first = next(s for s in samples if s["poll_runs_ok"] >= 1)
    last = samples[-1]
    n = last["poll_runs_ok"] - first["poll_runs_ok"]
    per_poll = {
        key: (last[key] - first[key]) / n if n else None
        for key in ("dagster_home", "warehouse", "landing", "snapshot")
    }
    shards = [
        _du(home / "storage" / "history" / "runs" / f"{run_id}.db") for run_id, *_ in polls_ok
    ]
    logs = [_du(home / "logs" / run_id) for run_id, *_ in polls_ok]
    import duckdb

    with duckdb.connect(str(settings.warehouse_path(data)), read_only=True) as conn:
        events = conn.execute("SELECT count(*) FROM raw_events").fetchone()[0]
    quarter = max(1, len(samples) // 4)

    def rss_of(part: list[dict[str, Any]]) -> dict[str, float]:
        roles = {r for s in part for r in s["rss"]}
        return {r: round(statistics.mean(s["rss"].get(r, 0) for s in part) / 1e6, 1) for r in roles}

    # Housekeeping: everything created before the middle of the soak is past the window.
    import dagster as dg

    from gh_pipeline.defs.ops.housekeeping import housekeep

    cwd = Path.cwd()
    os.chdir(work)
    with dg.DagsterInstance.from_config(str(work)) as instance:
        records = instance.get_run_records(filters=dg.RunsFilter(job_name=POLL_JOB_NAME))
        times = sorted(r.create_timestamp for r in records)
        middle = times[len(times) // 2]
        before_bytes = _du(home)
        report = housekeep(instance, success_cutoff=middle, failure_cutoff=middle)
        after_bytes = _du(home)
        remaining = instance.get_runs_count()
    os.chdir(cwd)
    housekeeping = {
        "runs_before": len(runs),
        "runs_deleted": len(report.deleted),
        "runs_kept_for_latest": len(report.kept_for_latest),
        "runs_after": remaining,
        "dagster_home_before_mb": round(before_bytes / 1e6, 1),
        "dagster_home_after_mb": round(after_bytes / 1e6, 1),
    }

    # 30 days at one poll a minute, default retention: Dagster keeps a day of finished runs (plus
    # the quality-check runs every 5 min in the same growth figure), the warehouse and landing
    # files keep 30 days of raw JSON; the per-event costs are this soak's.
    per_event = {key: (last[key] - first[key]) / max(1, events) for key in ("warehouse", "landing")}
    days_kept = settings.DEFAULT_RUN_RETENTION_DAYS
    dagster_30d = (
        per_poll["dagster_home"] * DAY_POLLS * days_kept if per_poll["dagster_home"] else 0
    )
    projection = {}
    for label, events_per_poll in (
        ("soak_rate", events / max(1, last["poll_runs_ok"])),
        ("feed_maximum_300_per_poll", 300),
    ):
        events_30d = events_per_poll * DAY_POLLS * settings.DEFAULT_RAW_RETENTION_DAYS
        projection[label] = {
            "events_per_poll": round(events_per_poll, 1),
            "dagster_mb": round(dagster_30d / 1e6),
            "warehouse_mb": round(per_event["warehouse"] * events_30d / 1e6),
            "landing_mb": round(per_event["landing"] * events_30d / 1e6),
        }
        projection[label]["total_mb"] = sum(
            v for k, v in projection[label].items() if k.endswith("_mb")
        )

    result: dict[str, Any] = {
        "polls_ok": last["poll_runs_ok"],
        "runs_total": len(runs),
        "requests_served": served,
        "events_stored": events,
        "ui_up_s": round(ui_up_s),
        "per_poll_run_bytes": {k: round(v) if v else v for k, v in per_poll.items()},
        "poll_run_shard_bytes_median": int(statistics.median(shards)) if shards else None,
        "poll_run_compute_logs_bytes_median": int(statistics.median(logs)) if logs else None,
        "rss_mb_first_quarter": rss_of(samples[:quarter]),
        "rss_mb_last_quarter": rss_of(samples[-quarter:]),
        "housekeeping": housekeeping,
        "projection_30d": projection,
        "samples": samples,
    }
    _report(result, out_dir)
    if args.ui_runs:
        result["ui"] = _ui_timings(work, args.ui_runs, out_dir / "soak-webserver.log")
        os.chdir(cwd)
        _report(result, out_dir)


def _report(result: dict[str, Any], out_dir: Path) -> None:
    printable = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(printable, indent=2), flush=True)
    (out_dir / "soak.json").write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
