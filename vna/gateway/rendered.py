"""WADO-RS rendered resources and thumbnails (PS3.18 10.4.1.1.3, 10.4.1.1.4, 8.3.5).

``.../rendered`` at study, series, instance and frame level answers consumer-ready images:
``image/jpeg`` (the default) or ``image/png``, one image when one is asked for and
``multipart/related`` of them for several; an Encapsulated PDF instance renders as the
``application/pdf`` it holds.  ``.../thumbnail`` at the same levels answers one small image:
a study's or series' thumbnail is the middle instance of its (first) series, rendered once and
then served from the renderer's cache.

Query parameters (PS3.18 8.3.5.1): ``window=center,width[,linear|linear-exact|sigmoid]``,
``quality=1..100``, ``viewport=vw,vh`` (the optional source-region part and ``annotation``
are ignored, which 8.3.5.1 allows), and ``accept=`` in place of the Accept header (8.3.3.1).

Same rules as the rest of WADO-RS: the caller's query scope and read sources (404 for what it
may not see), offline objects refused with 503 and Retry-After (a restore queued), and one
audit record per request naming the study, before any image goes out.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from vna.archive import Archive
from vna.dicom.render import (
    ENCAPSULATED_PDF,
    IMAGE_TYPES,
    JPEG,
    PDF,
    VIDEO_MEDIA_TYPES,
    CannotRender,
    Region,
    Window,
)
from vna.errors import InvalidRequest
from vna.gateway.media import MULTIPART_RELATED, MediaType, parse_accept, parse_media_type
from vna.gateway.request_context import ARCHIVE, base_url, caller_source
from vna.gateway.wado import audit_access, check_access
from vna.gateway.wado_uri import ANSWERS, Answer, WadoUriRequest, uids_of
from vna.retrieve import StoredInstance
from vna.security.audit import RETRIEVE
from vna.security.query_scope import patient_scope

#: VOI LUT Function values of the ``window`` parameter (PS3.18 8.3.5.1.3) and their PS3.3
#: C.11.2.1.3 names.
_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}


@dataclass(frozen=True)
class Rendition:
    """What a rendered request answers: an image type, and whether as multipart/related."""

    media_type: str
    multipart: bool
    #: Whether application/pdf is acceptable (an Encapsulated PDF renders as itself).
    pdf: bool


def negotiate_rendered(accept: Sequence[MediaType], *, several: bool) -> Rendition | None:
    """The rendition for an Accept list, best first; None when no rendered type fits.

    ``several``: the resource yields several images (study, series, a list of frames), which
    only multipart/related can carry.
    """
    pdf = any(m.type in (PDF, "application/*", "*/*") for m in accept) or any(
        m.type == MULTIPART_RELATED and m.params.get("type", "").lower() == PDF for m in accept
    )
    for media in accept:
        if media.type == MULTIPART_RELATED:
            inner = media.params.get("type", JPEG).lower()
            if inner in ("image/*", "*/*"):
                inner = JPEG
            if inner in IMAGE_TYPES:
                return Rendition(inner, True, pdf)
            continue
        if media.type in ("*/*", "image/*"):
            return Rendition(JPEG, several, pdf)
        if media.type in IMAGE_TYPES and not several:
            return Rendition(media.type, False, pdf)
        if media.type == "multipart/*":
            return Rendition(JPEG, True, pdf)
    if not several and pdf:
        return Rendition(JPEG, False, True)
    return None


def parse_window(text: str | None) -> Window | None:
    """``window=center,width[,function]`` (PS3.18 8.3.5.1.3)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise InvalidRequest("window must be center,width[,function]")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise InvalidRequest(f"window center and width must be numbers: {text[:60]!r}") from None
    if width <= 0:
        raise InvalidRequest("window width must be positive")
    function = _FUNCTIONS.get(parts[2].lower() if len(parts) == 3 else "linear")
    if function is None:
        raise InvalidRequest(f"window function must be one of {', '.join(_FUNCTIONS)}")
    return Window(center, width, function)


