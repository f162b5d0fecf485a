"""HTTP client for GitHub's public Events API (no Dagster import).

The token is held only in the request headers; it never appears in reprs, errors or results.
"""

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import httpx

from gh_pipeline.models import PageResult, PollResult, RateLimit
from gh_pipeline.settings import USER_AGENT

MAX_PAGES = 3  # the feed holds at most 300 events; page 4 answers 422
PER_PAGE = 100


class GitHubApiError(RuntimeError):
    """A response the poll cannot use; carries the page result for the poll log."""

    def __init__(self, message: str, page: PageResult | None = None) -> None:
        super().__init__(message)
        self.page = page


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_rate_limit(headers: httpx.Headers) -> RateLimit:
    reset = _int_header(headers, "x-ratelimit-reset")
    return RateLimit(
        limit=_int_header(headers, "x-ratelimit-limit"),
        remaining=_int_header(headers, "x-ratelimit-remaining"),
        used=_int_header(headers, "x-ratelimit-used"),
        reset_at=datetime.fromtimestamp(reset, UTC) if reset is not None else None,
    )


def parse_events_body(content: bytes) -> list[dict[str, Any]]:
    """The body must be a JSON list; anything else (HTML, an object, truncated JSON) is an error."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        snippet = content[:80].decode("utf-8", "replace")
        raise GitHubApiError(f"response body is not JSON ({exc}); starts with {snippet!r}") from exc
    if not isinstance(body, list):
        raise GitHubApiError(f"response body is a JSON {type(body).__name__}, expected a list")
    return body


class GitHubEventsClient:
    """Fetches up to three pages of `GET /events`, conditional on the last ETag."""

    def __init__(
        self,
        *,
        api_url: str,
        token: str | None = None,
        timeout_s: float = 10.0,
        user_agent: str = USER_AGENT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {
            "Accept": "application/vnd.github+json",
            "User-Agent": user_agent,
            "X-GitHub-Api-Version": "2022-11-28",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._base = api_url.rstrip("/")
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"GitHubEventsClient(api_url={self._base!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "GitHubEventsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch_page(
        self, url: str, *, page: int, etag: str | None = None
    ) -> tuple[PageResult, str | None]:
        """One request; returns the page and the Link rel=next URL, if any."""
        headers = {"If-None-Match": etag} if etag and page == 1 else {}
        requested_at = datetime.now(UTC)
        try:
            response = self._client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            result = PageResult(
                page=page, status=0, requested_at=requested_at, error=type(exc).__name__
            )
            raise GitHubApiError(
                f"request for page {page} failed: {type(exc).__name__}", result
            ) from exc
        h = response.headers
        base = {
            "page": page,
            "status": response.status_code,
            "requested_at": requested_at,
            "etag": h.get("etag"),
            "poll_interval_s": _int_header(h, "x-poll-interval"),
            "rate_limit": parse_rate_limit(h),
            "retry_after_s": _int_header(h, "retry-after"),
        }
        if response.status_code == 304:
            return PageResult(**base), None
        if response.status_code == 422 and page > 1:
            # GitHub answers 422 past the pagination cap: that is the end of the feed.
            return PageResult(**base), None
        if response.status_code != 200:
            result = PageResult(**base, error=f"HTTP {response.status_code}")
            raise GitHubApiError(
                f"GET /events page {page} answered HTTP {response.status_code}", result
            )
        try:
            events = parse_events_body(response.content)
        except GitHubApiError as exc:
            raise GitHubApiError(str(exc), PageResult(**base, error=str(exc))) from exc
        next_url = response.links.get("next", {}).get("url")
        return PageResult(**base, events=tuple(events)), next_url

    def poll(
        self,
        *,
        etag: str | None,
        known_ids: Callable[[Iterable[str]], set[str]] | None = None,
        max_pages: int = MAX_PAGES,
    ) -> PollResult:
        """Fetch page 1 (conditionally) and further pages only while every event on a page is new."""
        started_at = datetime.now(UTC)
        url: str | None = f"{self._base}/events?per_page={PER_PAGE}"
        pages: list[PageResult] = []
        reached_known = False
        for number in range(1, max_pages + 1):
            if url is None:
                break
            result, url = self.fetch_page(url, page=number, etag=etag)
            pages.append(result)
            if result.status != 200 or not result.events:
                reached_known = reached_known or result.not_modified
                break
            if known_ids is not None:
                ids = [str(e.get("id")) for e in result.events if isinstance(e, dict)]
                if known_ids(ids):
                    reached_known = True
                    break
        return PollResult(started_at=started_at, pages=tuple(pages), reached_known=reached_known)
