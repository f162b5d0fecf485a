"""Poll state kept as a small JSON file beside the warehouse (no Dagster import).

The sensor reads it without touching DuckDB (a reader would block the writer). The run writes it
only after the rows it describes are committed, so a crash can cost a re-fetch, never an event.
"""

import json
import os
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

STATE_FILE = "poll_state.json"


@dataclass(frozen=True)
class PollState:
    etag: str | None = None
    last_poll_id: str | None = None
    last_poll_started_at: datetime | None = None
    last_status: int | None = None
    poll_interval_s: int | None = None
    next_poll_at: datetime | None = None
    rate_limit_limit: int | None = None
    rate_limit_remaining: int | None = None
    rate_limit_reset_at: datetime | None = None
    reason: str | None = None
    # HTTP requests the last poll made (pages, retries, 304s): the cost the budget plan assumes.
    last_poll_requests: int | None = None
    # Consecutive secondary-limit refusals; kept across restarts so the backoff keeps growing.
    secondary_limit_hits: int = 0
    # Consecutive polls that failed (5xx, timeouts, bad bodies) after their in-poll retries.
    consecutive_failures: int = 0
    last_error: str | None = None
    # Repository feeds only: where a renamed repository's feed now lives (followed 301), its new
    # name, and why a deleted or private repository is not polled.
    feed_url: str | None = None
    renamed_to: str | None = None
    unavailable: str | None = None
    # Repository feeds only: a copy of its coverage after the last poll (the sensor reads this
    # file, never the warehouse).
    complete_since: datetime | None = None
    gaps: int = 0

    def with_(self, **changes: Any) -> "PollState":
        return replace(self, **changes)


_DATES = {"last_poll_started_at", "next_poll_at", "rate_limit_reset_at", "complete_since"}


def state_path(state_dir: Path, name: str = STATE_FILE) -> Path:
    return state_dir / name


def load_state(state_dir: Path, name: str = STATE_FILE) -> PollState:
    """The state of one feed: the global feed's by default, a watched repository's by `name`."""
    path = state_path(state_dir, name)
    if not path.exists():
        return PollState()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"poll state file {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"poll state file {path} holds a JSON {type(raw).__name__}, not an object")
    known = {k: v for k, v in raw.items() if k in PollState.__dataclass_fields__}
    for key in _DATES & known.keys():
        if known[key] is not None:
            known[key] = datetime.fromisoformat(known[key])
    return PollState(**known)


def save_state(state_dir: Path, state: PollState, name: str = STATE_FILE) -> None:
    """Replace the state file atomically: a reader sees the old or the new state, never half."""
    path = state_path(state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(state).items()}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