def parse_viewport(text: str | None) -> tuple[int, int] | None:
    """``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.1): the size to fit within."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        columns, rows = int(parts[0] or 0), int(parts[1] or 0) if len(parts) > 1 else 0
    except ValueError:
        raise InvalidRequest(f"viewport must be vw,vh: {text[:60]!r}") from None
    if not (0 <= columns <= 8192 and 0 <= rows <= 8192) or columns == rows == 0:
        raise InvalidRequest("viewport sizes must be between 1 and 8192")
    return columns, rows


def parse_quality(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        quality = int(text)
    except ValueError:
        raise InvalidRequest(f"quality must be an integer 1-100: {text[:20]!r}") from None
    if not 1 <= quality <= 100:
        raise InvalidRequest("quality must be between 1 and 100")
    return quality


def parse_frame_list(text: str) -> list[int]:
    """``frames/{list}``: comma-separated 1-based numbers (PS3.18 8.3.1.2)."""
    try:
        frames = [int(p) for p in text.split(",")]
    except ValueError:
        raise InvalidRequest(f"frame list must be comma-separated numbers: {text[:60]!r}") from None
    if not frames or any(f < 1 for f in frames):
        raise InvalidRequest("frame numbers start at 1")
    return frames


# --- handlers ----------------------------------------------------------------------------------


async def rendered(request: web.Request) -> web.StreamResponse:
    """``/rendered`` at study, series, instance and frames level."""
    archive = request.app[ARCHIVE]
    m = request.match_info
    frames = parse_frame_list(m["frames"]) if "frames" in m else None
    instance_level = "instance" in m
    several = not instance_level or (frames is not None and len(frames) > 1)
    accept = _accept(request)
    rendition = negotiate_rendered(accept, several=several)
    maybe_video = instance_level and frames is None and _accepts_video(accept)
    if rendition is None and not maybe_video:
        raise _not_acceptable(several)
    window = parse_window(request.query.get("window"))
    quality = parse_quality(request.query.get("quality"))
    viewport = parse_viewport(request.query.get("viewport"))
    instances = await _find(request, archive)
    if instance_level and frames is None:
        video = VIDEO_MEDIA_TYPES.get(instances[0].transfer_syntax)
        if video is not None:
            return await _video(request, archive, instances[0], video, accept)
    if rendition is None:
        raise _not_acceptable(several)
    options = archive.renderer.options(
        rendition.media_type, window=window, quality=quality, viewport=viewport
    )
    await archive.retriever.ensure_online(instances)
    if instance_level and frames is None and rendition.pdf:
        document = await _document(archive, instances[0])
        if document is not None:
            await _audit(request, 1, what="rendered")
            return web.Response(body=document[1], content_type=document[0])
    images: list[tuple[StoredInstance, int, bytes]] = []
    if instance_level:
        instance = instances[0]
        # A single-frame media type shows the first frame of a multi-frame instance; a
        # multipart answer carries every frame (PS3.18 10.4.1.1.3).
        wanted = frames or (None if rendition.multipart else [1])
        for frame, image in await archive.renderer.frames(instance, wanted, options):
            images.append((instance, frame, image))
    else:
        refused: CannotRender | None = None
        for instance in instances:
            try:
                for frame, image in await archive.renderer.frames(instance, [1], options):
                    images.append((instance, frame, image))
            except CannotRender as exc:
                # A study holds reports and documents beside its images: those have no
                # rendering and are left out of a study's or series' pictures.
                refused = exc
        if not images:
            raise refused or CannotRender("nothing in it renders as an image")
    await _audit(request, len({i.sop_uid for i, _, _ in images}), what="rendered")
    return _answer(request, rendition, images)


async def thumbnail(request: web.Request) -> web.StreamResponse:
    """``/thumbnail`` at study, series, instance and frames level: one small image."""
    archive = request.app[ARCHIVE]
    m = request.match_info
    frames = parse_frame_list(m["frames"]) if "frames" in m else [1]
    rendition = _negotiate(request, several=False)
    if rendition.multipart:
        rendition = Rendition(rendition.media_type, False, False)
    options = archive.renderer.thumbnail_options(
        rendition.media_type, parse_viewport(request.query.get("viewport"))
    )
    instances = await _find(request, archive)
    candidates = _representatives(instances) if "instance" not in m else instances[:1]
    refused: CannotRender | None = None
    for instance in candidates:
        await archive.retriever.ensure_online([instance])
        try:
            image = (await archive.renderer.frames(instance, frames[:1], options))[0][1]
        except CannotRender as exc:
            refused = exc
            continue
        await _audit(request, 1, what="thumbnail")
        return web.Response(body=image, content_type=rendition.media_type)
    raise refused or CannotRender("nothing in it renders as an image")


# --- WADO-URI (PS3.18 9) ------------------------------------------------------------------


def register_wado_uri() -> None:
    """Serve WADO-URI's image content types (PS3.18 9.1.2.1.5) with rendered frames."""
    for media_type in IMAGE_TYPES:
        ANSWERS[media_type] = wado_uri_answer(media_type)


