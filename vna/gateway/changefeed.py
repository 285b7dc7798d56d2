"""The change feed: ``GET /dicom-web/changefeed`` and ``GET /dicom-web/changefeed/latest``,
shaped as Microsoft's DICOM service change feed (API v2) so that its clients work unchanged.

``/changefeed`` answers a JSON array of entries (Sequence, StudyInstanceUid,
SeriesInstanceUid, SopInstanceUid, Action, Timestamp, State, Metadata) in sequence order:
those with ``startTime <= Timestamp < endTime``, after skipping ``offset`` of them, at most
``limit`` (default 100, at most 200); ``includeMetadata`` (default true) adds each instance's
current DICOM JSON.  A client follows the feed by repeating the query with ``offset`` grown by
what it has read: entries only ever join at the end (the Timestamp is when an entry entered
the feed, in commit order, see migration 0170).  Parameter names are matched without regard
to case, as Microsoft's documentation writes them both ways.

Reading needs the read permission; a reader restricted to some sources (``read_sources``)
sees the entries of those sources' studies only.  Each answer is audited as a query naming the
studies it disclosed.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from aiohttp import web

from vna.catalog import changes
from vna.errors import InvalidRequest, NotFound
from vna.gateway.auth import AUDIT, principal_of
from vna.gateway.request_context import ARCHIVE
from vna.security.audit import QUERY, Access, query_text

DEFAULT_LIMIT = 100
MAX_LIMIT = 200


async def read_feed(request: web.Request) -> web.Response:
    params = {k.lower(): v for k, v in request.query.items()}
    start = _time(params, "starttime")
    end = _time(params, "endtime")
    if start is not None and end is not None and end <= start:
        raise InvalidRequest("endTime must be later than startTime")
    offset = _integer(params, "offset", 0, 0, None)
    limit = _integer(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    include_metadata = _boolean(params, "includemetadata")
    archive = request.app[ARCHIVE]
    principal = principal_of(request)
    async with archive.db.acquire() as conn:
        await changes.sequence(conn)
        entries = await changes.read(
            conn,
            start=start,
            end=end,
            offset=offset,
            limit=limit,
            sources=principal.readable_sources,
            include_metadata=include_metadata,
        )
    await _audit(request, entries)
    return _json([_entry(e, include_metadata) for e in entries])


async def read_latest(request: web.Request) -> web.Response:
    params = {k.lower(): v for k, v in request.query.items()}
    include_metadata = _boolean(params, "includemetadata")
    archive = request.app[ARCHIVE]
    principal = principal_of(request)
    async with archive.db.acquire() as conn:
        await changes.sequence(conn)
        entry = await changes.latest(
            conn, sources=principal.readable_sources, include_metadata=include_metadata
        )
    if entry is None:
        raise NotFound("the change feed has no entries")
    await _audit(request, [entry])
    return _json(_entry(entry, include_metadata))


async def _audit(request: web.Request, entries: list[changes.Change]) -> None:
    # The feed discloses which studies changed, and with metadata their patients' data:
    # audited like a query (PS3.15 A.5.3.10) before anything is answered.
    principal = principal_of(request)
    await request.app[AUDIT].record(
        Access(
            actor=principal.name,
            origin=request.remote or "",
            action=QUERY,
            study_uids=sorted({e.study_uid for e in entries}),
            detail={
                "protocol": "changefeed",
                "path": request.path,
                "query": query_text(request.query_string),
                "entries": len(entries),
            },
        )
    )


def _entry(e: changes.Change, include_metadata: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Sequence": e.sequence,
        "StudyInstanceUid": e.study_uid,
        "SeriesInstanceUid": e.series_uid,
        "SopInstanceUid": e.sop_uid,
        "Action": e.action,
        "Timestamp": e.timestamp.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "State": e.state,
    }
    if include_metadata:
        out["Metadata"] = e.metadata
    return out


def _json(body: Any) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


def _time(params: dict[str, str], name: str) -> dt.datetime | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError as exc:
        raise InvalidRequest(f"{name} must be an ISO 8601 date and time, got {raw!r}") from exc
    # A time without a zone is UTC, as the feed's Timestamps are.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _integer(params: dict[str, str], name: str, default: int, low: int, high: int | None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidRequest(f"{name} must be an integer, got {raw!r}") from exc
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidRequest(f"{name} must be {bound}, got {value}")
    return value


def _boolean(params: dict[str, str], name: str) -> bool:
    raw = params.get(name, "true").lower()
    if raw not in ("true", "false"):
        raise InvalidRequest(f"{name} must be true or false, got {raw!r}")
    return raw == "true"
