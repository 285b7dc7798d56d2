"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related application/dicom.

Each part is streamed to a file in the process's incoming directory and
handed to the ingest pipeline as soon as it is complete, so memory stays bounded whatever the
upload size and parsing overlaps with receiving the next part.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from vna.dicom.uids import is_valid_uid
from vna.errors import InvalidInstance, InvalidRequest, VnaError
from vna.gateway.media import DICOM, DICOM_JSON, MULTIPART_RELATED, parse_media_type
from vna.gateway.multipart import MultipartReader
from vna.gateway.request_context import ARCHIVE, base_url, sender_source
from vna.gateway.status import store_failure_status
from vna.ingest.group import FilingGroup
from vna.ingest.pipeline import IngestResult, Sender

if TYPE_CHECKING:
    from vna.archive import Archive

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Failure:
    error: VnaError


async def store_instances(request: web.Request) -> web.Response:
    archive = request.app[ARCHIVE]
    settings = archive.settings
    study = request.match_info.get("study")
    if study is not None and not is_valid_uid(study):
        raise InvalidRequest(f"StudyInstanceUID in the path is not a valid UID: {study[:80]!r}")
    source, actor = sender_source(request)
    sender = Sender(source=source, protocol="stow-rs", actor=actor, origin=request.remote or "")
    boundary = _check_content_type(request.headers.get("Content-Type", ""))
    if request.content_length and request.content_length > settings.http.max_request_bytes:
        raise web.HTTPRequestEntityTooLarge(
            max_size=settings.http.max_request_bytes, actual_size=request.content_length
        )
    reader = MultipartReader(request.content, boundary)

    tasks: list[asyncio.Task[IngestResult | _Failure]] = []
    received = 0
    # The request's new instances are filed in the catalogue together (vna.ingest.group):
    # the response waits for all of them anyway.
    group = FilingGroup(archive.db)
    try:
        while (headers := await reader.next_part()) is not None:
            if len(tasks) >= settings.http.max_parts:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=settings.http.max_parts,
                    actual_size=len(tasks) + 1,
                    text=f"more than {settings.http.max_parts} parts (http.max_parts)\n",
                )
            part_type = (headers.get("content-type") or DICOM).split(";")[0].strip()
            if part_type.lower() != DICOM:
                received += await reader.discard_body()
                tasks.append(_done(InvalidInstance(f"part of type {part_type!r} is not {DICOM}")))
                continue
            path, size = await _receive_part(
                reader, archive.incoming, settings.http.max_request_bytes - received
            )
            received += size
            tasks.append(asyncio.create_task(_ingest(archive, path, sender, study, group)))
    except BaseException:
        # Parts already received are being ingested; let them finish (each is atomic and a
        # resend will find them) rather than cancelling them halfway.
        group.close()
        if tasks:
            await asyncio.wait(tasks)
        raise
    group.close()

    if not tasks:
        raise InvalidRequest("the multipart body holds no parts")
    outcomes = await asyncio.gather(*tasks)
    return _response(request, outcomes, study)


async def _receive_part(reader: MultipartReader, incoming: Path, budget: int) -> tuple[Path, int]:
    """Stream the current part to a new file; return its path and size received."""
    path = incoming / uuid.uuid4().hex
    size = 0
    head: bytes | None = b""  # first bytes, held until the preamble question is settled

    # A local file write lands in the page cache in microseconds; a thread hop per chunk
    # would cost more than it saves.  Durability (fsync) is the store's job, in a worker
    # thread, once the part is known to be a valid instance.
    f = open(path, "wb")  # noqa: ASYNC230

    def sink(chunk: bytes) -> None:
        nonlocal size, head
        size += len(chunk)
        if size > budget:
            raise web.HTTPRequestEntityTooLarge(
                max_size=budget,
                actual_size=size,
                text="request body exceeds http.max_request_bytes\n",
            )
        if head is None:
            f.write(chunk)
            return
        head += chunk
        if len(head) >= _PREAMBLE_PROBE:
            f.write(with_preamble(head))
            head = None

    try:
        with f:
            await reader.read_body(sink)
            if head:
                f.write(with_preamble(head))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, size


_PREAMBLE_PROBE = 132
#: Retry-After of a request refused only because a backing service failed.
_RETRY_AFTER_SECONDS = 10
_META_GROUP_START = b"\x02\x00"  # (0002,xxxx) little endian: File Meta Information


def with_preamble(head: bytes) -> bytes:
    """Add the 128-byte preamble and ``DICM`` prefix (PS3.10 7.1) to a Part 10 stream that
    starts straight with its File Meta Information.

    Some clients send that (pydicom's ``dcmwrite`` of a data set that was never read from a
    file, which dicomweb-client uses); the data set and its meta header are kept unchanged.
    """
    if head[128:132] != b"DICM" and head[:2] == _META_GROUP_START and head[4:6].isalpha():
        return bytes(128) + b"DICM" + head
    return head


