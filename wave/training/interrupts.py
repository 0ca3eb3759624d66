"""Stopping on SIGINT and SIGTERM at a consistent point.

`install_handlers()` (the `wave` command calls it) routes both signals here. Inside a training
loop (`armed()`), a signal is only noted: the loop finishes its step, writes a checkpoint of
that exact position and raises `Interrupted`, so that `--resume` continues bit-identically.
Outside a loop, or on a second signal a second or more later, `Interrupted` is raised at once:
every file is written atomically, so whatever was being written is simply not there. `Interrupted` derives from
BaseException, like KeyboardInterrupt, so that no `except Exception` mistakes it for an error.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(BaseException):
    """A run stopped by a signal. `kept` says what was kept on disk (None: nothing)."""

    def __init__(self, signum: int, kept: str | None = None):
        global _stopping
        super().__init__(signal.Signals(signum).name)
        self.signum, self.kept = signum, kept
        _stopping = True  # the process is on its way out: later signals must not replace this one

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_armed = 0  # how many training loops are running (nested: a bench cell inside a bench)
_pending: int | None = None  # a signal noted inside a loop, not acted on yet
_pending_since = 0.0  # when it was noted (time.monotonic)
_stopping = False  # an Interrupted is on its way up: later signals change nothing
_REPEAT_SECONDS = 1.0  # a second signal sooner than this is a repeat; later, it means "stop now"


def install_handlers() -> None:
    """Route SIGINT and SIGTERM to this module (from the main thread)."""
    global _stopping
    _stopping = False
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handle)


def _handle(signum: int, frame) -> None:
    global _pending, _pending_since
    if _stopping:
        return  # already stopping: the first signal decides what is kept and said
    if _armed and _pending is None:
        _pending, _pending_since = signum, time.monotonic()  # the loop stops after this step, where it can checkpoint
        return
    if _armed and time.monotonic() - _pending_since < _REPEAT_SECONDS:
        return  # the same request again (torchrun sends SIGTERM twice), not an impatient second one
    raise Interrupted(signum)


@contextmanager
def armed() -> Iterator[None]:
    """Inside: a first signal is noted (`pending()`), not raised."""
    global _armed, _pending
    _armed += 1
    try:
        yield
    except BaseException:
        _armed -= 1
        raise  # an error (or an Interrupted) on its way up is what the user must see
    _armed -= 1
    if not _armed and _pending is not None:
        signum, _pending = _pending, None
        raise Interrupted(signum)  # noted after the loop's last check: stop now


def ignore_in_worker(_worker_id: int = 0) -> None:
    """For DataLoader worker processes: leave SIGINT and SIGTERM to the main process (Ctrl-C
    reaches the whole process group; a worker must not answer it with a traceback)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def pending() -> int | None:
    """The signal noted inside a loop, if any."""
    return _pending


def clear() -> None:
    """Forget a noted signal (the loop has acted on it)."""
    global _pending
    _pending = None
