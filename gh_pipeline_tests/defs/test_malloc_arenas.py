"""glibc's malloc arenas are capped in the processes that load the instance storage, and in the
processes they start: counted by glibc itself (malloc_stats) in real child processes."""

import subprocess
import sys

import pytest

from gh_pipeline import settings
from gh_pipeline.settings import DEFAULT_MALLOC_ARENA_MAX, ENV_MALLOC_ARENA_MAX
from gh_pipeline_tests.support.dagster_process import base_env

# Sixteen threads allocate at the same moment, so glibc hands contending threads new arenas
# (up to 8 per core without a cap), then glibc prints one "Arena N:" block per arena to stderr.
_ALLOCATE_AND_COUNT = """
import ctypes, sys, threading
{prelude}
start = threading.Barrier(16)
kept = []
def allocate():
    start.wait()
    for _ in range(3000):
        kept.append(b"x" * 4000)
threads = [threading.Thread(target=allocate) for _ in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
sys.stderr.flush()
ctypes.CDLL(None).malloc_stats()
"""


def _arenas(prelude: str, **env: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _ALLOCATE_AND_COUNT.format(prelude=prelude)],
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_importing_the_instance_storage_caps_this_process_at_two_arenas() -> None:
    uncapped = _arenas("")
    # Without the cap the same work spreads over more arenas: the count below can tell.
    assert uncapped > DEFAULT_MALLOC_ARENA_MAX
    assert _arenas("import gh_pipeline.defs.ops.instance_storage") <= DEFAULT_MALLOC_ARENA_MAX


def test_a_cap_the_user_set_is_kept_and_zero_leaves_glibc_alone() -> None:
    assert _arenas("import gh_pipeline.defs.ops.instance_storage", MALLOC_ARENA_MAX="1") == 1
    uncapped = _arenas("import gh_pipeline.defs.ops.instance_storage", MALLOC_ARENA_MAX="0")
    assert uncapped > DEFAULT_MALLOC_ARENA_MAX


@pytest.mark.parametrize(("given", "child_sees"), [(None, "2"), ("5", "5")])
def test_processes_started_afterwards_inherit_the_cap(given: str | None, child_sees: str) -> None:
    # dagster dev loads the instance, then starts the webserver, daemon and code server: they
    # get the cap from their environment, which glibc reads before any Python runs.
    script = (
        "import subprocess, sys\n"
        "import gh_pipeline.defs.ops.instance_storage\n"
        "subprocess.run([sys.executable, '-c', "
        "'import os; print(os.environ.get(\"MALLOC_ARENA_MAX\"))'], check=True)\n"
    )
    env = {} if given is None else {ENV_MALLOC_ARENA_MAX: given}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == child_sees


@pytest.mark.parametrize(("raw", "expected"), [(None, 2), ("", 2), ("4", 4), (" 3 ", 3), ("0", 0)])
def test_the_setting_reads_the_variable(
    raw: str | None, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if raw is None:
        monkeypatch.delenv(ENV_MALLOC_ARENA_MAX, raising=False)
    else:
        monkeypatch.setenv(ENV_MALLOC_ARENA_MAX, raw)
    assert settings.malloc_arena_max() == expected


@pytest.mark.parametrize("raw", ["two", "-1", "2.5"])
def test_a_bad_value_is_refused_by_name(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MALLOC_ARENA_MAX, raw)
    with pytest.raises(ValueError, match=rf"MALLOC_ARENA_MAX must be a whole number .*'{raw}'"):
        settings.malloc_arena_max()
