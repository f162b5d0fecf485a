"""System components some tests need (Debian's chromium, a PostgreSQL server): found, installed
with apt when the suite runs as root on a machine with apt-get, or else reported as ONE line that
names the exact command to run. Never a silent skip."""

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


class MissingSystemPackage(RuntimeError):
    """A component is missing and the suite cannot install it; the message is one line."""


@dataclass(frozen=True)
class SystemPackage:
    """A Debian package and how to tell it is installed."""

    package: str
    find: Callable[[], Path | None]
    what: str


def _is_root() -> bool:
    return os.geteuid() == 0


def install_command(package: str, *, root: bool) -> str:
    """The one command a person runs to install `package`."""
    sudo = "" if root else "sudo "
    return f"{sudo}apt-get update && {sudo}apt-get install -y {package}"


def ensure(
    spec: SystemPackage,
    *,
    root: bool | None = None,
    apt_get: str | None = None,
    run: Callable[[Sequence[str]], None] | None = None,
) -> Path:
    """The path `spec.find` gives, installing `spec.package` with apt-get first when it is missing
    and this process may do so (root, apt-get present). Raises MissingSystemPackage otherwise."""
    found = spec.find()
    if found is not None:
        return found
    root = _is_root() if root is None else root
    apt_get = shutil.which("apt-get") if apt_get is None else apt_get
    command = install_command(spec.package, root=root)
    if not root or not apt_get:
        raise MissingSystemPackage(f"{spec.what} is not installed; run: {command}")
    run = _run_apt if run is None else run
    try:
        # Another session's apt may hold the lock for a while: wait for it rather than fail.
        run([apt_get, "-qq", "-o", "DPkg::Lock::Timeout=600", "update"])
        run(
            [
                apt_get,
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "-o",
                "DPkg::Lock::Timeout=600",
                spec.package,
            ]
        )
    except subprocess.CalledProcessError as err:
        tail = (err.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise MissingSystemPackage(
            f"{spec.what}: installing it failed ({tail[0]}); run: {command}"
        ) from err
    found = spec.find()
    if found is None:
        raise MissingSystemPackage(f"{spec.what}: still missing after apt-get; run: {command}")
    return found


def _run_apt(args: Sequence[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(args, check=True, env=env, capture_output=True, timeout=1200)


def _find_chromium() -> Path | None:
    path = Path("/usr/bin/chromium")
    return path if path.exists() else None


def _find_postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL server's bin directory (/usr/lib/postgresql/<major>/bin)."""
    candidates = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/postgres")
        if (path.parent / "initdb").exists()
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


# Playwright cannot download its own browser here; it drives Debian's chromium.
CHROMIUM = SystemPackage(package="chromium", find=_find_chromium, what="Debian's chromium")
POSTGRESQL = SystemPackage(
    package="postgresql",
    find=_find_postgres_bin,
    what="the PostgreSQL server (/usr/lib/postgresql/<version>/bin)",
)


def require(spec: SystemPackage, **how: Any) -> Path:
    """`ensure` for fixtures: a missing component errors the test with one line naming the
    command to run (never a skip)."""
    try:
        return ensure(spec, **how)
    except MissingSystemPackage as err:
        message = str(err)
    pytest.fail(message, pytrace=False)  # outside `except`: no chained second copy
