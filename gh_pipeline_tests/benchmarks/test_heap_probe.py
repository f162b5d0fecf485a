"""The soak's heap probe, in a real child process that looks like Dagster's code server."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
