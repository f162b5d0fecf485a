"""A tiny GH Archive on 127.0.0.1 for tests, and readers of the recorded hours in fixtures/gharchive
(read here with gzip and json, independently of the loader)."""

import gzip
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gharchive"


# --- a tiny GH Archive ----------------------------------------------------------------------------


@dataclass
class Served:
    body: bytes
    # Announce this many bytes but close the connection after sending `body` (a cut transfer).
    announce: int | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ArchiveServer:
    """Serves {file name: Served} at /<name> on 127.0.0.1 with GET and HEAD; anything else 404."""

    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                name = self.path.lstrip("/")
                server.requests.append((self.command, name))
                served = server.files.get(name)
                if served is None:
                    body = b"<html>404 Not Found</html>"
                    self.send_response(404)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if with_body:
                        self.wfile.write(body)
                    return
                self.send_response(served.status)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(served.announce or len(served.body)))
                for key, value in served.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if with_body:
                    self.wfile.write(served.body)
                    if served.announce:
                        self.wfile.flush()
                        self.close_connection = True

            def do_GET(self) -> None:
                self._answer(with_body=True)

            def do_HEAD(self) -> None:
                self._answer(with_body=False)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def serve_fixture(self, name: str, as_name: str | None = None) -> bytes:
        body = (FIXTURES / name).read_bytes()
        self.files[as_name or name] = Served(body)
        return body

    def __enter__(self) -> "ArchiveServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- independent views of the fixtures ------------------------------------------------------------


def fixture_lines(name: str) -> list[str]:
    with gzip.open(FIXTURES / name, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def fixture_events(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in fixture_lines(name)]


def gz(lines: list[str]) -> bytes:
    return gzip.compress(("\n".join(lines) + "\n").encode("utf-8"))


# The recorded 2021-07-21 hours (200 real events each) stand in for a whole day: hour h serves
# the events of hour 6 + h % 4, moved into hour h with ids no other hour uses.
RECORDED_DAY = "2021-07-21"
RECORDED_HOURS = (6, 7, 8, 9)


def day_hour_events(hour: int) -> list[dict[str, Any]]:
    """The events the day's hour `hour` (0-23) holds: a recorded hour's own events for 6-9."""
    source = RECORDED_HOURS[hour % len(RECORDED_HOURS)] if hour not in RECORDED_HOURS else hour
    events = fixture_events(f"{RECORDED_DAY}-{source}.json.gz")
    if hour == source:
        return events
    moved = []
    for event in events:
        event = dict(event)
        # Recorded ids are ~1.7e10; a per-hour offset above them keeps every id unique.
        event["id"] = str(int(event["id"]) + (hour + 1) * 10**11)
        created = str(event["created_at"])
        event["created_at"] = f"{created[:11]}{hour:02d}{created[13:]}"
        moved.append(event)
    return moved


def serve_day(server: ArchiveServer) -> dict[str, list[dict[str, Any]]]:
    """Serve all 24 hours of RECORDED_DAY under GH Archive's names; returns {file name: events}."""
    served = {}
    for hour in range(24):
        name = f"{RECORDED_DAY}-{hour}.json.gz"
        events = day_hour_events(hour)
        server.files[name] = Served(gz([json.dumps(e) for e in events]))
        served[name] = events
    return served
