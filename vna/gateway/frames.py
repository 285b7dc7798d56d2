"""WADO-RS frames and bulk data (PS3.18 10.4, 8.6), and the BulkDataURIs of metadata.

``.../instances/{i}/frames/{list}`` answers the frames named (1-based, any order, repeats
kept) in their stored form, or transcoded to the syntax the Accept header asks for
(vna.transcoding); ``.../instances/{i}/bulk/{path}`` answers one bulk value by its
tag path (the BulkDataURI the metadata gives), with ``Range`` support, and for Pixel Data
all of its frames, as the frames resource would.  Every byte comes from
``archive.retriever`` (vna.retrieve): one ranged read of the object per frame or value, the
same authorisation, query scope, availability and audit as instance retrieves.
"""

from __future__ import annotations

import asyncio
import re
import uuid

from aiohttp import web

from vna.dicom.frames import PIXEL_TAGS, check_frame_number, parse_frame_list
from vna.errors import NotFound
from vna.gateway.media import (
    MULTIPART_RELATED,
    OCTET_STREAM,
    negotiate_frames,
    parse_accept,
)
from vna.gateway.request_context import ARCHIVE, caller_source
from vna.gateway.wado import audit_access, check_access
from vna.retrieve import StoredInstance
from vna.security.audit import RETRIEVE
from vna.security.query_scope import patient_scope

