"""GH Archive hours: what an hour is called, where it lives, when it is due (no Dagster import).

GH Archive (https://www.gharchive.org) publishes every hour of GitHub's public event feed as
`<base>/YYYY-MM-DD-H.json.gz` (UTC, hour without a leading zero): gzip NDJSON, one event per line,
the same event shape as the Events API. An hour is downloaded and verified by
gh_pipeline.archive.fetch, then loaded by gh_pipeline.archive.bulk_load.

Rows from GH Archive carry source 'gharchive' and poll_id 'gharchive:YYYY-MM-DD-H'.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SOURCE = "gharchive"
PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster's default for hourly partitions
# GH Archive normally publishes an hour a few minutes after it ends, occasionally hours later.
# Until this long after the hour's end, a 404 means "not yet"; after it, "missing at the source".
NOT_YET_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class ArchiveHour:
    """One UTC hour of GH Archive."""

    start: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() != timedelta(0):
            raise ValueError(f"an archive hour starts at an aware UTC time, not {self.start!r}")
        if (self.start.minute, self.start.second, self.start.microsecond) != (0, 0, 0):
            raise ValueError(f"an archive hour starts on the hour, not at {self.start.isoformat()}")

    @classmethod
    def from_partition_key(cls, key: str) -> "ArchiveHour":
        try:
            start = datetime.strptime(key, PARTITION_KEY_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(
                f"not an hourly partition key (YYYY-MM-DD-HH:MM, UTC): {key!r}"
            ) from None
        return cls(start)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=1)

    @property
    def partition_key(self) -> str:
        return self.start.strftime(PARTITION_KEY_FORMAT)

    @property
    def name(self) -> str:
        """GH Archive's name for the hour: 2021-07-21-6 (no leading zero on the hour)."""
        return f"{self.start:%Y-%m-%d}-{self.start.hour}"

    @property
    def file_name(self) -> str:
        return f"{self.name}.json.gz"

    @property
    def poll_id(self) -> str:
        return f"{SOURCE}:{self.name}"

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.file_name}"

    def not_yet_due(self, now: datetime) -> bool:
        """Whether a 404 for this hour still means "not published yet" rather than "missing"."""
        return now < self.end + NOT_YET_GRACE
