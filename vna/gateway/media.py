"""Media types of DICOMweb (PS3.18 8.7): parsing Content-Type and Accept, framing multipart.

Pure functions; the handlers do the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from vna.dicom.transcode import cost, refusal
from vna.errors import InvalidRequest

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
MULTIPART_RELATED = "multipart/related"


@dataclass(frozen=True)
class MediaType:
    type: str  # lower-case "type/subtype"
    params: dict[str, str]
    quality: float = 1.0


def parse_media_type(text: str) -> MediaType:
    """One media type with its parameters (quoted values unquoted, names lower-cased)."""
    pieces = _split_outside_quotes(text, ";")
    main = pieces[0].strip().lower()
    if "/" not in main:
        raise InvalidRequest(f"malformed media type: {text[:100]!r}")
    params: dict[str, str] = {}
    quality = 1.0
    for piece in pieces[1:]:
        if "=" not in piece:
            continue
        name, _, value = piece.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name == "q":
            try:
                quality = float(value)
            except ValueError:
                raise InvalidRequest(f"malformed quality value in {text[:100]!r}") from None
        else:
            params[name] = value
    return MediaType(main, params, quality)


def parse_accept(header: str | None) -> list[MediaType]:
    """Accept header entries, best first; an absent header accepts anything."""
    if not header or not header.strip():
        return [MediaType("*/*", {})]
    types = [parse_media_type(p) for p in _split_outside_quotes(header, ",") if p.strip()]
    return sorted((t for t in types if t.quality > 0), key=lambda t: -t.quality)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


@dataclass(frozen=True)
class InstanceRendition:
    """What a WADO-RS instance retrieve may send: as stored, or one of some syntaxes."""

    #: None: the stored transfer syntax (``transfer-syntax=*`` or none asked for); else the
    #: syntaxes asked for with their quality values, best first (the archive picks, for each
    #: instance, the cheapest it can make: vna.dicom.transcode.choose).
    transfer_syntaxes: tuple[tuple[str, float], ...] | None


def negotiate_instances(accept: list[MediaType]) -> InstanceRendition | None:
    """The rendition for a WADO-RS instances request, or None when nothing acceptable.

    ``transfer-syntax=*``, or an application/dicom entry without the parameter, keeps the
    stored bytes (bit-exact what was stored).  Otherwise every syntax named, with its quality
    value, is a candidate; the handler picks per instance.
    """
    asked: dict[str, float] = {}
    for media in accept:
        if media.type in ("*/*", "multipart/*"):
            return InstanceRendition(None)
        if media.type == MULTIPART_RELATED:
            inner = media.params.get("type", DICOM).lower()
            if inner not in (DICOM, "*/*", "application/*"):
                continue
            ts = media.params.get("transfer-syntax", "*").strip()
            if ts == "*":
                return InstanceRendition(None)
            asked.setdefault(ts, media.quality)
    if not asked:
        return None
    return InstanceRendition(tuple(asked.items()))


def accepts_json(accept: list[MediaType]) -> bool:
    return any(m.type in (DICOM_JSON, "application/json", "application/*", "*/*") for m in accept)


def part_header(content_type: str, location: str | None = None) -> bytes:
    lines = [f"Content-Type: {content_type}"]
    if location:
        lines.append(f"Content-Location: {location}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


OCTET_STREAM = "application/octet-stream"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
#: Native syntaxes whose frames are the little-endian bytes of Explicit VR Little Endian
#: (the archive sends big-endian native frames swapped, vna.dicom.frames.parsed_pixels).
_NATIVE = frozenset(
    {
        "1.2.840.10008.1.2",
        EXPLICIT_VR_LITTLE_ENDIAN,
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
    }
)
#: The media type of frames in each compressed syntax (PS3.18 8.7.3.5.4, Table 8.7.3-5).
FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg2",
    "1.2.840.10008.1.2.4.101": "video/mpeg2",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}
#: Older names some clients still send (PS3.18 kept them as synonyms in earlier editions).
_SYNONYMS = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}


#: The transfer syntax a frame media type means when the request names none (PS3.18
#: 8.7.3.5.4, Table 8.7.3-5, "default").
DEFAULT_FRAME_SYNTAX = {
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/jxl": "1.2.840.10008.1.2.4.110",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
}


@dataclass(frozen=True)
class FrameRendition:
    """How frames (or bulk pixel data) go out: under this media type and syntax, in a
    multipart/related answer or a single part; as stored, or transcoded to ``transcode_to``."""

    media_type: str
    transfer_syntax: str
    multipart: bool
    #: The syntax to transcode the stored frames to; None: the stored frames as they are.
    transcode_to: str | None = None

    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"


def stored_frame_type(transfer_syntax: str) -> str:
    """The media type of the frames of an instance stored in this syntax."""
    if transfer_syntax in _NATIVE:
        return OCTET_STREAM
    return FRAME_MEDIA_TYPES.get(transfer_syntax, OCTET_STREAM)


def negotiate_frames(
    accept: list[MediaType], stored_syntax: str, frames: int, *, allow_lossy: bool = False
) -> FrameRendition | str:
    """The rendition of ``frames`` frames of an instance stored in ``stored_syntax`` that the
    Accept header allows, or the reason none does (for the 406).

    PS3.18 8.7.3.5: native frames are application/octet-stream (Explicit VR Little Endian);
    compressed frames are their syntax's media type.  A client gets the stored frames by
    asking for their type, for ``transfer-syntax=*`` or for the stored syntax; any other
    syntax the archive can make (vna.dicom.transcode) is made, the cheapest of those the
    Accept header lists: octet-stream for the decoded frames, image/jls, image/jp2,
    image/jphc, image/dicom-rle for the encoded ones.  A client asking octet-stream with
    ``transfer-syntax=*`` (OHIF does) gets the stored bytes labelled with their syntax.  A
    single-part answer (Accept without multipart/related) carries exactly one frame.
    """
    native = stored_syntax in _NATIVE
    syntax = EXPLICIT_VR_LITTLE_ENDIAN if native else stored_syntax
    own_type = stored_frame_type(stored_syntax)
    reasons: list[str] = []
    best: tuple[int, float, int, FrameRendition] | None = None
    for order, media in enumerate(accept):
        multipart = media.type in (MULTIPART_RELATED, "multipart/*", "*/*")
        if multipart:
            inner = media.params.get("type", "*/*").lower()
        else:
            inner = media.type
        inner = _SYNONYMS.get(inner, inner)
        asked = media.params.get("transfer-syntax")
        if not multipart and frames != 1:
            reasons.append(f"{inner} is a single-part answer, for one frame ({frames} asked)")
            continue
        options: list[tuple[str, str]] = []  # (media type, syntax)
        wildcard = inner in ("*/*", "image/*", "video/*", "application/*")
        if asked in (None, "*") and (wildcard or inner == own_type):
            if wildcard and inner != "*/*" and not own_type.startswith(inner[:-1]):
                reasons.append(f"frames are stored as {own_type}, not {inner}")
                continue
            options.append((own_type, syntax))
        elif inner == OCTET_STREAM:
            if asked == "*" or asked == stored_syntax:
                options.append((OCTET_STREAM, syntax))
            elif asked is None or asked in _NATIVE:
                options.append((OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN))
            else:
                reasons.append(
                    f"frames in transfer syntax {asked} are"
                    f" {FRAME_MEDIA_TYPES.get(asked, 'not served')}, not {OCTET_STREAM}"
                )
                continue
        elif asked in (None, "*"):
            default = DEFAULT_FRAME_SYNTAX.get(inner)
            if default is None:
                reasons.append(f"frames are stored as {own_type}, not {inner}")
                continue
            options.append((inner, default))
        else:
            frame_type = OCTET_STREAM if asked in _NATIVE else FRAME_MEDIA_TYPES.get(asked)
            if wildcard and frame_type is not None:
                if inner == "*/*" or frame_type.startswith(inner[:-1]):
                    options.append((frame_type, asked))
            elif frame_type == inner:
                options.append((inner, asked))
            if not options:
                reasons.append(f"frames in transfer syntax {asked} are not {inner}")
                continue
        for media_type, target in options:
            if target == syntax or (native and target in _NATIVE):
                rendition = FrameRendition(media_type, syntax, multipart)
                key = (0, -media.quality, order, rendition)
            else:
                reason = refusal(stored_syntax, target, allow_lossy=allow_lossy)
                if reason is not None:
                    reasons.append(reason)
                    continue
                label = EXPLICIT_VR_LITTLE_ENDIAN if target in _NATIVE else target
                rendition = FrameRendition(media_type, label, multipart, transcode_to=label)
                key = (cost(stored_syntax, label), -media.quality, order, rendition)
            if best is None or key[:3] < best[:3]:
                best = key
    if best is not None:
        return best[3]
    detail = "; ".join(dict.fromkeys(reasons)) or "nothing acceptable was asked for"
    return f"frames of this instance are {own_type} in transfer syntax {stored_syntax}: {detail}"
