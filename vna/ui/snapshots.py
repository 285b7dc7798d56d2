"""Figures that cost a scan of the catalogue (bytes per tier, compression savings, catalogue
totals: sums over every instance), computed at most once a minute per server process and
shown with the time they were taken.

On a catalogue of 600,000 instances those sums take close to a second (bench/console_ops.py);
a page that waits for them on every load cannot answer in 150 ms, and the figures move slowly.
An action of the console that changes them (a retry, a drill, a fixity check) forgets them, and
the pages offer a refresh.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from vna.archive import Archive

#: Seconds a snapshot is shown before it is computed again.
MAX_AGE = 60.0


@dataclass(frozen=True)
class Snapshot:
    data: Any
    #: When it was computed (UTC), shown on the page.
    taken_at: dt.datetime
    monotonic: float


@dataclass
class _Kept:
    """The snapshots of one archive (an Archive is not hashable: kept by id, checked by a
    weak reference so that a new archive reusing the id starts afresh)."""

    archive: weakref.ref[Archive]
    snapshots: dict[str, Snapshot]
    locks: dict[str, asyncio.Lock]


_kept: dict[int, _Kept] = {}


def _of(archive: Archive) -> _Kept:
    found = _kept.get(id(archive))
    if found is None or found.archive() is not archive:
        for key in [k for k, v in _kept.items() if v.archive() is None]:
            del _kept[key]
        found = _kept[id(archive)] = _Kept(weakref.ref(archive), {}, {})
    return found


async def snapshot(
    archive: Archive,
    name: str,
    compute: Callable[[], Awaitable[Any]],
    *,
    refresh: bool = False,
    max_age: float = MAX_AGE,
) -> Snapshot:
    """The figures ``name`` of ``archive``: the kept ones if younger than ``max_age`` (and no
    ``refresh``), else computed now (once, however many requests ask at the same moment)."""
    mine = _of(archive)
    kept = mine.snapshots
    lock = mine.locks.setdefault(name, asyncio.Lock())
    started = time.monotonic()
    async with lock:
        found = kept.get(name)
        fresh = found is not None and time.monotonic() - found.monotonic < max_age
        # A refresh asked while another request computed them counts as done.
        if fresh and (not refresh or found.monotonic >= started):  # type: ignore[union-attr]
            return found  # type: ignore[return-value]
        data = await compute()
        made = Snapshot(data, dt.datetime.now(dt.UTC), time.monotonic())
        kept[name] = made
        return made


def forget(archive: Archive) -> None:
    """Drop every snapshot of ``archive`` (after an action that changes the figures)."""
    _of(archive).snapshots.clear()
