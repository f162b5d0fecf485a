"""kill -9 at chosen moments inside a child process, for the crash-safety tests' child scripts."""

import os
import signal
from collections.abc import Callable
from typing import Any

from gh_pipeline.live import landing, poll_state
from gh_pipeline.warehouse import raw


def die(*args: Any, **kwargs: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, then SIGKILL before its caller sees the result."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        die()
        return result

    return wrapped


def kill_poll_at(kill_at: str, *, save_state: Callable[..., Any] = die) -> None:
    """Make this process die at one moment of a poll: after its landing file is written, inside
    its load transaction, or (with `save_state`, default: at once) when it saves poll state.
    Anything else ("mid_request": the test kills it) installs nothing."""
    if kill_at == "after_landing":
        landing.write_landing_file = after(landing.write_landing_file)
    elif kill_at == "inside_transaction":
        raw.load_staged = after(raw.load_staged)
    elif kill_at == "before_state_save":
        poll_state.save_state = save_state
