"""BulkDataURIs in WADO-RS metadata (PS3.18 F.2.6, 8.6): where each value left out of the
DICOM JSON can be fetched (vna.gateway.frames answers them)."""

from __future__ import annotations

from typing import Any

from vna.retrieve import MetadataEntry


def with_bulk_data_uris(entry: MetadataEntry, root: str) -> dict[str, Any]:
    """An instance's DICOM JSON with a BulkDataURI for Pixel Data and every bulk value
    (PS3.18 F.2.6: the value is not in the JSON, the URI retrieves it)."""
    doc = dict(entry.metadata)
    base = (
        f"{root}/studies/{entry.study_uid}/series/{entry.series_uid}"
        f"/instances/{entry.sop_uid}/bulk/"
    )
    layout = entry.layout
    if layout is not None:
        for value in layout.bulk:
            _place(doc, value.path, {"vr": value.vr, "BulkDataURI": base + "/".join(value.path)})
    pixels = layout.pixels if layout is not None else None
    if pixels is not None:
        tag = f"{pixels.tag:08X}"
        vr = "OB" if pixels.encapsulated else _native_vr(doc, pixels.tag)
        doc[tag] = {"vr": vr, "BulkDataURI": base + tag}
    elif entry.has_pixel_data and layout is None:
        vr = "OW" if _bits_allocated(doc) > 8 else "OB"
        doc["7FE00010"] = {"vr": vr, "BulkDataURI": base + "7FE00010"}
    return doc


def _place(doc: dict[str, Any], path: tuple[str, ...], value: dict[str, Any]) -> None:
    node: Any = doc
    for i in range(0, len(path) - 1, 2):
        element = node.get(path[i]) if isinstance(node, dict) else None
        items = element.get("Value") if isinstance(element, dict) else None
        index = int(path[i + 1])
        if not isinstance(items, list) or index >= len(items):
            return  # the JSON lacks that item: leave it as it is
        node = items[index]
    if isinstance(node, dict):
        node[path[-1]] = value


def _bits_allocated(doc: dict[str, Any]) -> int:
    try:
        return int(doc["00280100"]["Value"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        return 16


def _native_vr(doc: dict[str, Any], tag: int) -> str:
    if tag == 0x7FE00008:
        return "OF"
    if tag == 0x7FE00009:
        return "OD"
    return "OW" if _bits_allocated(doc) > 8 else "OB"
