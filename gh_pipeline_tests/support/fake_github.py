"""A small fake of GitHub's Events API on 127.0.0.1 for tests and demos.

Real HTTP with the real headers (ETag/304, X-Poll-Interval, Link, X-RateLimit-*), fed with real
recorded events, plus a fault schedule so a test can script 5xx, 403/429, bad bodies and delays.
Besides the global `/events` it serves repository feeds, `/repos/{owner}/{repo}/events`, each
with its own ETag, X-Poll-Interval, Link and 300-event cap, all sharing one rate budget; a
deleted repository answers 404 and a renamed one 301 to `/repositories/{id}/events`, as GitHub
does.

Run it for a demo (re-dates real events to now and adds a few every poll interval):
    uv run python -m gh_pipeline_tests.support.fake_github --port 8765 --poll-interval 10
"""

import argparse
import copy
import functools
import gzip
import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FEED_CAP = 300


def load_recorded(name: str) -> list[dict[str, Any]]:
    """Events of one recorded response in fixtures/api (newest first, as GitHub serves them)."""
    data = json.loads((FIXTURES / "api" / name).read_text(encoding="utf-8"))
    return data["events"] if isinstance(data, dict) and "events" in data else data


def recorded_2019_feed() -> list[dict[str, Any]]:
    """The 2019 paging session's distinct events, newest first (pages overlap, like the real feed)."""
    seen: dict[str, dict[str, Any]] = {}
    for path in sorted((FIXTURES / "api").glob("events-2019-10-21-page*.json")):
        for event in load_recorded(path.name):
            seen.setdefault(event["id"], event)
    return sorted(seen.values(), key=lambda e: e["created_at"], reverse=True)


