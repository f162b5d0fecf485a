"""GitHubEventsClient against the fake GitHub over real HTTP: paging, ETag, retries, refusals."""

import random
import socket
from datetime import UTC, datetime
from email.utils import formatdate

import pytest

from gh_pipeline.live.github_client import (
    GitHubApiError,
    GitHubEventsClient,
    GitHubRefusal,
    backoff_delay,
)
from gh_pipeline.live.models import PageResult
from gh_pipeline_tests.support.fake_github import (
    FakeGitHub,
    Fault,
    numbered_feed,
    recorded_2019_feed,
)

TOKEN = "ghp_client_test_token_0123456789"


def _client(fake: FakeGitHub, **kwargs) -> GitHubEventsClient:
    kwargs.setdefault("retry_base_s", 0.001)
    kwargs.setdefault("sleep", lambda s: None)
    return GitHubEventsClient(api_url=fake.url, **kwargs)


def _known(ids_stored: set[str]):
    return lambda ids: {i for i in ids if i in ids_stored}


@pytest.fixture
def big_feed() -> FakeGitHub:
    with FakeGitHub(numbered_feed(400, serial=1), poll_interval=60, rate_limit=60) as fake:
        yield fake


def test_headers_user_agent_token_and_page_size(big_feed: FakeGitHub) -> None:
    with _client(big_feed, token=TOKEN) as client:
        client.poll(etag=None, max_pages=1)
    with _client(big_feed) as client:
        client.poll(etag=None, max_pages=1)
    authed, anonymous = big_feed.requests
    assert authed.headers["authorization"] == f"Bearer {TOKEN}"
    assert authed.headers["user-agent"].startswith("gh-pipeline/")
    assert authed.query["per_page"] == ["100"]
    assert "authorization" not in anonymous.headers


def test_rate_limit_headers_are_read_on_every_response(big_feed: FakeGitHub) -> None:
    with _client(big_feed) as client:
        result = client.poll(etag=None)
    assert [p.rate_limit.remaining for p in result.pages] == [59, 58, 57]
    assert [p.rate_limit.used for p in result.pages] == [1, 2, 3]
    assert result.pages[0].rate_limit.limit == 60
    assert result.pages[0].rate_limit.reset_at == datetime.fromtimestamp(big_feed.reset_at, UTC)
    assert result.first.poll_interval_s == 60


def test_first_poll_reads_three_pages_and_stops_at_the_cap(big_feed: FakeGitHub) -> None:
    with _client(big_feed) as client:
        result = client.poll(etag=None, known_ids=_known(set()))
    assert [p.page for p in result.pages] == [1, 2, 3]
    assert [len(p.events) for p in result.pages] == [100, 100, 100]
    assert result.requests == 3
    assert not result.reached_known
    # 300 events, the cap: older events may exist beyond what the feed serves.
    assert not result.feed_exhausted


def test_paging_stops_at_the_first_page_with_a_stored_event(big_feed: FakeGitHub) -> None:
    feed_ids = [e["id"] for e in big_feed.feed]
    with _client(big_feed) as client:
        on_page_1 = client.poll(etag=None, known_ids=_known({feed_ids[99]}))
        on_page_2 = client.poll(etag=None, known_ids=_known({feed_ids[150]}))
    assert len(on_page_1.pages) == 1 and on_page_1.reached_known
    assert len(on_page_2.pages) == 2 and on_page_2.reached_known
    assert [r.query.get("page", ["1"])[0] for r in big_feed.requests] == ["1", "1", "2"]


def test_etag_304_means_nothing_new_and_is_only_sent_on_page_1(big_feed: FakeGitHub) -> None:
    with _client(big_feed) as client:
        first = client.poll(etag=None)
        second = client.poll(etag=first.etag)
    assert first.etag and first.first.status == 200
    assert "if-none-match" not in big_feed.requests[1].headers  # page 2 of the first poll
    assert second.first.status == 304
    assert second.etag_matched and second.reached_known
    assert second.events == [] and len(second.pages) == 1
    assert big_feed.requests[-1].headers["if-none-match"] == first.etag
    # Unauthenticated, GitHub charges a 304 against the budget like any request.
    assert second.rate_limit.remaining == 60 - 3 - 1


def test_authenticated_304_is_free(big_feed: FakeGitHub) -> None:
    with _client(big_feed, token=TOKEN) as client:
        first = client.poll(etag=None, max_pages=1)
        second = client.poll(etag=first.etag, max_pages=1)
    assert second.first.status == 304
    assert second.rate_limit.remaining == first.rate_limit.remaining


def test_422_past_the_pagination_cap_is_the_end_of_the_feed(big_feed: FakeGitHub) -> None:
    # GitHub answers 422 for a page past its pagination cap: the poll ends there, no error.
    big_feed.schedule(
        Fault(
            status=422,
            page=3,
            body=b'{"message": "In order to keep the API fast for everyone, pagination is limited"}',
        )
    )
    with _client(big_feed) as client:
        result = client.poll(etag=None, known_ids=_known(set()))
    assert [p.status for p in result.pages] == [200, 200, 422]
    assert len(result.events) == 200
    assert not result.feed_exhausted  # the cap, not the bottom of the feed


def test_short_feed_without_next_link_is_exhausted() -> None:
    with FakeGitHub(numbered_feed(150, serial=2)) as fake, _client(fake) as client:
        result = client.poll(etag=None, known_ids=_known(set()))
    assert [len(p.events) for p in result.pages] == [100, 50]
    assert result.feed_exhausted and not result.reached_known


