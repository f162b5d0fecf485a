"""A verified streaming download of one GH Archive hour (no Dagster import).

The hour is downloaded as a stream and decompressed on the fly into a temporary NDJSON file
(never held in memory); inflating the whole gzip stream proves it complete, so a truncated file or
an interrupted transfer raises ArchiveDownloadError before anything touches the warehouse.
"""

import os
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import httpx

from gh_pipeline import settings
from gh_pipeline.archive.hours import SOURCE, ArchiveHour

CHUNK_BYTES = 1 << 20
# A download is stored decompressed (the gzip stream is inflated anyway, to verify it): DuckDB
# then reads plain NDJSON, which is cheaper than inflating it a second time inside the load.
PART_SUFFIX = ".part.ndjson"


class ArchiveNotPublished(Exception):
    """GH Archive answered 404 for the hour: not published (yet)."""


class ArchiveDownloadError(Exception):
    """The hour could not be fetched completely and intact; nothing was loaded."""


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
