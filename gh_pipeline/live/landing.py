"""Immutable gzip NDJSON landing files: every event exactly as a poll received it (no Dagster import)."""

import gzip
import json
import os
import re
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Any

# The layout: <landing root>/<source>/<YYYY-MM-DD>/<poll id>.ndjson.gz. The helpers below are the
# only code that builds or reads it (recovery replays it, retention prunes it).
LANDING_SUFFIX = ".ndjson.gz"
# Characters of a poll id that become '_' in its file name (retention matches rows to their files
# with the same pattern in SQL).
UNSAFE_NAME_CHARS = r"[^A-Za-z0-9_.-]"
_SAFE = re.compile(UNSAFE_NAME_CHARS)


def file_stem(poll_id: str) -> str:
    """The name (without suffix) a poll's landing file gets."""
    return _SAFE.sub("_", poll_id)


def landing_path(root: Path, *, source: str, poll_id: str, at: datetime) -> Path:
    return root / source / at.strftime("%Y-%m-%d") / f"{file_stem(poll_id)}{LANDING_SUFFIX}"


def poll_id_of(path: Path) -> str:
    """The poll id a landing file is named after (as landing_path wrote it)."""
    return path.name[: -len(LANDING_SUFFIX)]


def day_of(path: Path) -> date | None:
    """The day folder a landing file sits in; None when it is not a YYYY-MM-DD folder."""
    try:
        return date.fromisoformat(path.parent.name)
    except ValueError:
        return None


def write_landing_file(path: Path, events: Iterable[Any]) -> Path:
    """Write once via a temporary file and rename, so a crash never leaves a half file in place."""
    if path.exists():
        raise FileExistsError(f"landing file {path} already exists; landing files are immutable")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", newline="\n") as handle:
        for event in events:
            handle.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
            handle.write("\n")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
    return path


def list_landing_files(root: Path, *, source: str = "api") -> list[Path]:
    return sorted((root / source).glob(f"*/*{LANDING_SUFFIX}"))
