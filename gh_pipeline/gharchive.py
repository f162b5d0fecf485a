"""GH Archive hours: where they live, a verified streaming download, the bulk load (no Dagster import).

GH Archive (https://www.gharchive.org) publishes every hour of GitHub's public event feed as
`<base>/YYYY-MM-DD-H.json.gz` (UTC, hour without a leading zero): gzip NDJSON, one event per line,
the same event shape as the Events API. An hour is

1. downloaded as a stream and decompressed on the fly into a temporary NDJSON file (never held in
   memory); inflating the whole gzip stream proves it complete, so a truncated file or an
   interrupted transfer raises ArchiveDownloadError before anything touches the warehouse;
2. loaded by DuckDB's bulk readers (store.stage_ndjson) in one transaction: events already stored
   (from the live feed or an earlier load) are skipped by id, corrupt lines go to rejected_events
   with their reason, and a crash or kill -9 leaves either the whole hour or nothing.

Rows from GH Archive carry source 'gharchive' and poll_id 'gharchive:YYYY-MM-DD-H'.
"""

import os
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx

from gh_pipeline import settings, store
from gh_pipeline.models import LoadStats

SOURCE = "gharchive"
PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster's default for hourly partitions
CHUNK_BYTES = 1 << 20
# A download is stored decompressed (the gzip stream is inflated anyway, to verify it): DuckDB
# then reads plain NDJSON, which is cheaper than inflating it a second time inside the load.
PART_SUFFIX = ".part.ndjson"
# GH Archive normally publishes an hour a few minutes after it ends, occasionally hours later.
# Until this long after the hour's end, a 404 means "not yet"; after it, "missing at the source".
NOT_YET_GRACE = timedelta(hours=24)
# DuckDB's memory limit while an hour loads (its own setting is 80 % of RAM).
LOAD_MEMORY_LIMIT = "1GB"
# How far from its hour a stored copy of an archive event is looked for (see dedup_window).
DEDUP_MARGIN = timedelta(hours=1)
# How far from its hour an event of the hour's file is counted by stored_from_hour.
STORED_MARGIN = timedelta(days=1)


class ArchiveNotPublished(Exception):
    """GH Archive answered 404 for the hour: not published (yet)."""


class ArchiveDownloadError(Exception):
    """The hour could not be fetched completely and intact; nothing was loaded."""


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


def make_client(timeout_s: float = 60.0) -> httpx.Client:
    # A generous read timeout: a stalled transfer fails the partition instead of hanging a run.
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s, connect=15.0),
        headers={"User-Agent": settings.USER_AGENT},
        follow_redirects=True,
    )


def download_dir(data_dir: Path) -> Path:
    return settings.data_dir(data_dir) / "tmp" / SOURCE


