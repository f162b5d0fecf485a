"""Heap probe for the soak benchmark's `--heap-probe`: loaded by Python's `site` at start-up of
every process that has this directory on PYTHONPATH; active only in the Dagster daemon and the
code server (the `api grpc` process), and only when SOAK_HEAP_DIR is set.

Every SOAK_HEAP_EVERY_S seconds (default 60) it appends to <SOAK_HEAP_DIR>/<role>-<pid>.jsonl:
the process's RSS, the bytes Python has allocated and not freed since tracing began
(`tracemalloc`, started at the first sample so start-up imports do not count and start-up stays
fast) and the live objects the garbage collector knows, by type. A Python-level leak shows as
traced bytes and some type's count rising sample after sample; RSS rising while both stay flat
points below Python (the allocator, native libraries).

With SOAK_NATIVE_AFTER_S and SOAK_NATIVE_FOR_S also set, the daemon records every malloc with its
native and Python stack (memray, native traces) from SOAK_NATIVE_AFTER_S seconds after start for
SOAK_NATIVE_FOR_S seconds, to <SOAK_HEAP_DIR>/daemon-<pid>.memray: what it allocated in that
window and still held at its end is what the process grew by, with the code that allocated it.
Starting after warm-up keeps start-up's lasting allocations (imports, caches) out of it; the
daemon then skips tracemalloc (its traced bytes read 0), whose own tables memray would count.
"""

import collections
import gc
import json
import os
import threading
import time
import tracemalloc
from pathlib import Path


def _role() -> str | None:
    try:
        cmd = Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "dagster._daemon" in cmd:
        return "daemon"
    if "api grpc" in cmd:
        return "code_server"
    return None


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    return 0


def _type_name(obj: object) -> str:
    kind = type(obj)
    # Some metaclasses expose __qualname__ as a descriptor, not a string: str() both parts.
    return f"{getattr(kind, '__module__', '?')!s}.{getattr(kind, '__qualname__', '?')!s}"


def _sample(out: Path, started: float) -> None:
    gc.collect()
    counts = collections.Counter(_type_name(obj) for obj in gc.get_objects())
    record = {
        "t_s": round(time.monotonic() - started, 1),
        "rss_bytes": _rss_bytes(),
        "traced_bytes": tracemalloc.get_traced_memory()[0],
        "threads": threading.active_count(),
        "types": dict(counts.most_common(300)),
    }
    with out.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _loop(out: Path, every_s: float, trace: bool) -> None:
    started = time.monotonic()
    while True:
        time.sleep(every_s)
        if trace and not tracemalloc.is_tracing():
            tracemalloc.start(1)
        try:
            _sample(out, started)
        except Exception as error:  # a probe must never take the process down
            with out.with_suffix(".err").open("a", encoding="utf-8") as handle:
                handle.write(f"{type(error).__name__}: {error}\n")


def _native_window(out: Path, after_s: float, for_s: float) -> None:
    # Imported here: memray is a dev dependency, needed only when a native window is asked for.
    import memray

    time.sleep(after_s)
    out.unlink(missing_ok=True)
    tracker = memray.Tracker(
        out, native_traces=True, file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS
    )
    # Entered and left on this thread; memray records the allocations of every thread.
    with tracker:
        time.sleep(for_s)


def _start() -> None:
    directory = os.environ.get("SOAK_HEAP_DIR")
    role = _role()
    if not directory or role is None:
        return
    out = Path(directory) / f"{role}-{os.getpid()}.jsonl"
    every_s = float(os.environ.get("SOAK_HEAP_EVERY_S", "60"))
    after_s, for_s = os.environ.get("SOAK_NATIVE_AFTER_S"), os.environ.get("SOAK_NATIVE_FOR_S")
    native = role == "daemon" and bool(after_s and for_s)
    # tracemalloc's own tables are mallocs too: with memray watching, they would show as held.
    threading.Thread(
        target=_loop, args=(out, every_s, not native), daemon=True, name="soak-heap-probe"
    ).start()
    if native:
        threading.Thread(
            target=_native_window,
            args=(out.with_suffix(".memray"), float(after_s), float(for_s)),
            daemon=True,
            name="soak-native-probe",
        ).start()


_start()
