"""Cap glibc's malloc arenas in every Dagster process of this project (MALLOC_ARENA_MAX, default 2).

glibc gives each thread that allocates under contention its own malloc arena, up to 8 per core.
Dagster's daemon runs a thread per daemon (sensors, schedules, run queue, monitoring, ...) and the
code server a gRPC thread pool, so each process ends up with many arenas, each holding its own
free pages. With two (a 300-poll soak, docs/operations.md#a-month-unattended) the daemon started
4 MB lower, the code server and its proxy 15 MB lower, and the code server stayed flat after
warm-up; the daemon's slow native growth (3 MB per 100 polls) was not an arena effect (it was
alembic recompiling Dagster's migration scripts: instance_storage.load_alembic_scripts_once).

`cap_malloc_arenas` runs when `instance_storage` is imported, that is in every process that builds
the instance from `dagster.yaml`: `dagster dev` itself, before it starts the webserver, the daemon
and the code server, which then inherit the variable from its environment (glibc reads it at
start-up), and those processes again (mallopt caps arenas made after the call). Docker images set
the variable themselves (deploy/Dockerfile). Set MALLOC_ARENA_MAX yourself to choose another cap;
0 leaves glibc's own default.
"""

import ctypes
import os

from gh_pipeline import settings

# glibc's malloc.h: #define M_ARENA_MAX -8
_M_ARENA_MAX = -8


def cap_malloc_arenas() -> int | None:
    """Apply the cap to this process and to the processes it starts; the cap applied, or None.

    None where there is nothing to cap: not glibc (musl, macOS), or MALLOC_ARENA_MAX=0."""
    arena_max = settings.malloc_arena_max()
    # Children read the variable at start-up, before any Python runs: the way to reach them.
    os.environ[settings.ENV_MALLOC_ARENA_MAX] = str(arena_max)
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