class GzipStream:
    """Decompresses a gzip stream as it arrives: proves it is whole (every member ends with its
    CRC and length intact) and hands back the NDJSON, counting bytes and lines on the way."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        self._started_member = False
        self.compressed_bytes = 0
        self.uncompressed_bytes = 0
        self.lines = 0
        self._ends_with_newline = True

    def feed(self, data: bytes) -> bytes:
        self.compressed_bytes += len(data)
        parts = []
        while data:
            if self._inflater.eof:  # concatenated gzip members are one valid stream
                self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            self._started_member = True
            try:
                out = self._inflater.decompress(data)
            except zlib.error as exc:
                raise ArchiveDownloadError(
                    f"corrupt gzip data after {self.compressed_bytes} bytes: {exc}"
                ) from None
            if out:
                self.uncompressed_bytes += len(out)
                self.lines += out.count(b"\n")
                self._ends_with_newline = out.endswith(b"\n")
                parts.append(out)
            data = self._inflater.unused_data if self._inflater.eof else b""
        return b"".join(parts)

    def finish(self) -> None:
        if not self._started_member:
            raise ArchiveDownloadError("empty file: no gzip data at all")
        if not self._inflater.eof:
            raise ArchiveDownloadError(
                f"truncated gzip: the stream ends after {self.compressed_bytes} bytes without its "
                "trailer (an incomplete upload or transfer)"
            )
        if not self._ends_with_newline:
            self.lines += 1  # a last line without its newline is still a line


def expand_gzip_file(source: Path, dest: Path) -> GzipStream:
    """Check and decompress a local .gz hour file the way download_hour does a transfer."""
    stream = GzipStream()
    try:
        with source.open("rb") as src, dest.open("wb") as out:
            while chunk := src.read(CHUNK_BYTES):
                out.write(stream.feed(chunk))
        stream.finish()
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return stream


@dataclass(frozen=True)
class Download:
    path: Path
    url: str
    compressed_bytes: int
    uncompressed_bytes: int
    lines: int
    seconds: float


def download_hour(client: httpx.Client, hour: ArchiveHour, base_url: str, dest: Path) -> Download:
    """Stream one hour into a temporary NDJSON file under `dest`, decompressing and verifying the
    gzip stream as it arrives; the caller deletes the file after loading it. Raises
    ArchiveNotPublished on 404 and ArchiveDownloadError for anything short of a complete, intact
    file (and then leaves no file behind)."""
    url = hour.url(base_url)
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(f"{hour.name}.*{PART_SUFFIX}"):  # left by a run killed mid-download
        stale.unlink(missing_ok=True)
    path = dest / f"{hour.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{PART_SUFFIX}"
    stream = GzipStream()
    started = time.perf_counter()
    try:
        with client.stream("GET", url) as response:
            if response.status_code == 404:
                raise ArchiveNotPublished(f"{url} is not published (HTTP 404)")
            if response.status_code != 200:
                raise ArchiveDownloadError(f"HTTP {response.status_code}")
            with path.open("wb") as handle:
                # The body as sent: a server that labels the .gz file Content-Encoding: gzip must
                # not have it inflated here before the gzip check sees it.
                for chunk in response.iter_raw(CHUNK_BYTES):
                    handle.write(stream.feed(chunk))
        stream.finish()
    except httpx.HTTPError as exc:
        path.unlink(missing_ok=True)
        raise ArchiveDownloadError(f"download of {url} failed: {exc!r}") from exc
    except ArchiveDownloadError as exc:
        path.unlink(missing_ok=True)
        raise ArchiveDownloadError(f"{url}: {exc}") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Download(
        path=path,
        url=url,
        compressed_bytes=stream.compressed_bytes,
        uncompressed_bytes=stream.uncompressed_bytes,
        lines=stream.lines,
        seconds=time.perf_counter() - started,
    )


def is_published(client: httpx.Client, hour: ArchiveHour, base_url: str) -> bool:
    """HEAD the hour's file: True when it is there, False on 404; ArchiveDownloadError otherwise."""
    url = hour.url(base_url)
    try:
        response = client.head(url)
    except httpx.HTTPError as exc:
        raise ArchiveDownloadError(f"HEAD {url} failed: {exc!r}") from exc
    if response.status_code == 404:
        return False
    if response.status_code != 200:
        raise ArchiveDownloadError(f"HTTP {response.status_code} from HEAD {url}")
    return True


@dataclass(frozen=True)
class Coverage:
    """How the live feed and the archive overlap in one hour (events created in the hour)."""

    live_events: int  # stored from live polls, created in the hour
    archive_events: int  # distinct valid events in the hour's file
    in_both: int  # live events of the hour that the file also has

    @property
    def live_only(self) -> int:
        return self.live_events - self.in_both

    @property
    def archive_only(self) -> int:
        return self.archive_events - self.in_both

    @property
    def live_share_in_archive(self) -> float | None:
        return self.in_both / self.live_events if self.live_events else None

    @property
    def archive_share_in_live(self) -> float | None:
        return self.in_both / self.archive_events if self.archive_events else None


_COVERAGE_SQL = f"""
WITH archive AS (
    SELECT DISTINCT event_id FROM {store.STAGE_TABLE}
    WHERE reason IS NULL AND created_at >= $start AND created_at < $end
), live AS (
    SELECT event_id FROM raw_events
    WHERE source = 'api' AND created_at >= $start AND created_at < $end
)
SELECT (SELECT count(*) FROM live), (SELECT count(*) FROM archive),
       (SELECT count(*) FROM live SEMI JOIN archive USING (event_id))
"""


@dataclass(frozen=True)
class ArchiveLoad:
    stats: LoadStats
    coverage: Coverage
    seconds: float
    method: str  # how it was loaded: "direct", "staged" or "staged, all ids checked"

    @property
    def events_per_s(self) -> float:
        return self.stats.received / self.seconds if self.seconds > 0 else 0.0


def dedup_window(hour: ArchiveHour) -> tuple[datetime, datetime]:
    """Where stored copies of the hour's events can be: an event keeps its created_at, and an
    hour file holds the events created in that hour (an hour's margin for stragglers)."""
    return hour.start - DEDUP_MARGIN, hour.end + DEDUP_MARGIN


_FRESH_SQL = """
SELECT count(*) FILTER (WHERE source = 'api' AND created_at >= $start AND created_at < $end),
       count(*) FILTER (WHERE poll_id = $poll_id)
FROM raw_events WHERE created_at >= $window_start AND created_at < $window_end
"""

_IN_HOUR_SQL = """
SELECT count(*) FROM raw_events
WHERE poll_id = $poll_id AND created_at >= $start AND created_at < $end
"""


