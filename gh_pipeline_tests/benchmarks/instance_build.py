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
import tempfile
from pathlib import Path
from typing import Any

from gh_pipeline import settings
from gh_pipeline_tests.support.schema_checks import instance_home, measure


def _measure(ours: bool, shards: int, instances: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="instance-build-") as tmp:
        home = instance_home(Path(tmp), "home", ours=ours)
        out = measure(home, shards=shards, instances=instances)
    return {
        "rss_mb_warm": out["rss_mb_warm"],
        "ms_per_shard": out["ms_per_shard"],
        "compiles_per_shard": round(out["compiles_shards"] / shards, 1),
        "ms_per_instance": out["ms_per_instance"],
        "compiles_per_instance": round(out["compiles_instances"] / instances, 1),
        "rss_mb_end": out["rss_mb_end"],
    }


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