def archive_fixture_events() -> list[dict[str, Any]]:
    """Every event line of the recorded GH Archive hours in fixtures/gharchive, file by file in
    name order, repeats included (an hour can hold the same id twice)."""
    events: list[dict[str, Any]] = []
    for path in sorted((FIXTURES / "gharchive").glob("*.json.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            events.extend(json.loads(line) for line in handle if line.strip())
    return events


def trim_event(event: dict[str, Any]) -> dict[str, Any]:
    """The payload GitHub serves since 2025-10-07: PullRequestEvent keeps action, number and a
    minimal pull_request (id, number, url, head, base); PushEvent loses commits/size."""
    event = copy.deepcopy(event)
    payload = event.get("payload", {})
    if event.get("type") == "PullRequestEvent":
        pr = payload.get("pull_request", {})

        def ref(side: dict[str, Any]) -> dict[str, Any]:
            repo = side.get("repo") or {}
            return {
                "ref": side.get("ref"),
                "sha": side.get("sha"),
                "repo": {"id": repo.get("id"), "name": repo.get("name"), "url": repo.get("url")},
            }

        event["payload"] = {
            "action": payload.get("action"),
            "number": payload.get("number"),
            "pull_request": {
                "id": pr.get("id"),
                "number": pr.get("number"),
                "url": pr.get("url"),
                "head": ref(pr.get("head", {})),
                "base": ref(pr.get("base", {})),
            },
        }
    elif event.get("type") == "PushEvent":
        for key in ("commits", "size", "distinct_size"):
            payload.pop(key, None)
    return event


@dataclass
class Fault:
    """A scripted response: replaces the normal answer for one request."""

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"message": "Server Error"}'
    delay_s: float = 0.0  # sleep before answering (to provoke client timeouts)
    page: int | None = None  # only for this page; None = the next request whatever its page


@dataclass
class RepoFeed:
    """One repository's feed: every event it released, newest first."""

    name: str
    repo_id: int
    events: list[dict[str, Any]] = field(default_factory=list)
    poll_interval: int | None = 60
    deleted: bool = False
    renamed_to: str | None = None  # the old name answers 301 once renamed


@dataclass
class RecordedRequest:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    at: float
    status: int


class FakeGitHub:
    def __init__(
        self,
        events: list[dict[str, Any]] | None = None,
        *,
        poll_interval: int | None = 60,
        rate_limit: int = 5000,
        rate_reset_in_s: int = 3600,
        free_authenticated_304: bool = True,
    ) -> None:
        self.feed: list[dict[str, Any]] = list(events or [])  # newest first
        self.poll_interval = poll_interval
        self.rate_limit = rate_limit
        self.remaining = rate_limit
        self.reset_at = int(time.time()) + rate_reset_in_s
        self.free_authenticated_304 = free_authenticated_304
        self.faults: deque[Fault] = deque()
        self.requests: list[RecordedRequest] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.repos: dict[str, RepoFeed] = {}  # by lower-case owner/name, as GitHub matches

    # -- control -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def push(self, events: list[dict[str, Any]]) -> None:
        """New events arrive at the top of the feed (given newest first)."""
        with self.lock:
            self.feed = list(events) + self.feed

    def add_repo(
        self,
        name: str,
        events: list[dict[str, Any]] | None = None,
        *,
        poll_interval: int | None = 60,
    ) -> RepoFeed:
        """Serve `/repos/{name}/events` (events given newest first)."""
        with self.lock:
            feed = RepoFeed(name, 1000 + len(self.repos), list(events or []), poll_interval)
            self.repos[name.lower()] = feed
            return feed

    def push_repo(self, name: str, events: list[dict[str, Any]]) -> None:
        """New events arrive at the top of a repository's feed (given newest first)."""
        with self.lock:
            feed = self.repos[name.lower()]
            feed.events = list(events) + feed.events

    def delete_repo(self, name: str) -> None:
        """The repository is gone (or private): its feed answers 404."""
        with self.lock:
            self.repos[name.lower()].deleted = True

    def rename_repo(self, old: str, new: str) -> None:
        """GitHub keeps a redirect: the old name answers 301 to /repositories/{id}/events."""
        with self.lock:
            feed = self.repos.pop(old.lower())
            feed.renamed_to = new
            self.repos[old.lower()] = feed
            self.repos[new.lower()] = feed
            for event in feed.events:
                event.setdefault("repo", {})["name"] = new

    def schedule(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def start(self, port: int = 0) -> "FakeGitHub":
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        # A short poll interval lets stop() return quickly (the default waits up to 0.5 s).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeGitHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour -----------------------------------------------------------------------
    def _rate_headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Used": str(self.rate_limit - self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
            "X-RateLimit-Resource": "core",
        }

    def respond(self, path: str, query: dict[str, list[str]], headers: dict[str, str]):
        with self.lock:
            page = int(query.get("page", ["1"])[0])
            per_page = min(int(query.get("per_page", ["30"])[0]), 100)
            fault = None
            for candidate in list(self.faults):
                if candidate.page is None or candidate.page == page:
                    fault = candidate
                    self.faults.remove(candidate)
                    break
            authenticated = "authorization" in headers
            if fault is not None:
                self.remaining = max(self.remaining - 1, 0)
                return (
                    fault.status,
                    {**self._rate_headers(), **fault.headers},
                    fault.body,
                    fault.delay_s,
                )
            feed_events = self.feed
            poll_interval = self.poll_interval
            if path != "/events":
                repo = self._repo_for(path)
                if repo is None or repo.deleted:
                    self.remaining = max(self.remaining - 1, 0)
                    return 404, self._rate_headers(), b'{"message": "Not Found"}', 0.0
                if (
                    repo.renamed_to is not None
                    and path.lower() != (f"/repos/{repo.renamed_to.lower()}/events")
                    and not path.startswith("/repositories/")
                ):
                    self.remaining = max(self.remaining - 1, 0)
                    moved = f"{self.url}/repositories/{repo.repo_id}/events"
                    body = json.dumps({"message": "Moved Permanently", "url": moved}).encode()
                    return 301, {**self._rate_headers(), "Location": moved}, body, 0.0
                feed_events = repo.events
                poll_interval = repo.poll_interval
            if self.remaining <= 0:
                return (
                    403,
                    self._rate_headers(),
                    b'{"message": "API rate limit exceeded"}',
                    0.0,
                )
            last_page = max(1, -(-min(len(feed_events), FEED_CAP) // per_page))
            if page > FEED_CAP // per_page:
                self.remaining -= 1
                body = b'{"message": "In order to keep the API fast for everyone, pagination is limited for this resource."}'
                return 422, self._rate_headers(), body, 0.0
            items = feed_events[:FEED_CAP][(page - 1) * per_page : page * per_page]
            body = json.dumps(items).encode("utf-8")
            etag = 'W/"' + hashlib.sha1(body).hexdigest() + '"'
            common = {"ETag": etag, "Cache-Control": "private, max-age=60, s-maxage=60"}
            if poll_interval is not None:
                common["X-Poll-Interval"] = str(poll_interval)
            if headers.get("if-none-match") == etag:
                if not (authenticated and self.free_authenticated_304):
                    self.remaining -= 1
                return 304, {**common, **self._rate_headers()}, b"", 0.0
            self.remaining -= 1
            links = []
            base = f"{self.url}{path}?per_page={per_page}"
            if page < last_page:
                links.append(f'<{base}&page={page + 1}>; rel="next"')
            links.append(f'<{base}&page={last_page}>; rel="last"')
            out = {**common, **self._rate_headers(), "Link": ", ".join(links)}
            out["Content-Type"] = "application/json; charset=utf-8"
            return 200, out, body, 0.0

    def _repo_for(self, path: str) -> RepoFeed | None:
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[0] == "repos" and parts[3] == "events":
            return self.repos.get(f"{parts[1]}/{parts[2]}".lower())
        if len(parts) == 3 and parts[0] == "repositories" and parts[2] == "events":
            return next((r for r in self.repos.values() if str(r.repo_id) == parts[1]), None)
        return None


def _make_handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, out, body, delay = fake.respond(parts.path, query, headers)
            with fake.lock:
                fake.requests.append(
                    RecordedRequest(parts.path, query, headers, time.time(), status)
                )
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                for key, value in out.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def redate(
    events: list[dict[str, Any]], *, newest: datetime, step_s: float
) -> list[dict[str, Any]]:
    """Copies of events re-dated newest-first, step_s apart, ending at `newest`."""
    out = []
    for i, event in enumerate(events):
        event = copy.deepcopy(event)
        at = newest - timedelta(seconds=i * step_s)
        event["created_at"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(event)
    return out


@functools.cache
def _recorded_pool() -> tuple[dict[str, Any], ...]:
    return tuple(recorded_2019_feed() + load_recorded("repo-events-duckdb-2023-page01.json"))


def numbered_feed(
    count: int,
    *,
    serial: int,
    newest: datetime | None = None,
    step_s: float = 1.0,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """`count` real recorded events (cycled when more are needed, starting at the pool's
    `offset`-th), newest first, re-dated `step_s` apart ending at `newest`, with ids unique per
    `serial` (e.g. one serial per batch) so a test can build feeds longer than the 300-event cap."""
    pool = _recorded_pool()
    out = []
    for i in range(count):
        event = copy.deepcopy(pool[(offset + i) % len(pool)])
        event["id"] = f"{serial:04d}{i:06d}"
        out.append(event)
    return redate(out, newest=newest or datetime.now(UTC), step_s=step_s)


def repo_feed(
    repo: str,
    count: int,
    *,
    serial: int,
    newest: datetime | None = None,
    step_s: float = 1.0,
    repo_id: int = 1,
) -> list[dict[str, Any]]:
    """`count` real recorded events re-attributed to `repo` (numbered_feed otherwise): what the
    repository's own feed would release, newest first."""
    events = numbered_feed(count, serial=serial, newest=newest, step_s=step_s)
    for event in events:
        event["repo"] = {
            "id": repo_id,
            "name": repo,
            "url": f"https://api.github.com/repos/{repo}",
        }
    return events


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--poll-interval", type=int, default=10)
    parser.add_argument("--batch", type=int, default=12, help="events added per poll interval")
    parser.add_argument(
        "--repos",
        default="",
        help="owner/name,... served at /repos/{owner}/{repo}/events: each gets --batch events\n"
        "per poll interval, of which the global feed shows only every fourth (a sample)",
    )
    args = parser.parse_args()
    repos = [r for r in args.repos.replace(",", " ").split() if r]
    # Real events, trimmed to today's payload shape and re-dated so the look-back windows fill.
    pool = [
        trim_event(e)
        for e in recorded_2019_feed() + load_recorded("repo-events-duckdb-2023-page01.json")
    ]
    fake = FakeGitHub(poll_interval=args.poll_interval, rate_limit=5000)
    fake.push(redate(pool[: 3 * args.batch], newest=datetime.now(UTC), step_s=20))
    for repo in repos:
        fake.add_repo(repo, poll_interval=args.poll_interval)
    fake.start(args.port)
    print(
        f"fake GitHub Events API on {fake.url} (X-Poll-Interval {args.poll_interval}s)"
        + (f"; repository feeds: {', '.join(repos)}" if repos else ""),
        flush=True,
    )
    serial = 0
    cursor = 3 * args.batch
    try:
        while True:
            time.sleep(args.poll_interval)
            batch = pool[cursor % len(pool) : cursor % len(pool) + args.batch]
            cursor += args.batch
            serial += 1
            fresh = redate(batch, newest=datetime.now(UTC), step_s=1)
            for event in fresh:
                event["id"] = f"{event['id']}{serial:04d}"  # ids stay unique across cycles
            fake.push(fresh)
            for number, repo in enumerate(repos):
                own = repo_feed(repo, args.batch, serial=serial * 100 + number, step_s=1)
                own = [trim_event(e) for e in own]
                fake.push_repo(repo, own)
                fake.push(own[::4])
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
