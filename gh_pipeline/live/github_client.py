"""HTTP client for GitHub's public Events API (no Dagster import).

The token is held only in the request headers; it never appears in reprs, errors or results.
Transient faults (5xx, timeouts, connection errors) are retried a few times inside a poll with
exponential backoff and jitter; refusals (403/429) are never retried here: the caller decides
when the next request may go out.
"""

import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from gh_pipeline.live.models import PageResult, PollResult, RateLimit
from gh_pipeline.settings import USER_AGENT

MAX_PAGES = 3  # the feed holds at most 300 events; page 4 answers 422
PER_PAGE = 100
FEED_CAP = MAX_PAGES * PER_PAGE

# In-poll retries of transient faults: 4 attempts, waits ~1, 2, 4 s (each jittered to 50-100 %).
RETRY_ATTEMPTS = 4
RETRY_BASE_S = 1.0
RETRY_CAP_S = 8.0

# Refusals: the caller waits as GitHub asks (reset time, retry-after, or a secondary backoff).
REFUSAL_STATUSES = frozenset({403, 429})

# Network faults worth another try; anything else from httpx (a bad URL, say) fails at once.
_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)

RequestHook = Callable[[PageResult, int], None]
"""Called once per HTTP request (with its attempt number), including failed and retried ones."""


class GitHubApiError(RuntimeError):
    """A response the poll cannot use; carries the page result for the poll log."""

    def __init__(self, message: str, page: PageResult | None = None) -> None:
        super().__init__(message)
        self.page = page


class GitHubRefusal(GitHubApiError):
    """GitHub said no (403/429): a rate limit, a retry-after or a secondary limit."""


class GitHubNotFound(GitHubApiError):
    """404: the feed does not exist (a repository deleted, made private or never there)."""


