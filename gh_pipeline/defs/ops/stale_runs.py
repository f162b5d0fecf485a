"""Runs whose process died (a kill -9 of `dagster dev`, a crashed machine) resolved within
seconds instead of after run monitoring's start timeout or the run's max runtime.

With Dagster's default run launcher every run worker is a process on this machine, and it
records its pid ("Started process for run (pid: N)") when it starts. A STARTED run whose worker
is gone, or a STARTING run launched before this process started whose worker never reported,
cannot finish: it is marked failed with a message saying why, and its pool slots are freed so
the warehouse pool and the one-poll-at-a-time limit let the next run through. QUEUED runs have
no process by design: the queue launches them once the stale runs are resolved."""

import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.storage.tags import GRPC_INFO_TAG

# A worker posts its pid a few seconds after launch (once it has imported the code); a run
# launched before this process started and still silent this long after its launch has no worker.
# Only needed while the code server that launched it still answers (a reload, not a crash).
STARTING_GRACE_S = 20.0
_CONNECT_TIMEOUT_S = 0.5
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text(encoding="ascii").splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), None if no such process. Uses /proc where
    there is one (so a reused pid is told apart by its start time), else only liveness."""
    stat = Path(f"/proc/{pid}/stat")
    boot = _boot_time()
    if boot is not None:
        try:
            fields = stat.read_text(encoding="ascii").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        # Field 22 of /proc/<pid>/stat (the 20th after the command name): start in clock ticks.
        return boot + int(fields[19]) / _CLOCK_TICKS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0.0


_THIS_PROCESS_STARTED_AT = process_start_time(os.getpid()) or time.time()


def launcher_gone(tags: Mapping[str, str]) -> bool:
    """Whether the code server that launched a run (Dagster's grpc_info tag: a unix socket or
    a host and port) refuses connections: its run workers were its children, and a crash that
    took it took them. Unknown or answering: False."""
    try:
        info = json.loads(tags[GRPC_INFO_TAG])
    except (KeyError, ValueError):
        return False
    if not isinstance(info, dict):
        return False
    if info.get("socket"):
        address: str | tuple[str, int] = str(info["socket"])
        family = socket.AF_UNIX
    elif info.get("port"):
        address = (str(info.get("host") or "localhost"), int(info["port"]))
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    else:
        return False
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(_CONNECT_TIMEOUT_S)
        try:
            sock.connect(address)
        except (ConnectionRefusedError, FileNotFoundError):
            return True
        except OSError:
            return False  # a timeout or an unreachable host says nothing for sure
    return False


@dataclass(frozen=True)
class StaleRun:
    run_id: str
    job_name: str
    status: str
    reason: str


def _worker(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid the run's worker reported, and when it reported it."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, ascending=False, limit=50
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None and "Started process for run" in (event.message or ""):
            return int(str(pid.value)), record.event_log_entry.timestamp
    return None


def _why_stale(
    instance: dg.DagsterInstance, record: dg.RunRecord, *, now: float, started_at: float
) -> str | None:
    run = record.dagster_run
    worker = _worker(instance, run.run_id)
    if worker is not None:
        pid, reported_at = worker
        began = process_start_time(pid)
        # A live process that began after the worker reported is another process reusing the pid.
        if began is not None and began <= reported_at + 1.0:
            return None
        return f"its run worker (pid {pid}) is no longer running"
    launched = record.create_timestamp.timestamp()
    stats = instance.get_run_stats(run.run_id)
    if stats.launch_time:
        launched = stats.launch_time
    if launched >= started_at:
        return None
    at = time.strftime("%H:%M:%S", time.gmtime(launched))
    if launcher_gone(run.tags):
        return (
            f"it was launched at {at} UTC, before dagster dev last started, by a code server "
            "that is gone, and no run worker ever reported for it"
        )
    if now - launched < STARTING_GRACE_S:
        return None
    return (
        f"it was launched at {at} UTC, before dagster dev last started, and no run worker ever "
        "reported for it"
    )


def resolve_stale_runs(
    instance: dg.DagsterInstance, *, now: float | None = None, started_at: float | None = None
) -> list[StaleRun]:
    """Mark failed every STARTING or STARTED run whose worker process is gone; free its slots."""
    if not isinstance(instance.run_launcher, DefaultRunLauncher):
        return []  # workers elsewhere (containers, other hosts): run monitoring's timeouts apply
    now = time.time() if now is None else now
    started_at = _THIS_PROCESS_STARTED_AT if started_at is None else started_at
    resolved: list[StaleRun] = []
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]),
        limit=100,
    )
    for record in records:
        run = record.dagster_run
        reason = _why_stale(instance, record, now=now, started_at=started_at)
        if reason is None:
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != run.status:
            continue  # it moved on while we looked
        instance.report_run_failed(
            run,
            f"Run marked failed by gh_pipeline: it was {run.status.value} but {reason} "
            "(dagster dev was probably killed). Nothing of an unfinished poll is lost: each "
            "write is one transaction, and the next poll fetches the feed again.",
        )
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        resolved.append(StaleRun(run.run_id, run.job_name, run.status.value, reason))
    return resolved
