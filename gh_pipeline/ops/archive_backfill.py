"""Backfill a range of GH Archive hours from the command line, as the UI's Materialize button does
(no Dagster import: it asks the running Dagster webserver over its GraphQL API).

    uv run python -m gh_pipeline.ops.archive_backfill 2024-01-01-00:00 2024-01-07-23:00
    uv run python -m gh_pipeline.ops.archive_backfill 2024-01-01-00:00 2024-01-01-23:00 --wait

The backfill follows the asset's backfill policy (HOURS_PER_RUN hours per run, one transaction
per hour) and runs in the Dagster daemon of `uv run dagster dev`, so live polls keep their turn
between its runs. `dagster asset materialize --partition-range` cannot do this: it accepts only
assets whose policy is a single run for the whole range.
"""

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

from gh_pipeline import settings
from gh_pipeline.archive.hours import ArchiveHour

ASSET_KEY = "gharchive_hourly"
DEFAULT_URL = "http://127.0.0.1:3000"
TIMEOUT_S = 30.0
FINISHED = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")

_LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
  }
}
"""

_STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      numPartitions
      runs(limit: 1000) { runId status }
    }
    ... on PythonError { message }
  }
}
"""


class BackfillError(RuntimeError):
    """The backfill could not be requested or read; the message says why."""


@dataclass(frozen=True)
class BackfillStatus:
    backfill_id: str
    status: str
    hours: int
    runs: dict[str, int]  # run status -> runs

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def summary(self) -> str:
        runs = ", ".join(f"{n} {status.lower()}" for status, n in sorted(self.runs.items()))
        return f"backfill {self.backfill_id}: {self.status.lower()}, {self.hours} hours; runs: {runs or 'none yet'}"


def parse_range(first: str, last: str) -> tuple[ArchiveHour, ArchiveHour]:
    """Two partition keys (YYYY-MM-DD-HH:MM, UTC), checked: a bad one is named in the error."""
    try:
        start = ArchiveHour.from_partition_key(first)
    except ValueError as exc:
        raise BackfillError(f"first hour: {exc}") from None
    try:
        end = ArchiveHour.from_partition_key(last)
    except ValueError as exc:
        raise BackfillError(f"last hour: {exc}") from None
    if end.start < start.start:
        raise BackfillError(f"the last hour {last} comes before the first hour {first}")
    earliest = settings.gharchive_start()
    if start.start < earliest:
        raise BackfillError(
            f"the first hour {first} is before the first partition {earliest:%Y-%m-%d-%H:%M}"
            f" ({settings.ENV_GHARCHIVE_START})"
        )
    return start, end


def _graphql(client: httpx.Client, url: str, query: str, variables: dict[str, Any]) -> Any:
    try:
        response = client.post(
            f"{url.rstrip('/')}/graphql", json={"query": query, "variables": variables}
        )
    except httpx.HTTPError as exc:
        raise BackfillError(
            f"cannot reach the Dagster webserver at {url} ({exc!r}); is `uv run dagster dev` running?"
        ) from None
    if response.status_code != 200:
        raise BackfillError(f"the Dagster webserver at {url} answered HTTP {response.status_code}")
    body = response.json()
    if body.get("errors"):
        raise BackfillError(f"GraphQL error: {body['errors'][0].get('message')}")
    return body["data"]


def launch(client: httpx.Client, url: str, start: ArchiveHour, end: ArchiveHour) -> str:
    """Request the backfill; returns its id."""
    params = {
        "partitionsByAssets": [
            {
                "assetKey": {"path": [ASSET_KEY]},
                "partitions": {"range": {"start": start.partition_key, "end": end.partition_key}},
            }
        ]
    }
    result = _graphql(client, url, _LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        detail = result.get("message") or result
        raise BackfillError(f"Dagster refused the backfill ({result['__typename']}): {detail}")
    return str(result["backfillId"])


def status(client: httpx.Client, url: str, backfill_id: str) -> BackfillStatus:
    result = _graphql(client, url, _STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if result["__typename"] != "PartitionBackfill":
        raise BackfillError(f"backfill {backfill_id}: {result.get('message') or result}")
    runs: dict[str, int] = {}
    for run in result["runs"]:
        runs[run["status"]] = runs.get(run["status"], 0) + 1
    return BackfillStatus(backfill_id, result["status"], int(result["numPartitions"] or 0), runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("first", help="first hour, a partition key such as 2024-01-01-00:00 (UTC)")
    parser.add_argument("last", help="last hour, included, e.g. 2024-01-07-23:00")
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"Dagster webserver (default {DEFAULT_URL})"
    )
    parser.add_argument("--wait", action="store_true", help="report progress until it finishes")
    parser.add_argument("--poll-s", type=float, default=10.0, help="seconds between reports")
    args = parser.parse_args(argv)
    try:
        start, end = parse_range(args.first, args.last)
        with httpx.Client(timeout=TIMEOUT_S, headers={"User-Agent": settings.USER_AGENT}) as client:
            backfill_id = launch(client, args.url, start, end)
            hours = int((end.start - start.start).total_seconds() // 3600) + 1
            print(
                f"backfill {backfill_id} requested: {hours} hours {start.partition_key} to "
                f"{end.partition_key}; follow it at {args.url.rstrip('/')}/overview/backfills/"
                f"{backfill_id}",
                flush=True,
            )
            if not args.wait:
                return 0
            while True:
                current = status(client, args.url, backfill_id)
                print(current.summary(), flush=True)
                if current.finished:
                    return 0 if current.status in ("COMPLETED", "COMPLETED_SUCCESS") else 1
                time.sleep(args.poll_s)
    except BackfillError as exc:
        print(f"not backfilled: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
