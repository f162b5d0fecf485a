"""A real, throw-away PostgreSQL server for tests: initdb into a private temporary directory,
listening on 127.0.0.1 (password auth, SCRAM) and on a Unix socket in that directory (the admin
connection, trust). PostgreSQL refuses to run as root, so as root the server runs as an
unprivileged account: Debian's `postgres` user, or a dedicated one created on first use."""

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from gh_pipeline_tests.support.dagster_process import free_port

ADMIN = "gh_admin"
# Used only when the machine has PostgreSQL's binaries but no `postgres` account.
FALLBACK_USER = "gh_pipeline_pg"


@dataclass(frozen=True)
class PgDatabase:
    """One database with its own login role; `env()` is how Dagster gets to it."""

    host: str
    port: int
    db_name: str
    username: str
    password: str = field(repr=False)

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables deploy/postgres/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.db_name,
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
        }

    def connect(self) -> PgConnection:
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname=self.db_name,
            user=self.username,
            password=self.password,
            connect_timeout=10,
        )


@dataclass(frozen=True)
class PostgresServer:
    bin_dir: Path
    base: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def socket_dir(self) -> Path:
        return self.base

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def admin(self, db_name: str = "postgres") -> PgConnection:
        conn = psycopg2.connect(
            host=str(self.socket_dir),
            port=self.port,
            dbname=db_name,
            user=ADMIN,
            connect_timeout=10,
        )
        conn.autocommit = True
        return conn

    def create_database(self, prefix: str = "dagster") -> PgDatabase:
        """A fresh database owned by a fresh role with a random password."""
        suffix = secrets.token_hex(4)
        database = PgDatabase(
            host=self.host,
            port=self.port,
            db_name=f"{prefix}_{suffix}",
            username=f"{prefix}_user_{suffix}",
            password=f"pw-{secrets.token_urlsafe(24)}",
        )
        # Not `with conn`: psycopg2 would wrap the block in a transaction, and CREATE DATABASE
        # refuses to run inside one.
        conn = self.admin()
        try:
            cur = conn.cursor()
            cur.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(
                    sql.Identifier(database.username)
                ),
                (database.password,),
            )
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database.db_name), sql.Identifier(database.username)
                )
            )
        finally:
            conn.close()
        return database

    def pg_dump(self, db_name: str) -> str:
        """The whole database as SQL text (schema and every row)."""
        result = subprocess.run(
            [
                str(self.bin_dir / "pg_dump"),
                "--host",
                str(self.socket_dir),
                "--port",
                str(self.port),
                "--username",
                ADMIN,
                db_name,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return result.stdout.decode("utf-8", "replace")


def _server_account() -> pwd.struct_passwd | None:
    """Who runs initdb/postgres: nobody else when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            FALLBACK_USER,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return pwd.getpwnam(FALLBACK_USER)


def _as(account: pwd.struct_passwd | None) -> dict[str, object]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _ready(server: PostgresServer) -> bool:
    try:
        server.admin().close()
    except psycopg2.OperationalError:
        return False
    return True


@contextmanager
def postgres_server(bin_dir: Path) -> Iterator[PostgresServer]:
    """Start a private server; stop it and delete everything it wrote on exit."""
    account = _server_account()
    # Not pytest's tmp_path: that is private to the test user, and the server's account must
    # reach its own directory. mkdtemp gives 0700; the account then owns it.
    base = Path(tempfile.mkdtemp(prefix="gh-pg-"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
    try:
        if account is not None:
            os.chown(base, account.pw_uid, account.pw_gid)
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(base / "data"),
                "--username",
                ADMIN,
                "--auth-local",
                "trust",
                "--auth-host",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-instructions",
            ],
            cwd=base,
            env=env,
            check=True,
            capture_output=True,
            timeout=180,
            **_as(account),  # type: ignore[arg-type]
        )
        proc, server = _start(bin_dir, base, account, env)
        try:
            yield server
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _start(
    bin_dir: Path, base: Path, account: pwd.struct_passwd | None, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], PostgresServer]:
    last_log = ""
    for _ in range(5):  # a free port can be taken between free_port() and the bind: try another
        server = PostgresServer(bin_dir=bin_dir, base=base, port=free_port())
        with server.log.open("ab") as log:
            proc = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(base / "data"),
                    "-h",
                    server.host,
                    "-p",
                    str(server.port),
                    "-k",
                    str(server.socket_dir),
                    "-c",
                    "max_connections=200",
                ],
                cwd=base,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **_as(account),  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if _ready(server):
                return proc, server
            time.sleep(0.2)
        _stop(proc)
        last_log = server.log.read_text(encoding="utf-8", errors="replace")[-2000:]
    raise RuntimeError(f"PostgreSQL did not start in {base}:\n{last_log}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT is PostgreSQL's "fast shutdown": roll back open transactions, close connections.
    for sig, grace in ((signal.SIGINT, 30.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
