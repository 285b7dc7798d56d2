"""What every job handler is given: the archive, its rules, the date to evaluate them at."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vna.config import Settings

if TYPE_CHECKING:
    from lifecycle.queue import Job
    from vna.archive import Archive


@dataclass(frozen=True)
class Engine:
    archive: Archive
    #: Evaluate tiering and look ahead as of this date instead of today (``--as-of``).
    #: Deletions ignore it: nothing is ever deleted before its real date.
    as_of: dt.date | None = None

    @property
    def settings(self) -> Settings:
        return self.archive.settings

    def today(self) -> dt.date:
        """The date rules are evaluated at."""
        return self.as_of or dt.date.today()


class Reschedule(Exception):
    """Raised by a handler whose job cannot finish yet and is not failing (a restore under
    way): run it again after ``seconds``, without counting an attempt."""

    def __init__(self, seconds: float, note: str) -> None:
        super().__init__(note)
        self.seconds = seconds
        self.note = note


Handler = Callable[[Engine, "Job"], Awaitable[None]]