def test_5xx_is_retried_with_growing_jittered_backoff(big_feed: FakeGitHub) -> None:
    big_feed.schedule(Fault(status=502), Fault(status=503, body=b"<html>maintenance</html>"))
    sleeps: list[float] = []
    seen: list[tuple[int, int]] = []
    with _client(big_feed, sleep=sleeps.append, retry_base_s=1.0) as client:
        result = client.poll(
            etag=None, max_pages=1, on_request=lambda p, a: seen.append((p.status, a))
        )
    assert seen == [(502, 1), (503, 2), (200, 3)]
    assert result.requests == 3 and len(result.events) == 100
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_backoff_delay_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(a, base_s=1.0, cap_s=8.0, rng=rng) for a in range(1, 7)]
    for attempt, delay in enumerate(delays, start=1):
        full = min(8.0, 2.0 ** (attempt - 1))
        assert full / 2 <= delay <= full
    # Jitter: two clients failing together do not retry together.
    one = backoff_delay(3, base_s=1.0, cap_s=8.0, rng=random.Random(1))
    two = backoff_delay(3, base_s=1.0, cap_s=8.0, rng=random.Random(2))
    assert one != two


def test_persistent_5xx_fails_clearly_after_the_retries(big_feed: FakeGitHub) -> None:
    big_feed.schedule(*[Fault(status=500, page=2) for _ in range(4)])
    seen: list[PageResult] = []
    with _client(big_feed) as client, pytest.raises(GitHubApiError) as err:
        client.poll(etag=None, on_request=lambda p, a: seen.append(p))
    assert str(err.value) == "GET /events page 2 failed after 4 attempts; last: HTTP 500"
    assert [p.status for p in seen] == [200, 500, 500, 500, 500]
    assert err.value.page is not None and err.value.page.status == 500


def test_timeout_is_retried(big_feed: FakeGitHub) -> None:
    big_feed.schedule(Fault(status=200, delay_s=2.5))
    seen: list[PageResult] = []
    with _client(big_feed, timeout_s=1.0) as client:
        result = client.poll(etag=None, max_pages=1, on_request=lambda p, a: seen.append(p))
    assert seen[0].status == 0 and seen[0].error.startswith("ReadTimeout")
    assert result.first.status == 200 and len(result.events) == 100


def test_connection_refused_fails_after_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    seen: list[PageResult] = []
    client = GitHubEventsClient(
        api_url=f"http://127.0.0.1:{port}", retry_base_s=0.001, sleep=lambda s: None
    )
    with (
        client,
        pytest.raises(GitHubApiError, match=r"failed after 4 attempts; last: ConnectError"),
    ):
        client.poll(etag=None, on_request=lambda p, a: seen.append(p))
    assert len(seen) == 4 and all(p.status == 0 for p in seen)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"<!DOCTYPE html><html><body>Unicorn! We're down for maintenance</body></html>",
            "not JSON",
        ),
        (b'[{"id": "1", "type": "PushEvent"', "not JSON"),
        (b'{"message": "Server Error"}', "is a JSON dict, expected a list"),
    ],
)
def test_a_body_that_is_not_a_json_list_fails_without_retry(
    big_feed: FakeGitHub, body: bytes, message: str
) -> None:
    big_feed.schedule(Fault(status=200, body=body))
    with _client(big_feed) as client, pytest.raises(GitHubApiError, match=message) as err:
        client.poll(etag=None)
    assert len(big_feed.requests) == 1
    assert err.value.page is not None and err.value.page.events == ()


def test_refusals_are_not_retried_and_carry_the_headers(big_feed: FakeGitHub) -> None:
    big_feed.schedule(
        Fault(status=403, headers={"X-RateLimit-Remaining": "0"}),
        Fault(status=429, headers={"Retry-After": "120"}),
        Fault(status=403, body=b'{"message": "You have exceeded a secondary rate limit."}'),
    )
    pages = []
    with _client(big_feed) as client:
        for _ in range(3):
            with pytest.raises(GitHubRefusal) as err:
                client.poll(etag=None)
            pages.append(err.value.page)
    assert len(big_feed.requests) == 3
    assert pages[0].rate_limit.remaining == 0 and pages[0].rate_limit.reset_at is not None
    assert pages[1].retry_after_s == 120
    assert pages[2].retry_after_s is None and pages[2].rate_limit.remaining != 0


def test_retry_after_as_http_date(big_feed: FakeGitHub) -> None:
    stamp = datetime.now(UTC).timestamp() + 300
    big_feed.schedule(Fault(status=429, headers={"Retry-After": formatdate(stamp, usegmt=True)}))
    with _client(big_feed) as client, pytest.raises(GitHubRefusal) as err:
        client.poll(etag=None)
    assert err.value.page is not None
    assert 295 <= (err.value.page.retry_after_s or 0) <= 301


def test_the_token_never_shows_in_repr_or_errors(big_feed: FakeGitHub) -> None:
    big_feed.schedule(Fault(status=200, body=b"<html>" + TOKEN.encode() + b"</html>"))
    with _client(big_feed, token=TOKEN) as client:
        assert TOKEN not in repr(client)
        with pytest.raises(GitHubApiError) as err:
            client.poll(etag=None)
    # The body echoed the token (a misbehaving proxy page); the error quotes the body's start.
    assert big_feed.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert "starts with '<html>[redacted]" in str(err.value)
    assert TOKEN not in str(err.value) and TOKEN not in (err.value.page.error or "")


def test_recorded_real_feed_pages_like_github() -> None:
    """The 2019 recording (155 events): page 1 of 100 then page 2 of 55 and no next link."""
    feed = recorded_2019_feed()
    with FakeGitHub(feed) as fake, _client(fake) as client:
        result = client.poll(etag=None, known_ids=_known(set()))
    assert [e["id"] for e in result.events] == [e["id"] for e in feed]
    assert result.feed_exhausted