@dataclass(frozen=True)
class FeedPoll(PollResult):
    """A poll plus what the budget and the gap detection need to know about it."""

    requests: int = 0  # HTTP requests made, retries and 304s included
    feed_exhausted: bool = False  # the feed ended before the pagination cap: nothing beyond it
    moved_to: str | None = None  # a 301 was followed to this URL (a renamed repository)


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _retry_after_s(headers: httpx.Headers, now: datetime) -> int | None:
    """retry-after is seconds (what GitHub sends) or an HTTP date (what HTTP allows)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _int_header(headers, "retry-after")
    if seconds is not None:
        return max(seconds, 0)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(int((when - now).total_seconds() + 0.999), 0)


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


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: base·2^(attempt-1), capped, then 50-100 % of that.

    Jitter keeps many clients that failed together from retrying together; the 50 % floor keeps
    a retry from following the fault immediately.
    """
    delay = min(cap_s, base_s * 2 ** (attempt - 1))
    return delay / 2 + rng.uniform(0, delay / 2)


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
        retry_attempts: int = RETRY_ATTEMPTS,
        retry_base_s: float = RETRY_BASE_S,
        retry_cap_s: float = RETRY_CAP_S,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        headers = {
            "Accept": "application/vnd.github+json",
            "User-Agent": user_agent,
            "X-GitHub-Api-Version": "2022-11-28",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.authenticated = bool(token)
        self._token = token or None
        self._base = api_url.rstrip("/")
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            transport=transport,
        )
        self._attempts = max(1, retry_attempts)
        self._retry_base_s = retry_base_s
        self._retry_cap_s = retry_cap_s
        self._sleep = sleep
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"GitHubEventsClient(api_url={self._base!r}, authenticated={self.authenticated})"

    def close(self) -> None:
        self._client.close()

    def _redact(self, text: str) -> str:
        """Belt and braces: a body or error that echoes the token (a misbehaving proxy, say)
        must not carry it into logs and run metadata."""
        return text.replace(self._token, "[redacted]") if self._token else text

    def __enter__(self) -> "GitHubEventsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self, url: str, *, page: int, etag: str | None
    ) -> tuple[PageResult, str | None, bool]:
        """One HTTP request, never raising. Returns the page, the Link rel=next URL, and whether
        a failure is transient (worth another try)."""
        headers = {"If-None-Match": etag} if etag and page == 1 else {}
        requested_at = datetime.now(UTC)
        try:
            response = self._client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            # The message names the failure, never the request headers (they hold the token).
            error = self._redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            result = PageResult(page=page, status=0, requested_at=requested_at, error=error)
            return result, None, isinstance(exc, _TRANSIENT_ERRORS)
        h = response.headers
        base = {
            "page": page,
            "status": response.status_code,
            "requested_at": requested_at,
            "etag": h.get("etag"),
            "poll_interval_s": _int_header(h, "x-poll-interval"),
            "rate_limit": parse_rate_limit(h),
            "retry_after_s": _retry_after_s(h, requested_at),
        }
        status = response.status_code
        if status == 304:
            return PageResult(**base), None, False
        if status == 301 and page == 1:
            # A renamed repository: the caller follows the Location once and records it.
            return PageResult(**base), h.get("location"), False
        if status == 422 and page > 1:
            # GitHub answers 422 past the pagination cap: that is the end of the feed.
            return PageResult(**base), None, False
        if status != 200:
            return PageResult(**base, error=f"HTTP {status}"), None, status >= 500
        try:
            events = parse_events_body(response.content)
        except GitHubApiError as exc:
            # A 200 with a bad body (HTML, an object, truncated JSON): another try would most
            # likely bring the same, and the poll must fail clearly rather than guess.
            return PageResult(**base, error=self._redact(str(exc))), None, False
        next_url = response.links.get("next", {}).get("url")
        return PageResult(**base, events=tuple(events)), next_url, False

    def fetch_page(
        self,
        url: str,
        *,
        page: int,
        etag: str | None = None,
        on_request: RequestHook | None = None,
        path: str = "/events",
    ) -> tuple[PageResult, str | None]:
        """One page, retrying transient faults; raises GitHubApiError when it cannot be had.
        `path` names the feed in error messages."""
        for attempt in range(1, self._attempts + 1):
            result, next_url, transient = self._request(url, page=page, etag=etag)
            if on_request is not None:
                on_request(result, attempt)
            if result.error is None:
                return result, next_url
            if result.status in REFUSAL_STATUSES:
                raise GitHubRefusal(
                    f"GET {path} page {page}: GitHub refused with HTTP {result.status}", result
                )
            if result.status == 404:
                raise GitHubNotFound(f"GET {path} page {page}: {result.error}", result)
            if not transient:
                raise GitHubApiError(f"GET {path} page {page}: {result.error}", result)
            if attempt == self._attempts:
                raise GitHubApiError(
                    f"GET {path} page {page} failed after {attempt} attempts; last: {result.error}",
                    result,
                )
            self._sleep(
                backoff_delay(
                    attempt, base_s=self._retry_base_s, cap_s=self._retry_cap_s, rng=self._rng
                )
            )
        raise AssertionError("unreachable")  # the loop returns or raises

    def poll(
        self,
        *,
        etag: str | None,
        known_ids: Callable[[Iterable[str]], set[str]] | None = None,
        max_pages: int = MAX_PAGES,
        on_request: RequestHook | None = None,
        path: str = "/events",
        url: str | None = None,
    ) -> FeedPoll:
        """Fetch page 1 (conditionally) and further pages only while every event on a page is new.

        `path` is the feed: `/events`, or `/repos/{owner}/{repo}/events`; `url`, when given,
        is where to fetch it (a renamed repository's redirect target). A 301 on page 1 is
        followed once; the poll then carries `moved_to`."""
        started_at = datetime.now(UTC)
        if url is None:
            url = f"{self._base}{path}?per_page={PER_PAGE}"
        pages: list[PageResult] = []
        requests = 0
        reached_known = False
        moved_to: str | None = None

        def count(result: PageResult, attempt: int) -> None:
            nonlocal requests
            requests += 1
            if on_request is not None:
                on_request(result, attempt)

        for number in range(1, max_pages + 1):
            result, url = self.fetch_page(url, page=number, etag=etag, on_request=count, path=path)
            if result.status == 301:
                if moved_to is not None or not url:
                    raise GitHubApiError(f"GET {path}: HTTP 301 without a usable Location", result)
                target = url if "?" in url else f"{url}?per_page={PER_PAGE}"
                moved_to = url.split("?")[0]
                # The ETag belonged to the old address; ask the new one afresh.
                result, url = self.fetch_page(target, page=number, on_request=count, path=path)
            pages.append(result)
            if result.status != 200 or not result.events:
                # 304: nothing new since the ETag. 422: the pagination cap, the end of the feed.
                reached_known = result.not_modified
                break
            if known_ids is not None and known_ids(result.event_ids):
                reached_known = True
                break
            if url is None:
                break
        # No rel="next" short of the cap: we saw the whole feed, so nothing can lie beyond it.
        last = pages[-1]
        exhausted = (
            last.status == 200 and url is None and sum(len(p.events) for p in pages) < FEED_CAP
        )
        return FeedPoll(
            started_at=started_at,
            pages=tuple(pages),
            reached_known=reached_known,
            requests=requests,
            feed_exhausted=exhausted,
            moved_to=moved_to,
        )