def _load_direct(
    conn: duckdb.DuckDBPyConnection, path: Path, hour: ArchiveHour, now: datetime, lines: int
) -> tuple[LoadStats, Coverage] | None:
    """The one-pass load of an hour nothing has touched yet; None (and nothing stored) when the
    file turns out to hold anything but `lines` new, valid, distinct events."""
    window = dedup_window(hour)
    conn.execute("BEGIN TRANSACTION")
    try:
        new = store.insert_file_direct(
            conn, path, poll_id=hour.poll_id, source=SOURCE, now=now, window=window
        )
        if new != lines:  # a rejected, repeated or empty line, or a known event: go staged
            conn.execute("ROLLBACK")
            return None
        in_hour = int(
            store.scalar(
                conn, _IN_HOUR_SQL, {"poll_id": hour.poll_id, "start": hour.start, "end": hour.end}
            )
        )
        conn.execute("COMMIT")
    except duckdb.ConstraintException:  # an id repeated in the file or stored elsewhere
        conn.execute("ROLLBACK")
        return None
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return (
        LoadStats(received=new, new=new, duplicates=0, rejected=0),
        Coverage(live_events=0, archive_events=in_hour, in_both=0),
    )


def _load_staged(
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    hour: ArchiveHour,
    now: datetime,
    window: tuple[datetime, datetime] | None,
) -> tuple[LoadStats, Coverage]:
    conn.execute("BEGIN TRANSACTION")
    try:
        received, rejected = store.stage_ndjson(conn, path)
        # Measured before the insert: the overlap with what the live feed already stored.
        live, archive, both = conn.execute(
            _COVERAGE_SQL, {"start": hour.start, "end": hour.end}
        ).fetchall()[0]
        new = store.insert_staged(conn, poll_id=hour.poll_id, source=SOURCE, now=now, window=window)
        store.drop_stage(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return (
        LoadStats(
            received=received, new=new, duplicates=received - rejected - new, rejected=rejected
        ),
        Coverage(live_events=int(live), archive_events=int(archive), in_both=int(both)),
    )


def load_hour_file(
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    hour: ArchiveHour,
    *,
    now: datetime | None = None,
    expected_lines: int | None = None,
) -> ArchiveLoad:
    """Load one verified hour file into raw_events in a single transaction; rerunning adds nothing.

    With `expected_lines` (the download's count), an hour that neither the live feed nor an
    earlier load has touched goes straight from file to table in one pass (the common case of a
    backfill; ~25 % faster). Anything else, or a direct pass that finds a bad, repeated or known
    line, takes the staged path: stage and check every line, then insert. Every attempt is its own
    transaction and a failed one stores nothing, so the outcome is the same whichever path ran.
    """
    now = now or datetime.now(UTC)
    store.ensure_schema(conn)
    started = time.perf_counter()
    # An hour is hundreds of MB of JSON: past the limit DuckDB spills its staging tables to
    # <warehouse>.tmp instead of growing (an older, fatter hour peaked at 3.3 GB without it).
    conn.execute("SET memory_limit = $limit", {"limit": LOAD_MEMORY_LIMIT})
    try:
        window = dedup_window(hour)
        result = None
        method = "direct"
        if expected_lines:
            live, earlier = conn.execute(
                _FRESH_SQL,
                {
                    "start": hour.start,
                    "end": hour.end,
                    "poll_id": hour.poll_id,
                    "window_start": window[0],
                    "window_end": window[1],
                },
            ).fetchall()[0]
            if not live and not earlier:
                result = _load_direct(conn, path, hour, now, expected_lines)
        if result is None:
            try:
                method = "staged"
                result = _load_staged(conn, path, hour, now, window)
            except duckdb.ConstraintException:
                # An event of this hour stored with a created_at outside the window: check
                # against every stored id instead (slower as history grows, always right).
                method = "staged, all ids checked"
                result = _load_staged(conn, path, hour, now, None)
    finally:
        # Back to DuckDB's default (nothing here configures another; SET with the value read
        # back would lose precision, DuckDB prints it rounded).
        conn.execute("RESET memory_limit")
    stats, coverage = result
    return ArchiveLoad(
        stats=stats, coverage=coverage, seconds=time.perf_counter() - started, method=method
    )


def stored_from_hour(conn: duckdb.DuckDBPyConnection, hour: ArchiveHour) -> tuple[int, int]:
    """(events, rejected lines) the warehouse holds from this hour's file, over all loads."""
    # Bounded by created_at so that DuckDB reads only the row groups near the hour.
    events = store.scalar(
        conn,
        "SELECT count(*) FROM raw_events WHERE source = $source AND poll_id = $poll_id"
        " AND created_at >= $start AND created_at < $end",
        {
            "source": SOURCE,
            "poll_id": hour.poll_id,
            "start": hour.start - STORED_MARGIN,
            "end": hour.end + STORED_MARGIN,
        },
    )
    rejected = store.scalar(
        conn,
        "SELECT count(*) FROM rejected_events WHERE source = $source AND poll_id = $poll_id",
        {"source": SOURCE, "poll_id": hour.poll_id},
    )
    return int(events), int(rejected)
