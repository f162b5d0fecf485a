"""Start and stop real Dagster processes for tests (own process group, always cleaned up)."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    poll_s: float = 1.0,
    describe: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    detail = f"\n{describe()}" if describe is not None else ""
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    # dagster dev does not always exit on SIGTERM: end the whole process group.
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            # Children may outlive the leader; make sure the group is gone.
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def running(
    args: list[str], *, cwd: Path, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        kill_group(proc)


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # MALLOC_ARENA_MAX too: the project sets it, and a test must see that, not the caller's.
        if not k.startswith(("DAGSTER_", "GH_PIPELINE_", "GITHUB_", "MALLOC_"))
    }
    env.update(extra)
    return env


@dataclass(frozen=True)
class GroupProcess:
    pid: int
    role: str  # daemon, webserver, code_server, code_server_proxy, dagster_dev or other
    cmd: str


def process_role(cmd: str) -> str:
    """Which part of `dagster dev` a command line is."""
    if "dagster._daemon" in cmd:
        return "daemon"
    if "dagster_webserver" in cmd:
        return "webserver"
    if "api grpc" in cmd:
        return "code_server"  # loads the definitions, evaluates the sensor, starts run workers
    if "code-server" in cmd:
        return "code_server_proxy"  # `dagster code-server start`: restarts the one above
    if "dagster dev" in cmd or " dev " in cmd:
        return "dagster_dev"
    return "other"  # run workers come and go


def group_processes(pgid: int) -> list[GroupProcess]:
    """The live processes of a process group (from /proc), with their roles."""
    out: list[GroupProcess] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text(encoding="ascii").rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            raw_cmd = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        cmd = raw_cmd.replace(b"\0", b" ").decode("utf-8", "replace").strip()
        out.append(GroupProcess(int(stat.parent.name), process_role(cmd), cmd))
    return out


def process_environ(pid: int) -> dict[str, str]:
    """A live process's environment (from /proc); empty if it has ended."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(
        item.decode("utf-8", "replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item
    )
