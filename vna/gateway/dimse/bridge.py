"""The way from pynetdicom's threads to the archive's asyncio loop.

pynetdicom runs each association in its own thread and calls the event handlers there
(PS3.8 associations are independent, so one slow sender only ever holds its own thread).  The
archive (catalogue pool, object store, ingest pipeline) lives on one asyncio loop; handlers
submit coroutines to it with :func:`asyncio.run_coroutine_threadsafe` and wait for the result
in their own thread, never blocking the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from vna.errors import UnavailableError

if TYPE_CHECKING:
    from vna.archive import Archive

T = TypeVar("T")


@dataclass(frozen=True)
class Gateway:
    """What every DIMSE handler needs: the archive and the loop it runs on."""

    archive: Archive
    loop: asyncio.AbstractEventLoop
    #: The thread running ``loop``; a handler called there would deadlock waiting on it.
    loop_thread: int

    @classmethod
    def on_running_loop(cls, archive: Archive) -> Gateway:
        return cls(archive, asyncio.get_running_loop(), threading.get_ident())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the archive's loop and wait for it in this (handler) thread."""
        return self.submit(coro).result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the archive's loop, for this thread to wait for its result later
        and do other work meanwhile."""
        if threading.get_ident() == self.loop_thread:
            coro.close()
            raise RuntimeError("a DIMSE handler ran on the event loop thread")
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError as exc:  # the loop is closed: the server is stopping
            coro.close()
            raise UnavailableError("the archive is shutting down") from exc