def wado_uri_answer(media_type: str) -> Answer:
    """The WADO-URI answer for ``contentType`` image/jpeg or image/png (PS3.18 9.1.2.2.2):
    ``frameNumber``, ``windowCenter``/``windowWidth``, ``rows``/``columns``, ``region`` and
    ``imageQuality`` honoured; the same reader, scope, availability and audit as WADO-RS."""

    async def answer(
        request: web.Request, instance: StoredInstance, parsed: WadoUriRequest
    ) -> web.StreamResponse:
        archive = request.app[ARCHIVE]
        options = archive.renderer.options(
            media_type,
            window=_uri_window(parsed.params),
            quality=_uri_int(parsed.params, "imageQuality", 1, 100),
            viewport=_uri_viewport(parsed.params),
            region=_uri_region(parsed.params.get("region")),
        )
        frame = _uri_int(parsed.params, "frameNumber", 1, 2**31 - 1) or 1
        await archive.retriever.ensure_online([instance])
        ((_, image),) = await archive.renderer.frames(instance, [frame], options)
        await audit_access(
            request, RETRIEVE, 1, detail={"rendition": media_type}, uids=uids_of(parsed)
        )
        return web.Response(body=image, content_type=media_type)

    return answer


def _uri_int(params: dict[str, str], name: str, low: int, high: int) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer: {text[:20]!r}") from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}")
    return value


def _uri_window(params: dict[str, str]) -> Window | None:
    # PS3.18 9.1.2.2.9: windowCenter and windowWidth come together.
    center, width = params.get("windowCenter"), params.get("windowWidth")
    if center is None and width is None:
        return None
    if center is None or width is None:
        raise InvalidRequest("windowCenter and windowWidth go together")
    return parse_window(f"{center},{width}")


def _uri_viewport(params: dict[str, str]) -> tuple[int, int] | None:
    # PS3.18 9.1.2.2.5-6: rows and columns bound the image, the aspect ratio kept.
    rows = _uri_int(params, "rows", 1, 8192)
    columns = _uri_int(params, "columns", 1, 8192)
    if rows is None and columns is None:
        return None
    return columns or 0, rows or 0


