"""Benchmark: how many watched repositories one machine and one token keep complete at 60 s.

    uv run python -m gh_pipeline_tests.benchmarks.watched_repos                 # 25,50,100,200
    uv run python -m gh_pipeline_tests.benchmarks.watched_repos --repos 50,400 --rounds 3

For each number N of watched repositories, a fake GitHub in its own process serves the global feed
and N repository feeds with real recorded events (2019 /events and duckdb/duckdb 2023, full
payloads). Every repository is active: each time its feed is asked for page 1, `--new` events
(default 5) have arrived since the last poll, so every poll is a 200 that reads one page and
reaches the events it saw before (the expensive case; a quiet repository costs a free 304). The
pipeline, with a token, then runs `--rounds` polling rounds (watched.poll_round, exactly what the
poll run does: one state file, HTTP request, landing file and DuckDB transaction per feed) and,
after each, metrics.refresh_all (the filtered and metric tables, including the complete-period
recomputation of every watched repository). The interval between rounds is not waited out.

Printed per N: the median wall and CPU seconds of a polling round and of the refresh, and the
requests a round spends. A round must finish well inside 60 s for N repositories to be polled
every 60 s; the rate budget allows 5,000 requests an hour, i.e. (5000 - 60 for the global feed)
/ 60 = 82 repositories whose every poll is a 200 (304s are free with a token).
"""

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gh_pipeline import settings, warehouse
from gh_pipeline.live import poll_state, watched
from gh_pipeline.live.github_client import GitHubEventsClient
from gh_pipeline.model import metrics
from gh_pipeline_tests.support.fake_github import FakeGitHub, repo_feed


class _ActiveFake(FakeGitHub):
    """Every request for a repository feed's first page finds `new` fresh events on top."""

    def __init__(self, new: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.new = new
        self.serial = 10_000

    def respond(self, path: str, query: dict[str, list[str]], headers: dict[str, str]):
        if path.startswith("/repos/") and query.get("page", ["1"]) == ["1"] and self.new:
            repo = self._repo_for(path)
            if repo is not None:
                with self.lock:
                    self.serial += 1
                    serial = self.serial
                self.push_repo(repo.name, repo_feed(repo.name, self.new, serial=serial))
        return super().respond(path, query, headers)


def _serve(repos: int, new: int, port_queue: Any) -> None:
    fake = _ActiveFake(new, poll_interval=60, rate_limit=1_000_000)
    for i in range(repos):
        name = f"bench/repo{i:04d}"
        fake.add_repo(name, repo_feed(name, 100, serial=i + 1, repo_id=i + 1))
    fake.start()
    port_queue.put(fake.url)
    while True:
        time.sleep(3600)


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def measure(repos: int, *, rounds: int, new: int, root: Path) -> dict[str, Any]:
    queue: Any = multiprocessing.get_context("fork").Queue()
    server = multiprocessing.get_context("fork").Process(
        target=_serve, args=(repos, new, queue), daemon=True
    )
    server.start()
    url = queue.get(timeout=120)
    data_dir = root / f"n{repos}"
    names = [f"bench/repo{i:04d}" for i in range(repos)]
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    state_dir = settings.state_dir(data_dir)
    poll_wall, poll_cpu, refresh_wall, refresh_cpu, requests = [], [], [], [], []
    try:
        # A token: its 304s are free. The fake accepts any.
        with GitHubEventsClient(api_url=url, token="benchmark-token") as client:
            for number in range(rounds + 1):  # round 0 fetches the backlogs; not counted
                for feed in watched.feeds(names):
                    state = poll_state.load_state(state_dir, feed.state_name)
                    poll_state.save_state(
                        state_dir, state.with_(next_poll_at=None), feed.state_name
                    )
                wall, cpu = time.perf_counter(), _cpu()
                result = watched.poll_round(
                    client=client, conn=conn, data_dir=data_dir, run_id=f"r{number}", repos=names
                )
                wall_p, cpu_p = time.perf_counter() - wall, _cpu() - cpu
                wall, cpu = time.perf_counter(), _cpu()
                metrics.refresh_all(conn, as_of=datetime.now(UTC))
                wall_r, cpu_r = time.perf_counter() - wall, _cpu() - cpu
                assert not result.errors and not result.deferred, (result.errors, result.deferred)
                if number:
                    poll_wall.append(wall_p)
                    poll_cpu.append(cpu_p)
                    refresh_wall.append(wall_r)
                    refresh_cpu.append(cpu_r)
                    requests.append(sum(o.requests for o in result.outcomes.values()))
        complete = conn.execute(
            "SELECT count(*) FROM watched_repos WHERE complete_since IS NOT NULL AND gaps = 0"
        ).fetchone()
    finally:
        conn.close()
        server.kill()
    return {
        "repos": repos,
        "poll_wall_s": statistics.median(poll_wall),
        "poll_cpu_s": statistics.median(poll_cpu),
        "refresh_wall_s": statistics.median(refresh_wall),
        "refresh_cpu_s": statistics.median(refresh_cpu),
        "requests_per_round": statistics.median(requests),
        "complete_without_gap": complete[0] if complete else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repos", default="25,50,100,200", help="comma-separated N values")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new", type=int, default=5, help="new events per repository per poll")
    args = parser.parse_args()
    sizes = [int(n) for n in args.repos.split(",")]
    print(
        f"{'repos':>6} {'poll wall s':>12} {'poll CPU s':>11} {'refresh wall s':>15} "
        f"{'refresh CPU s':>14} {'requests':>9} {'complete':>9}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="watched-bench-") as tmp:
        for n in sizes:
            row = measure(n, rounds=args.rounds, new=args.new, root=Path(tmp))
            print(
                f"{row['repos']:>6} {row['poll_wall_s']:>12.2f} {row['poll_cpu_s']:>11.2f} "
                f"{row['refresh_wall_s']:>15.2f} {row['refresh_cpu_s']:>14.2f} "
                f"{row['requests_per_round']:>9.0f} {row['complete_without_gap']:>9}",
                flush=True,
            )
    print(
        "budget with a token: (5000 - 60) / 60 = 82 always-active repositories at 60 s "
        "(304s are free; quiet repositories cost nothing)",
        flush=True,
    )


if __name__ == "__main__":
    main()
