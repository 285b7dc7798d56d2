"""Administration over HTTP (``/admin``): quarantined conflicts, patient links (and the pending
ones the archive proposes), corrections, merges, study corrections and moves, and their
undoing; IOCM rejection notes, the instances they withdraw, and undoing a rejection.
JSON in, JSON out; the work is in ``vna.admin``.

Every request needs an admin token (``vna tokens create --role admin``, or the one whose
SHA-256 is ``[admin] admin_token_sha256``), checked by :mod:`vna.gateway.auth`.  An archive
without any credential serves them to loopback clients only (a PACS administrator on the
archive's host).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from vna.admin import conflicts, patients, rejections, studies
from vna.admin.patients import Identity
from vna.errors import InvalidRequest
from vna.gateway.auth import principal_of
from vna.gateway.request_context import ARCHIVE

PREFIX = "/admin"

_Handler = Callable[[web.Request, str], Awaitable[Any]]


def register(app: web.Application) -> None:
    r = app.router
    p = PREFIX
    r.add_get(f"{p}/conflicts", _admin(list_conflicts))
    r.add_get(f"{p}/conflicts/{{id}}", _admin(show_conflict))
    r.add_post(f"{p}/conflicts/{{id}}/resolve", _admin(resolve_conflict))
    r.add_get(f"{p}/patients", _admin(list_patients))
    r.add_get(f"{p}/patients/links", _admin(patient_links))
    r.add_post(f"{p}/patients/links", _admin(link_patients))
    r.add_delete(f"{p}/patients/links/{{id}}", _admin(unlink_patients))
    r.add_get(f"{p}/patients/links/pending", _admin(list_pending_links))
    r.add_post(f"{p}/patients/links/pending/{{id}}/accept", _admin(accept_pending_link))
    r.add_post(f"{p}/patients/links/pending/{{id}}/reject", _admin(reject_pending_link))
    r.add_post(f"{p}/patients/update", _admin(update_patient))
    r.add_post(f"{p}/patients/merge", _admin(merge_patients))
    r.add_get(f"{p}/patients/changes", _admin(list_changes))
    r.add_post(f"{p}/patients/changes/{{id}}/undo", _admin(undo_change))
    r.add_get(f"{p}/studies/{{study}}", _admin(show_study))
    r.add_post(f"{p}/studies/{{study}}/update", _admin(update_study))
    r.add_post(f"{p}/studies/{{study}}/move", _admin(move_study))
    r.add_get(f"{p}/rejections", _admin(list_rejections))
    r.add_get(f"{p}/rejections/instances", _admin(list_rejected_instances))
    r.add_post(f"{p}/rejections/{{note}}/undo", _admin(undo_rejection))


def _admin(handler: _Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def wrapped(request: web.Request) -> web.Response:
        actor = authorise(request)
        result = await handler(request, actor)
        return web.Response(
            text=json.dumps(result, default=_json_default, ensure_ascii=False),
            content_type="application/json",
        )

    return wrapped


def authorise(request: web.Request) -> str:
    """The actor the audit trail records (the middleware has checked the admin role)."""
    return principal_of(request).name


# --- conflicts ----------------------------------------------------------------------------------


async def list_conflicts(request: web.Request, actor: str) -> Any:
    state = request.query.get("state", "open")
    return await conflicts.list_conflicts(
        request.app[ARCHIVE].db, None if state == "all" else state, _limit(request)
    )


async def show_conflict(request: web.Request, actor: str) -> Any:
    return await conflicts.show_conflict(request.app[ARCHIVE].db, _id(request))


async def resolve_conflict(request: web.Request, actor: str) -> Any:
    body = await _body(request)
    action = body.get("action")
    if not isinstance(action, str):
        raise InvalidRequest('the body must be {"action": "accept"} or {"action": "discard"}')
    return await conflicts.resolve_conflict(
        request.app[ARCHIVE].db, _id(request), action, actor=actor, origin=request.remote or ""
    )


# --- patients -----------------------------------------------------------------------------------


async def list_patients(request: web.Request, actor: str) -> Any:
    identity = None
    if "PatientID" in request.query:
        identity = Identity(request.query["PatientID"], request.query.get("IssuerOfPatientID", ""))
    return await patients.find_patients(request.app[ARCHIVE].db, identity, _limit(request))


async def patient_links(request: web.Request, actor: str) -> Any:
    if "PatientID" not in request.query:
        raise InvalidRequest("PatientID (and IssuerOfPatientID) are required")
    identity = Identity(request.query["PatientID"], request.query.get("IssuerOfPatientID", ""))
    return await patients.links_of(request.app[ARCHIVE].db, identity)


async def link_patients(request: web.Request, actor: str) -> Any:
    body = await _body(request)
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise InvalidRequest("reason must be a string")
    link_id = await patients.link(
        request.app[ARCHIVE].db,
        Identity.from_json(body.get("a"), "a"),
        Identity.from_json(body.get("b"), "b"),
        reason=reason,
        actor=actor,
        origin=request.remote or "",
    )
    return {"link": link_id}


async def list_pending_links(request: web.Request, actor: str) -> Any:
    state = request.query.get("state", "pending")
    return await patients.pending_links(
        request.app[ARCHIVE].db, None if state == "all" else state, _limit(request)
    )


async def accept_pending_link(request: web.Request, actor: str) -> Any:
    body = await _body(request) if request.can_read_body else {}
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise InvalidRequest("reason must be a string")
    pending_id = _id(request)
    link_id = await patients.accept_pending_link(
        request.app[ARCHIVE].db,
        pending_id,
        actor=actor,
        reason=reason,
        origin=request.remote or "",
    )
    return {"pending_link": pending_id, "state": "accepted", "link": link_id}


async def reject_pending_link(request: web.Request, actor: str) -> Any:
    pending_id = _id(request)
    await patients.reject_pending_link(
        request.app[ARCHIVE].db, pending_id, actor=actor, origin=request.remote or ""
    )
    return {"pending_link": pending_id, "state": "rejected"}


async def unlink_patients(request: web.Request, actor: str) -> Any:
    link_id = _id(request)
    await patients.unlink(
        request.app[ARCHIVE].db, link_id, actor=actor, origin=request.remote or ""
    )
    return {"link": link_id, "removed": True}


async def update_patient(request: web.Request, actor: str) -> Any:
    body = await _body(request)
    values = _set_values(body)
    patient = Identity.from_json(body.get("patient"), "patient")
    return await _change(request, actor, patients.update_patient, patient, values)


async def merge_patients(request: web.Request, actor: str) -> Any:
    body = await _body(request)
    source = Identity.from_json(body.get("from"), "from")
    target = Identity.from_json(body.get("into"), "into")
    return await _change(request, actor, patients.merge_patients, source, target)


async def list_changes(request: web.Request, actor: str) -> Any:
    return await patients.list_changes(request.app[ARCHIVE].db, _limit(request))


async def undo_change(request: web.Request, actor: str) -> Any:
    change = _id(request)
    await patients.undo_change(
        request.app[ARCHIVE], change, actor=actor, origin=request.remote or ""
    )
    return {"change": change, "undone": True}


# --- studies ------------------------------------------------------------------------------------
# Undone like patient changes: POST /admin/patients/changes/{id}/undo.


async def show_study(request: web.Request, actor: str) -> Any:
    return await studies.show_study(request.app[ARCHIVE].db, request.match_info["study"])


async def update_study(request: web.Request, actor: str) -> Any:
    values = _set_values(await _body(request))
    return await _change(request, actor, studies.update_study, request.match_info["study"], values)


async def move_study(request: web.Request, actor: str) -> Any:
    target = Identity.from_json((await _body(request)).get("to"), "to")
    return await _change(request, actor, studies.move_study, request.match_info["study"], target)


# --- helpers ------------------------------------------------------------------------------------


# --- IOCM rejections (vna.admin.rejections) -----------------------------------------------------


async def list_rejections(request: web.Request, actor: str) -> Any:
    return await rejections.list_notes(
        request.app[ARCHIVE].db, include_undone=request.query.get("all") == "true"
    )


async def list_rejected_instances(request: web.Request, actor: str) -> Any:
    return await rejections.list_rejected(request.app[ARCHIVE].db, request.query.get("study"))


async def undo_rejection(request: web.Request, actor: str) -> Any:
    body = await _body(request) if request.can_read_body else {}
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise InvalidRequest("reason must be a string")
    return await rejections.undo(
        request.app[ARCHIVE].db,
        request.match_info["note"],
        actor=actor,
        origin=request.remote or "",
        reason=reason,
    )


def _id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isdigit():
        raise InvalidRequest(f"not an id: {text[:40]!r}")
    return int(text)


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", "1000")
    if not text.isdigit() or not 0 < int(text) <= 100_000:
        raise InvalidRequest("limit must be a number from 1 to 100000")
    return int(text)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


async def _change(
    request: web.Request, actor: str, apply: Callable[..., Awaitable[int]], *args: Any
) -> Any:
    """Run a correction, merge or move of ``vna.admin`` on the archive as ``actor``; the answer
    is its change id (for ``POST /admin/patients/changes/{id}/undo``)."""
    change = await apply(request.app[ARCHIVE], *args, actor=actor, origin=request.remote or "")
    return {"change": change}


def _set_values(body: dict[str, Any]) -> dict[str, str]:
    """The corrections of an update request: ``"set"``, attribute keyword to new value."""
    values = body.get("set")
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise InvalidRequest('"set" must be an object of attribute keyword to string value')
    return values


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
