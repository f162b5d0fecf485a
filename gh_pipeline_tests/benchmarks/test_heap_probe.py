"""The soak's heap probe, in a real child process that looks like Dagster's code server."""

import json
import os
import subprocess
import sys
from pathlib import Path

from gh_pipeline_tests.benchmarks.soak import _native_summary

PROBE = Path(__file__).resolve().parent / "heap_probe"

# Grows one list of instances of a class of its own for about 3 s. The trailing "api grpc"
# arguments make its command line look like the code server's, which is what the probe keys on.
CHILD = """
import time
class LeakProbeMarker:
    pass
kept = []
for _ in range(30):
    kept.extend(LeakProbeMarker() for _ in range(2000))
    time.sleep(0.1)
"""


def _run_child(tmp_path: Path, *args: str) -> list[dict]:
    env = {
        **os.environ,
        "PYTHONPATH": str(PROBE),
        "SOAK_HEAP_DIR": str(tmp_path),
        "SOAK_HEAP_EVERY_S": "0.4",
    }
    subprocess.run([sys.executable, "-c", CHILD, *args], env=env, check=True, timeout=60)
    files = list(tmp_path.glob("*.jsonl"))
    if not files:
        return []
    assert len(files) == 1
    assert files[0].name.startswith("code_server-")
    return [json.loads(line) for line in files[0].read_text(encoding="utf-8").splitlines()]


def test_probe_records_a_growing_type_and_traced_heap(tmp_path: Path) -> None:
    records = _run_child(tmp_path, "api", "grpc")
    assert len(records) >= 4, records
    counts = [r["types"].get("__main__.LeakProbeMarker", 0) for r in records]
    assert counts == sorted(counts) and counts[-1] - counts[0] >= 4000, counts
    # tracing starts at the first sample, so only what was allocated after it counts
    assert records[0]["traced_bytes"] < records[-1]["traced_bytes"]
    assert all(r["rss_bytes"] > 1_000_000 for r in records)
    assert not list(tmp_path.glob("*.err"))


def test_probe_stays_out_of_other_processes(tmp_path: Path) -> None:
    assert _run_child(tmp_path, "dagster", "dev") == []


# Once memray watches (its capture file exists), holds one buffer allocated in a function of its
# own and frees another, then outlives the window. "dagster._daemon" makes it look like the daemon.
NATIVE_CHILD = """
import sys, time
from pathlib import Path
held = []
def hold_native_probe_buffer():
    held.append(bytearray(3_000_000))
def free_native_probe_buffer():
    return len(bytearray(5_000_000))
deadline = time.monotonic() + 30
while not list(Path(sys.argv[1]).glob("daemon-*.memray")) and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.3)
hold_native_probe_buffer()
free_native_probe_buffer()
time.sleep(8)  # the window closes 3 s after it opened; its file is written then
"""


def test_native_window_names_the_code_that_holds_memory(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(PROBE),
        "SOAK_HEAP_DIR": str(tmp_path),
        "SOAK_HEAP_EVERY_S": "60",
        "SOAK_NATIVE_AFTER_S": "0",
        "SOAK_NATIVE_FOR_S": "3",
    }
    subprocess.run(
        [sys.executable, "-c", NATIVE_CHILD, str(tmp_path), "-m", "dagster._daemon"],
        env=env,
        check=True,
        timeout=60,
    )
    [capture] = tmp_path.glob("daemon-*.memray")
    summary = _native_summary(tmp_path)[capture.stem]
    held_by = summary["by_python_frame_kb"]
    holder = next(k for k in held_by if k.startswith("hold_native_probe_buffer "))
    assert held_by[holder] >= 3_000, held_by
    # what was freed inside the window is not held; the peak saw both buffers
    assert not any(k.startswith("free_native_probe_buffer ") for k in held_by), held_by
    assert summary["peak_mb"] >= 8.0, summary
    assert summary["top"][0]["python"][0].startswith("hold_native_probe_buffer "), summary["top"][0]
