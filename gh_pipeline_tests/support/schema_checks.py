"""What Dagster's alembic schema checks cost a process, measured in a fresh child process, and
the instance directories to measure them on: shared by the instance storage tests and the
instance_build benchmark."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from gh_pipeline_tests.support.dagster_process import REPO_ROOT


def instance_home(tmp_path: Path, name: str, *, ours: bool) -> Path:
    """An instance directory on the storage directory tmp_path/storage: dagster.yaml's storage
    block (`ours`), or Dagster's plain `storage: sqlite:` on the same files."""
    home = tmp_path / name
    home.mkdir()
    base = str(tmp_path / "storage")
    if ours:
        storage = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text(encoding="utf-8"))[
            "storage"
        ]
        storage["custom"]["config"]["base_dir"] = base
    else:
        storage = {"sqlite": {"base_dir": base}}
    config = {"storage": storage, "telemetry": {"enabled": False}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return home


# Counts Python's "compile" audit events (every compile of source, as alembic's loading of a
# migration script does) while the process, once warm, makes new run shards and then builds
# instances. A child process: an audit hook cannot be removed again, and Dagster's plain storage
# must be measured where gh_pipeline's instance storage was never imported.
CHILD = """
import json, sys, time
from pathlib import Path
import dagster as dg

compiles = 0
def count(event, _args):
    global compiles
    if event == "compile":
        compiles += 1
sys.addaudithook(count)

def rss_mb():
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0

home, shards, instances = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {}
with dg.DagsterInstance.from_config(home) as instance:
    def new_shard():
        run = instance.add_run(dg.DagsterRun(job_name="schema_checks"))
        instance.report_run_failed(run, "a new run shard")
    for _ in range(3):  # warm: imports, first resolutions
        new_shard()
    out["rss_mb_warm"] = round(rss_mb(), 1)
    before, started = compiles, time.perf_counter()
    for _ in range(shards):
        new_shard()
    out["ms_per_shard"] = round((time.perf_counter() - started) * 1000 / shards, 1)
    out["compiles_shards"] = compiles - before
before, started = compiles, time.perf_counter()
for _ in range(instances):
    with dg.DagsterInstance.from_config(home):
        pass
out["ms_per_instance"] = round((time.perf_counter() - started) * 1000 / instances, 1)
out["compiles_instances"] = compiles - before
out["rss_mb_end"] = round(rss_mb(), 1)
print(json.dumps(out))
"""


def measure(home: Path, *, shards: int, instances: int) -> dict[str, Any]:
    """Once warm, in a fresh process: ms per new run shard and per instance built from `home`,
    the compiles each phase made in all, and RSS warm and at the end (MB)."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(home), str(shards), str(instances)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])
