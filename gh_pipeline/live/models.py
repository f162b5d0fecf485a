"""Frozen data models of a poll: what the client returns, the poll log and the sensor read (no Dagster import)."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DEFAULT_POLL_INTERVAL_S = 60


@dataclass(frozen=True)
class RateLimit:
    limit: int | None = None
    remaining: int | None = None
    used: int | None = None
    reset_at: datetime | None = None


@dataclass(frozen=True)
class PageResult:
    """One HTTP response of a poll."""

    page: int
    status: int
    requested_at: datetime
    events: tuple[dict[str, Any], ...] = ()
    etag: str | None = None
    poll_interval_s: int | None = None
    rate_limit: RateLimit = field(default_factory=RateLimit)
    retry_after_s: int | None = None
    error: str | None = None

    @property
    def event_ids(self) -> list[str]:
        """Ids of the page's events, as strings (events without one are left out)."""
        return [str(e["id"]) for e in self.events if isinstance(e, dict) and "id" in e]

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True)
class PollResult:
    """All pages fetched by one poll, in order."""

    started_at: datetime
    pages: tuple[PageResult, ...]
    reached_known: bool

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for page in self.pages for event in page.events]

    @property
    def first(self) -> PageResult:
        return self.pages[0]

    @property
    def etag(self) -> str | None:
        return self.first.etag

    @property
    def etag_matched(self) -> bool:
        return self.first.not_modified

    @property
    def poll_interval_s(self) -> int:
        return self.first.poll_interval_s or DEFAULT_POLL_INTERVAL_S

    @property
    def rate_limit(self) -> RateLimit:
        return self.pages[-1].rate_limit
