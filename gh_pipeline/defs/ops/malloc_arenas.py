"""Cap glibc's malloc arenas in every Dagster process of this project (MALLOC_ARENA_MAX, default 2).

glibc gives each thread that allocates under contention its own malloc arena, up to 8 per core.
Dagster's daemon runs a thread per daemon (sensors, schedules, run queue, monitoring, ...) and the
code server a gRPC thread pool, so each process ends up with many arenas whose freed pages glibc
seldom hands back: RSS creeps for hours with no Python object growing. Measured with the soak
benchmark's heap probe (docs/operations.md#a-month-unattended): Python's heap flat, the daemon's RSS still
rising ~1 MB per 100 poll runs; with two arenas it was 10 MiB lower and flat.

`cap_malloc_arenas` runs when `instance_storage` is imported, that is in every process that builds
the instance from `dagster.yaml`: `dagster dev` itself, before it starts the webserver, the daemon
and the code server, which then inherit the variable from its environment (glibc reads it at
start-up), and those processes again (mallopt caps arenas made after the call). Docker images set
the variable themselves (deploy/Dockerfile). Set MALLOC_ARENA_MAX yourself to choose another cap;
0 leaves glibc's own default.
"""

import ctypes
import os
from collections.abc import Mapping

ARENA_MAX_VARIABLE = "MALLOC_ARENA_MAX"
DEFAULT_ARENA_MAX = 2
# glibc's malloc.h: #define M_ARENA_MAX -8
_M_ARENA_MAX = -8


def arena_max_setting(environ: Mapping[str, str]) -> int:
    """The arena cap MALLOC_ARENA_MAX asks for (0: glibc's default), or DEFAULT_ARENA_MAX unset."""
    raw = environ.get(ARENA_MAX_VARIABLE)
    if raw is None or not raw.strip():
        return DEFAULT_ARENA_MAX
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(
            f"{ARENA_MAX_VARIABLE}={raw!r} is not a whole number >= 0: set it to the number of "
            f"malloc arenas per process (default {DEFAULT_ARENA_MAX}; 0 keeps glibc's default) "
            "or unset it"
        )
    return value


def cap_malloc_arenas() -> int | None:
    """Apply the cap to this process and to the processes it starts; the cap applied, or None.

    None where there is nothing to cap: not glibc (musl, macOS), or MALLOC_ARENA_MAX=0."""
    arena_max = arena_max_setting(os.environ)
    # Children read the variable at start-up, before any Python runs: the way to reach them.
    os.environ[ARENA_MAX_VARIABLE] = str(arena_max)
    if arena_max == 0 or not _is_glibc():
        return None
    libc = ctypes.CDLL(None)
    # mallopt returns 1 on success; glibc honours the cap for arenas it creates from now on.
    if libc.mallopt(_M_ARENA_MAX, arena_max) != 1:
        return None
    return arena_max


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # the name is unknown off glibc
        return False
