"""Runs whose process died are resolved by the poll sensor's next tick: real runs in a real
persistent instance, real (dead and live) processes."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import EngineEventData
from dagster._core.storage.tags import GRPC_INFO_TAG

from gh_pipeline.defs.live.jobs import POLL_JOB_NAME
from gh_pipeline.defs.live.sensors import github_events_sensor
from gh_pipeline.defs.ops.stale_runs import process_start_time, resolve_stale_runs
from gh_pipeline.defs.warehouse.resources import PipelineStorage


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f"storage:\n  sqlite:\n    base_dir: {home / 'storage'}\ntelemetry:\n  enabled: false\n",
        encoding="utf-8",
    )
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, pid: int | None) -> str:
    run = instance.add_run(dg.DagsterRun(job_name=POLL_JOB_NAME, status=status))
    if pid is not None:
        instance.report_engine_event(
            f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
        )
    return run.run_id


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.PIPELINE_FAILURE
    ).records
    assert records, run_id
    return records[-1].event_log_entry.dagster_event.message or ""


def test_process_start_time_tells_live_dead_and_reused_pids_apart() -> None:
    began = process_start_time(os.getpid())
    assert began is not None and began <= time.time()
    assert process_start_time(_dead_pid()) is None


def test_sensor_fails_runs_whose_worker_is_gone_and_then_launches_a_poll(
    instance: dg.DagsterInstance, data_dir: Path
) -> None:
    dead = _run(instance, dg.DagsterRunStatus.STARTED, _dead_pid())
    context = dg.build_sensor_context(
        instance=instance, resources={"storage": PipelineStorage(data_dir=str(data_dir))}
    )
    result = github_events_sensor(context)
    assert _status(instance, dead) == dg.DagsterRunStatus.FAILURE
    message = _failure_message(instance, dead)
    assert "run worker (pid" in message and "is no longer running" in message
    # The poll that the dead run blocked goes out on the same tick.
    assert isinstance(result, dg.RunRequest)


def test_only_runs_without_a_live_worker_are_resolved(instance: dg.DagsterInstance) -> None:
    now = time.time()
    live = _run(instance, dg.DagsterRunStatus.STARTED, os.getpid())
    dead = _run(instance, dg.DagsterRunStatus.STARTED, _dead_pid())
    # STARTING, no worker yet: stale only when launched before this process started (a crash
    # between launch and worker start), never while a fresh launch is still starting up.
    starting = _run(instance, dg.DagsterRunStatus.STARTING, None)

    fresh = resolve_stale_runs(instance, now=now + 1, started_at=now - 60)
    assert [r.run_id for r in fresh] == [dead]
    assert _status(instance, starting) == dg.DagsterRunStatus.STARTING

    after_restart = resolve_stale_runs(instance, now=now + 30, started_at=now + 25)
    assert [r.run_id for r in after_restart] == [starting]
    assert "no run worker ever reported" in _failure_message(instance, starting)
    assert _status(instance, live) == dg.DagsterRunStatus.STARTED


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A unix socket path must stay under ~100 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="gs-") as name:
        yield Path(name)


def _launched_by(instance: dg.DagsterInstance, grpc_info: dict[str, object]) -> str:
    run = dg.DagsterRun(
        job_name=POLL_JOB_NAME,
        status=dg.DagsterRunStatus.STARTING,
        tags={GRPC_INFO_TAG: json.dumps(grpc_info)},
    )
    return instance.add_run(run).run_id


def test_a_starting_run_whose_code_server_is_gone_is_resolved_at_once(
    instance: dg.DagsterInstance, short_dir: Path
) -> None:
    """After a crash the code server that launched a STARTING run is gone (its socket refuses):
    no 20 s grace. While it still answers (a reload), the grace applies."""
    dead_socket = short_dir / "dead.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(dead_socket))  # the file stays behind, like a killed server's
    live_socket = short_dir / "live.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(live_socket))
    live.listen()
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        dead_port = tcp.getsockname()[1]
    try:
        crashed = _launched_by(instance, {"host": "localhost", "socket": str(dead_socket)})
        crashed_tcp = _launched_by(instance, {"host": "127.0.0.1", "port": dead_port})
        reloaded = _launched_by(instance, {"host": "localhost", "socket": str(live_socket)})
        untagged = _run(instance, dg.DagsterRunStatus.STARTING, None)
        now = time.time()
        resolved = resolve_stale_runs(instance, now=now + 3, started_at=now + 1)
        assert sorted(r.run_id for r in resolved) == sorted([crashed, crashed_tcp])
        assert "by a code server that is gone" in _failure_message(instance, crashed)
        assert _status(instance, reloaded) == dg.DagsterRunStatus.STARTING
        assert _status(instance, untagged) == dg.DagsterRunStatus.STARTING
        later = resolve_stale_runs(instance, now=now + 30, started_at=now + 1)
        assert sorted(r.run_id for r in later) == sorted([reloaded, untagged])
    finally:
        live.close()
