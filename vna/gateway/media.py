"""Media types of DICOMweb (PS3.18 8.7): parsing Content-Type and Accept, framing multipart.

Pure functions; the handlers do the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """What a WADO-RS instance retrieve may send: as stored, or only a given syntax."""

    #: None: the stored transfer syntax (``transfer-syntax=*`` or none asked for).
    transfer_syntax: str | None


def negotiate_instances(accept: list[MediaType]) -> InstanceRendition | None:
    """The rendition for a WADO-RS instances request, or None when nothing acceptable.

    The archive returns instances in their stored transfer syntax (it never transcodes, so
    what comes back is bit-exact what was stored).  A client naming one specific syntax gets
    that syntax only; instances stored otherwise are then refused with 406.
    """
    for media in accept:
        if media.type in ("*/*", "multipart/*"):
            return InstanceRendition(None)
        if media.type == MULTIPART_RELATED:
            inner = media.params.get("type", DICOM).lower()
            if inner not in (DICOM, "*/*", "application/*"):
                continue
            ts = media.params.get("transfer-syntax", "*")
            return InstanceRendition(None if ts == "*" else ts)
    return None


def accepts_json(accept: list[MediaType]) -> bool:
    return any(m.type in (DICOM_JSON, "application/json", "application/*", "*/*") for m in accept)


def part_header(content_type: str, location: str | None = None) -> bytes:
    lines = [f"Content-Type: {content_type}"]
    if location:
        lines.append(f"Content-Location: {location}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
