"""Reports of disaster-recovery runs as JSON (``--format json``, the drill's stored record):
timestamps to the second, in ISO 8601."""

from __future__ import annotations

import datetime as dt
from typing import Any


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value
