"""Benchmark: what Dagster's schema checks cost a process, with Dagster's SQLite storage and with
the storage dagster.yaml names.

    uv run python -m gh_pipeline_tests.benchmarks.instance_build
    uv run python -m gh_pipeline_tests.benchmarks.instance_build --shards 100 --instances 50

Every new run shard and every instance built from a dagster.yaml runs Dagster's alembic schema
check. The daemon makes a new shard for every run it launches; the code server builds an instance
for every sensor tick (every 5 s). For each storage, in a fresh process of its own (Dagster's
plain `storage: sqlite:` never imports gh_pipeline's instance storage, so nothing of it is
patched there), once warm: milliseconds and Python source compiles (the "compile" audit event)
per new run shard and per instance built, and the process's RSS before and after. Printed as a
table and written to <data_dir>/benchmarks/instance_build.json.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from gh_pipeline import settings
from gh_pipeline_tests.support.dagster_process import REPO_ROOT

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
        run = instance.add_run(dg.DagsterRun(job_name="benchmark"))
        instance.report_run_failed(run, "a new run shard")
    for _ in range(3):  # warm: imports, first resolutions
        new_shard()
    out["rss_mb_warm"] = round(rss_mb(), 1)
    before, started = compiles, time.perf_counter()
    for _ in range(shards):
        new_shard()
    out["ms_per_shard"] = round((time.perf_counter() - started) * 1000 / shards, 1)
    out["compiles_per_shard"] = round((compiles - before) / shards, 1)
before, started = compiles, time.perf_counter()
for _ in range(instances):
    with dg.DagsterInstance.from_config(home):
        pass
out["ms_per_instance"] = round((time.perf_counter() - started) * 1000 / instances, 1)
out["compiles_per_instance"] = round((compiles - before) / instances, 1)
out["rss_mb_end"] = round(rss_mb(), 1)
print(json.dumps(out))
"""


def _measure(ours: bool, shards: int, instances: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="instance-build-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        base = str(Path(tmp) / "storage")
        if ours:
            storage = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text(encoding="utf-8"))[
                "storage"
            ]
            storage["custom"]["config"]["base_dir"] = base
        else:
            storage = {"sqlite": {"base_dir": base}}
        config = {"storage": storage, "telemetry": {"enabled": False}}
        (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(home), str(shards), str(instances)],
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", type=int, default=50, help="new run shards (default 50)")
    parser.add_argument("--instances", type=int, default=30, help="instances built (default 30)")
    parser.add_argument("--data-dir", default=None, help="where the JSON goes (default ./data)")
    args = parser.parse_args()

    results = {
        "storage: sqlite (Dagster's)": _measure(False, args.shards, args.instances),
        "dagster.yaml's storage": _measure(True, args.shards, args.instances),
    }
    keys = list(next(iter(results.values())))
    print(f"{'':28}" + "".join(f"{k:>22}" for k in keys))
    for name, row in results.items():
        print(f"{name:28}" + "".join(f"{row[k]:>22}" for k in keys))
    out = settings.data_dir(args.data_dir).resolve() / "benchmarks" / "instance_build.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