def _uri_region(text: str | None) -> Region | None:
    """``region=x1,y1,x2,y2``, fractions of the image from its top left (PS3.18 9.1.2.2.7)."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InvalidRequest(f"region must be four numbers: {text[:60]!r}") from None
    if len(values) != 4 or not all(0.0 <= v <= 1.0 for v in values):
        raise InvalidRequest("region must be x1,y1,x2,y2 between 0.0 and 1.0")
    left, top, right, bottom = values
    if right <= left or bottom <= top:
        raise InvalidRequest("region must run from its top left to its bottom right")
    return Region(left, top, right, bottom)


# --- helpers -----------------------------------------------------------------------------------


def _accept(request: web.Request) -> list[MediaType]:
    # The accept query parameter stands in for the header (PS3.18 8.3.3.1).
    given = request.query.get("accept")
    if given:
        return [parse_media_type(t) for t in given.split(",")]
    return parse_accept(request.headers.get("Accept"))


def _not_acceptable(several: bool) -> web.HTTPNotAcceptable:
    kinds = " or ".join(IMAGE_TYPES)
    shape = f"multipart/related; type={kinds}" if several else kinds
    return web.HTTPNotAcceptable(text=f"this resource renders as {shape}\n")


def _negotiate(request: web.Request, *, several: bool) -> Rendition:
    rendition = negotiate_rendered(_accept(request), several=several)
    if rendition is None:
        raise _not_acceptable(several)
    return rendition


def _accepts_video(accept: Sequence[MediaType], media_type: str | None = None) -> bool:
    """Whether the Accept list takes ``media_type`` (any video type when None)."""
    for media in accept:
        if media.type in ("*/*", "video/*"):
            return True
        if media.type.startswith("video/") and (
            media_type is None or media.type == media_type.lower()
        ):
            return True
    return False


async def _video(
    request: web.Request,
    archive: Archive,
    instance: StoredInstance,
    media_type: str,
    accept: Sequence[MediaType],
) -> web.StreamResponse:
    """A video instance renders as its own stream (PS3.18 8.3.5.1), or not at all: the
    archive does not turn video into pictures."""
    if not _accepts_video(accept, media_type):
        raise web.HTTPNotAcceptable(
            text=f"instance {instance.sop_uid} is a video (transfer syntax"
            f" {instance.transfer_syntax}): it renders as {media_type} only\n"
        )
    await archive.retriever.ensure_online([instance])
    media, stream = await archive.renderer.video(instance)
    await _audit(request, 1, what="rendered")
    return web.Response(body=stream, headers={"Content-Type": media})


async def _find(request: web.Request, archive: Archive) -> list[StoredInstance]:
    m = request.match_info
    await check_access(request, archive)
    scope = patient_scope(caller_source(request))
    return await archive.retriever.find(m["study"], m.get("series"), m.get("instance"), scope=scope)


async def _document(archive: Archive, instance: StoredInstance) -> tuple[str, bytes] | None:
    if instance.sop_class_uid != ENCAPSULATED_PDF:
        return None
    return await archive.renderer.document(instance)


def _representatives(instances: list[StoredInstance]) -> list[StoredInstance]:
    """The middle instance of each series, first series first: a thumbnail shows the first
    that renders (a study may open with a report series)."""
    by_series: dict[str, list[StoredInstance]] = {}
    for instance in instances:
        by_series.setdefault(instance.series_uid, []).append(instance)
    return [members[len(members) // 2] for members in by_series.values()]


def _answer(
    request: web.Request, rendition: Rendition, images: list[tuple[StoredInstance, int, bytes]]
) -> web.Response:
    if not rendition.multipart:
        return web.Response(body=images[0][2], content_type=rendition.media_type)
    boundary = uuid.uuid4().hex
    root = base_url(request)
    body = bytearray()
    for instance, frame, image in images:
        location = (
            f"{root}/studies/{instance.study_uid}/series/{instance.series_uid}"
            f"/instances/{instance.sop_uid}/frames/{frame}/rendered"
        )
        body += (
            f"--{boundary}\r\nContent-Type: {rendition.media_type}\r\n"
            f"Content-Location: {location}\r\n\r\n"
        ).encode("ascii")
        body += image
        body += b"\r\n"
    body += f"--{boundary}--\r\n".encode("ascii")
    return web.Response(
        body=bytes(body),
        headers={
            "Content-Type": (
                f'multipart/related; type="{rendition.media_type}"; boundary={boundary}'
            )
        },
    )


async def _audit(request: web.Request, instances: int, *, what: str) -> None:
    # One record per request naming the study disclosed (PS3.15 A.5.3.7): a thumbnail shows
    # a patient's images as surely as the instance does.
    await audit_access(request, RETRIEVE, instances, detail={"rendition": what})
