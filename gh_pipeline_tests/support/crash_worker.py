"""The worker of gh_pipeline_tests/ops/test_crash_safety.py, killed with SIGKILL at random moments:

    python -m gh_pipeline_tests.support.crash_worker load|rebuild <data_dir> <seed>

`load` loads every landing file and refreshes the filtered and metric tables (the tick);
`rebuild` rebuilds the whole warehouse from the landing files and swaps it in. Kept free of
pytest and Dagster imports so a worker starts in well under a second.
"""

import random
import sys
from datetime import UTC, datetime
from pathlib import Path

from gh_pipeline import settings, warehouse
from gh_pipeline.live import landing
from gh_pipeline.model import metrics
from gh_pipeline.ops import recovery
from gh_pipeline.warehouse import raw

AS_OF = datetime(2021, 7, 21, 10, 0, tzinfo=UTC)


def worker(mode: str, data_dir: Path, seed: int) -> None:
    if mode == "rebuild":
        print("ready", flush=True)
        recovery.rebuild(data_dir, as_of=AS_OF, publish=False)
    else:
        conn = warehouse.connect(settings.warehouse_path(data_dir))
        print("ready", flush=True)
        files = landing.list_landing_files(settings.landing_dir(data_dir))
        random.Random(seed).shuffle(files)
        for i, path in enumerate(files):
            raw.load_ndjson(conn, path, poll_id=path.name.split(".")[0], source="api")
            if i % 2 == 1:
                metrics.refresh_all(conn, as_of=AS_OF)
        metrics.refresh_all(conn, as_of=AS_OF)
        conn.close()
    print("done", flush=True)


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
