"""A notebook-like reader for the concurrency tests: a separate Python process that imports only
gh_pipeline.read.query (no Dagster) and calls it in a loop while the test publishes, checking every
answer, until a stop file appears; then it prints one JSON report.

    python -m gh_pipeline_tests.support.query_reader DATA_DIR STOP_FILE [--pause SECONDS]
"""

import argparse
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gh_pipeline.read import query

TRACKED = ["IssuesEvent", "PullRequestEvent", "WatchEvent"]


def read_until_stopped(data_dir: str, stop_file: Path, pause_s: float) -> dict[str, Any]:
    errors: list[str] = []
    calls, states, max_events = 0, set(), 0
    while not stop_file.exists():
        try:
            published = query.last_updated(data_dir=data_dir)
            states.add(tuple(published["published_at"].astype(str)))
            events = query.events(data_dir=data_dir)
            # Snapshots only ever grow: fewer events than an earlier read would mean a torn or
            # rolled-back file.
            if len(events) < max_events:
                errors.append(f"events went from {max_events} to {len(events)}")
            max_events = max(max_events, len(events))
            if events["event_id"].duplicated().any():
                errors.append("duplicate event ids in one read")
            counts = query.event_counts(1440, data_dir=data_dir)
            if len(events) and sorted(counts["event_type"]) != TRACKED:
                errors.append(f"event_counts rows: {counts['event_type'].tolist()}")
            intervals = query.pr_intervals(data_dir=data_dir)
            if (intervals["pr_opened"] < 1).any():
                errors.append("pr_intervals row with no opened PR")
            query.repo_pr_counts(10, data_dir=data_dir)
            query.event_intervals("WatchEvent", data_dir=data_dir)
            query.active_repos("PullRequestEvent", 1, data_dir=data_dir)
            query.top_repos(days=None, data_dir=data_dir)
            query.user_sessions(data_dir=data_dir)
            calls += 9
        except Exception:
            errors.append(traceback.format_exc(limit=3))
        time.sleep(pause_s)
    return {"errors": errors, "calls": calls, "states": len(states), "max_events": max_events}


@contextmanager
def reader_process(data_dir: Path, stop_file: Path, *, pause_s: float) -> Iterator[dict[str, Any]]:
    """Run the reader beside the caller's block; the yielded dict holds its report afterwards."""
    report: dict[str, Any] = {}
    args = [str(data_dir), str(stop_file), "--pause", str(pause_s)]
    reader = subprocess.Popen(
        [sys.executable, "-m", "gh_pipeline_tests.support.query_reader", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready"
        yield report
    finally:
        stop_file.touch()
        out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    report.update(json.loads(out.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("data_dir")
    parser.add_argument("stop_file", type=Path)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between rounds")
    args = parser.parse_args(argv)
    print("ready", flush=True)
    report = read_until_stopped(args.data_dir, args.stop_file, args.pause)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