_PIXEL_PATHS = {(f"{t:08X}",) for t in PIXEL_TAGS}
_TAG = re.compile(r"^[0-9A-F]{8}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


async def frames(request: web.Request) -> web.StreamResponse:
    numbers = parse_frame_list(request.match_info["frames"])
    instance = await _instance(request)
    return await _frames_answer(request, instance, numbers, what="frames")


async def bulk(request: web.Request) -> web.StreamResponse:
    path = tuple(request.match_info["path"].upper().split("/"))
    if not all(_TAG.match(p) if i % 2 == 0 else p.isdigit() for i, p in enumerate(path)):
        raise NotFound(f"no bulk data at {request.match_info['path'][:100]}")
    instance = await _instance(request)
    archive = request.app[ARCHIVE]
    if path in _PIXEL_PATHS:
        # PS3.18 8.6: the BulkDataURI of Pixel Data answers its frames, all of them.
        pixels = await archive.retriever.pixel_layout(instance)
        if pixels is None:
            raise NotFound(f"instance {instance.sop_uid} has no pixel data")
        numbers = list(range(1, pixels.number_of_frames + 1))
        return await _frames_answer(request, instance, numbers, what="bulk")
    single = _bulk_rendition(request)
    size = await archive.retriever.bulk_size(instance, path)
    start, end = _byte_range(request.headers.get("Range"), size)
    data = await archive.retriever.bulk_value(instance, path, start, end)
    await audit_access(request, RETRIEVE, 1, {"bulk": "/".join(path)})
    partial = (start, end) != (0, size)
    ranged = {"Content-Range": f"bytes {start}-{end - 1}/{size}"} if partial else {}
    if single:
        headers = {"Accept-Ranges": "bytes", "Content-Type": OCTET_STREAM, **ranged}
        return web.Response(body=data, status=206 if partial else 200, headers=headers)
    # A range of a multipart answer: the part says which bytes it holds.
    return _multipart(
        [data],
        OCTET_STREAM,
        OCTET_STREAM,
        status=206 if partial else 200,
        headers={"Accept-Ranges": "bytes"},
        part_headers=ranged,
    )


async def _instance(request: web.Request) -> StoredInstance:
    archive = request.app[ARCHIVE]
    m = request.match_info
    await check_access(request, archive)
    scope = patient_scope(caller_source(request))
    (instance,) = await archive.retriever.find(m["study"], m["series"], m["instance"], scope=scope)
    return instance


async def _frames_answer(
    request: web.Request, instance: StoredInstance, numbers: list[int], *, what: str
) -> web.StreamResponse:
    archive = request.app[ARCHIVE]
    pixels = await archive.retriever.pixel_layout(instance)
    if pixels is None:
        raise NotFound(f"instance {instance.sop_uid} has no pixel data")
    for n in numbers:
        check_frame_number(n, pixels.number_of_frames)  # 404 naming the frame
    rendition = negotiate_frames(
        parse_accept(request.headers.get("Accept")),
        instance.transfer_syntax,
        len(numbers),
        allow_lossy=archive.transcoder.allow_lossy,
    )
    if isinstance(rendition, str):
        raise web.HTTPNotAcceptable(text=rendition + "\n")
    detail: dict[str, object] = {what: numbers[:100]}
    if rendition.transcode_to is None:
        read = archive.retriever.frames(instance, numbers)
    else:
        # Decoded and encoded in the transcoder's threads (vna.transcoding), cached by frame.
        read = archive.transcoder.frames(instance, numbers, rendition.transcode_to)
        detail["transcoded_to"] = rendition.transcode_to
    audited = audit_access(request, RETRIEVE, 1, detail)
    if instance.tier in archive.store.offline_tiers:
        # Perhaps unreadable until restored (503): the read first, the record of it after.
        try:
            data = await read
        except BaseException:
            audited.close()  # never started: no record of a retrieve that did not happen
            raise
        await audited
    else:
        # The audit row is committed while the bytes are read (a commit waits for the WAL
        # flush): both are done before anything goes out.  The request is valid by now; a
        # read that still fails (a storage error) leaves the record of an attempted
        # retrieve, erring on the side of the record.
        data, _ = await asyncio.gather(read, audited)
    if not rendition.multipart:
        return web.Response(body=data[0], headers={"Content-Type": rendition.content_type()})
    return _multipart(data, rendition.media_type, rendition.content_type())


def _multipart(
    parts: list[bytes],
    media_type: str,
    part_type: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    part_headers: dict[str, str] | None = None,
) -> web.Response:
    """A multipart/related answer (PS3.18 8.7.1), each part ``part_type``."""
    boundary = uuid.uuid4().hex
    head = "".join(
        f"{k}: {v}\r\n" for k, v in {"Content-Type": part_type, **(part_headers or {})}.items()
    )
    chunks: list[bytes] = []
    for part in parts:
        chunks += [f"--{boundary}\r\n{head}\r\n".encode("ascii"), part, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    out = dict(headers or {})
    out["Content-Type"] = f'{MULTIPART_RELATED}; type="{media_type}"; boundary={boundary}'
    return web.Response(body=b"".join(chunks), status=status, headers=out)


def _bulk_rendition(request: web.Request) -> bool:
    """True for a single-part answer; the media types of a bulk value (PS3.18 8.7.3.5.1):
    application/octet-stream, in multipart/related or alone."""
    for media in parse_accept(request.headers.get("Accept")):
        if media.type in (MULTIPART_RELATED, "multipart/*", "*/*"):
            inner = media.params.get("type", "*/*").lower()
            if inner in (OCTET_STREAM, "*/*", "application/*"):
                return False
        elif media.type in (OCTET_STREAM, "application/*"):
            return True
    raise web.HTTPNotAcceptable(
        text=f"bulk data is served as {OCTET_STREAM}, alone or in {MULTIPART_RELATED}\n"
    )


def _byte_range(header: str | None, size: int) -> tuple[int, int]:
    """[start, end) of the value that a ``Range`` header asks for (RFC 9110 14.1.2; one
    range only); the whole value without one; 416 for a range outside it."""
    if not header:
        return 0, size
    m = _RANGE.match(header.strip())
    if m is None or m.group(1) == m.group(2) == "":
        raise web.HTTPRequestRangeNotSatisfiable(
            text=f"only one byte range is served: {header[:80]!r}\n",
            headers={"Content-Range": f"bytes */{size}"},
        )
    first, last = m.group(1), m.group(2)
    if first == "":
        start, end = max(size - int(last), 0), size
    else:
        start = int(first)
        end = size if last == "" else min(int(last) + 1, size)
    if start >= size or start >= end:
        raise web.HTTPRequestRangeNotSatisfiable(
            text=f"range {header[:80]!r} is outside the value of {size} bytes\n",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end
