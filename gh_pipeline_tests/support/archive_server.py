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