async def _ingest(
    archive: Archive, path: Path, sender: Sender, study: str | None, group: FilingGroup
) -> IngestResult | _Failure:
    try:
        return await archive.ingester.ingest_file(
            path, sender, consume=True, expected_study_uid=study, group=group
        )
    except VnaError as exc:
        return _Failure(exc)


def _done(error: VnaError) -> asyncio.Task[IngestResult | _Failure]:
    async def failed() -> IngestResult | _Failure:
        return _Failure(error)

    return asyncio.ensure_future(failed())


def _check_content_type(header: str) -> str:
    """Refuse what STOW-RS does not take; return the multipart boundary."""
    media = parse_media_type(header) if header else None
    if media is None or media.type != MULTIPART_RELATED:
        raise web.HTTPUnsupportedMediaType(
            text=f'STOW-RS takes {MULTIPART_RELATED}; type="{DICOM}", not {header or "nothing"!r}\n'
        )
    inner = media.params.get("type", DICOM).lower()
    if inner != DICOM:
        # DICOM JSON or XML metadata with separate bulk data parts (PS3.18 10.5.1.2) is not
        # accepted: only complete Part 10 instances are archived, bit-exact.
        raise web.HTTPUnsupportedMediaType(
            text=f"only type={DICOM} parts are accepted, not {inner!r}\n"
        )
    boundary = media.params.get("boundary")
    if not boundary:
        raise InvalidRequest("multipart/related Content-Type has no boundary parameter")
    return boundary


def _response(
    request: web.Request, outcomes: list[IngestResult | _Failure], study: str | None
) -> web.Response:
    """The Store Instances Response (PS3.18 10.5.3): 200 all stored as sent, 202 some refused
    or stored with warnings, 409 none stored.  Every 202 carries a Warning header."""
    root = base_url(request)
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    warnings: list[str] = []
    #: Warning text -> instances stored with it (one header per text, not per instance: a
    #: study from a declared source is coerced instance by instance, alike).
    stored_with: dict[str, int] = {}
    for outcome in outcomes:
        if isinstance(outcome, _Failure):
            exc = outcome.error
            item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [store_failure_status(exc)]}}
            uid_text = "an unreadable part"
            if exc.instance is not None:
                item["00081150"] = _ui(exc.instance.sop_class_uid)
                item["00081155"] = _ui(exc.instance.sop_instance_uid)
                uid_text = exc.instance.sop_instance_uid
            failed.append(item)
            # PS3.18 8.4.3: the reason in a Warning header, since FailureReason is only a code.
            warnings.append(f'299 vna "{uid_text}: {_header_safe(str(exc))}"')
            log.info("STOW-RS refused %s: %s", uid_text, exc)
            continue
        url = (
            f"{root}/studies/{outcome.study_uid}/series/{outcome.series_uid}"
            f"/instances/{outcome.sop_instance_uid}"
        )
        ref = {
            "00081150": _ui(outcome.sop_class_uid),
            "00081155": _ui(outcome.sop_instance_uid),
            "00081190": {"vr": "UR", "Value": [url]},
        }
        if outcome.warnings:
            ref["00081196"] = {"vr": "US", "Value": [0xB000]}  # Coercion of data elements
            for text in outcome.warnings:
                stored_with[text] = stored_with.get(text, 0) + 1
        referenced.append(ref)
    for text, n in stored_with.items():
        # PS3.18 10.5.3: a 202 for instances stored with warnings; the header says why in
        # words (WarningReason B000 is only a code).
        warnings.append(
            # The text names the coercion (or, for keep-both, the quarantine) itself.
            f'299 vna "{n} instance{"" if n == 1 else "s"} stored with WarningReason B000:'
            f' {_header_safe(text)}"'
        )

    body: dict[str, Any] = {}
    if study is not None:
        body["00081190"] = {"vr": "UR", "Value": [f"{root}/studies/{study}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    status = 200 if not failed and not any("00081196" in r for r in referenced) else 202
    retry = False
    if not referenced:
        status = 409
        # Nothing stored, only because the object store or the catalogue failed (FailureReason
        # A700 on each): 503 tells the client that the same request may succeed later, where
        # 409 would tell it to fix the data (PS3.18 10.5.3, Table 10.5.3-1).
        retry = all(isinstance(o, _Failure) and o.error.retriable for o in outcomes)
        if retry:
            status = 503
    # No charset parameter: DICOM JSON is UTF-8 by definition (PS3.18 F.2) and some clients
    # (dicomweb-client) compare the media type exactly.
    response = web.Response(body=json.dumps(body).encode(), status=status, content_type=DICOM_JSON)
    if retry:
        response.headers["Retry-After"] = str(_RETRY_AFTER_SECONDS)
    for w in warnings[:50]:
        response.headers.add("Warning", w)
    return response


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def _header_safe(text: str) -> str:
    cleaned = "".join(ch if 32 <= ord(ch) < 127 and ch != '"' else " " for ch in text)
    return cleaned[:300]
