"""Rendered images of stored instances (PS3.18 8.3.5 and 10.4.1.1.3): a pure function from a
data set and a frame number to JPEG or PNG bytes.

The pipeline is the grayscale and colour pipelines of PS3.3 C.11 (and PS3.4 N.2):

- grayscale: stored values (signed or not, Bits Stored honoured by the decoder) -> Modality
  LUT (Rescale Slope/Intercept, or the Modality LUT Sequence, C.11.1) -> VOI (a window asked
  for, else the instance's first Window Center/Width, else its VOI LUT Sequence, else the
  frame's own minimum and maximum, C.11.2) -> MONOCHROME1 inverted so that the picture reads
  as it would on a viewer (C.7.6.3.1.2) -> 8 bits;
- colour: RGB as stored (either planar configuration, C.7.6.3.1.3), YBR converted to RGB,
  PALETTE COLOR looked up in its palette (C.7.6.3.1.5, C.7.9), 16-bit palettes and samples
  scaled to 8 bits.

No I/O here: the caller reads the object (through vna/retrieve.py) and runs this in a worker,
off the event loop.  Decoding compressed syntaxes goes through pydicom's pixel decoders and
their plugins (pylibjpeg with pylibjpeg-openjpeg, pyjpegls, python-gdcm); a syntax no plugin
decodes raises :class:`Undecodable`, which the gateways answer with 406 and the reason.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments, parse_basic_offsets
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder
from pydicom.uid import UID

from vna.errors import CannotRender

JPEG = "image/jpeg"
PNG = "image/png"
PDF = "application/pdf"
#: What a frame renders as (PS3.18 Table 8.3.5-1: the single-frame image media types).
IMAGE_TYPES = (JPEG, PNG)

#: Encapsulated PDF Storage (PS3.4 B.5): rendered as the PDF it holds (PS3.18 8.3.5.1).
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
#: Video: an instance in one of these syntaxes renders as its own stream, under this media
#: type (PS3.18 8.3.5.1 and Table 8.3.5-1): MPEG2 as video/mpeg, MPEG-4 AVC/H.264 as
#: video/mp4, HEVC/H.265 as video/H265 (the fragmentable variants alike).
VIDEO_MEDIA_TYPES: dict[str, str] = {
    **dict.fromkeys(
        (
            "1.2.840.10008.1.2.4.100",
            "1.2.840.10008.1.2.4.100.1",
            "1.2.840.10008.1.2.4.101",
            "1.2.840.10008.1.2.4.101.1",
        ),
        "video/mpeg",
    ),
    **dict.fromkeys(
        (
            f"1.2.840.10008.1.2.4.{n}{variant}"
            for n in (102, 103, 104, 105, 106)
            for variant in ("", ".1")
        ),
        "video/mp4",
    ),
    **dict.fromkeys(("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"), "video/H265"),
}


class Undecodable(CannotRender):
    """The archive cannot decode this instance's pixel data (its transfer syntax has no
    decoder here, or the data is not an image); the message says why."""


class NotRenderable(CannotRender):
    """The instance has no pixel data to render (a structured report, a waveform, ...)."""


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): centre, width and the VOI LUT Function."""

    center: float
    width: float
    function: str = "LINEAR"  # LINEAR | LINEAR_EXACT | SIGMOID


@dataclass(frozen=True)
class Region:
    """A rectangle of the image as fractions of its size (WADO-URI ``region``, PS3.18
    9.1.2.2.2: x1, y1, x2, y2, each 0.0-1.0, top left to bottom right)."""

    left: float
    top: float
    right: float
    bottom: float


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = JPEG
    #: None: the instance's own window, else the frame's range (PS3.18 8.3.5.1.3).
    window: Window | None = None
    #: JPEG quality 1-100 (PS3.18 8.3.5.1.2 ``quality``); PNG is lossless.
    quality: int = 90
    #: Fit within (columns, rows), keeping the aspect ratio (``viewport``); None: as is.
    viewport: tuple[int, int] | None = None
    #: Crop before scaling (WADO-URI ``region``); None: the whole image.
    region: Region | None = None


def frame_count(dataset: Dataset) -> int:
    """Number of Frames (0028,0008); 1 when absent (PS3.3 C.7.6.6)."""
    value = dataset.get("NumberOfFrames")
    try:
        return max(int(value), 1) if value not in (None, "") else 1
    except (TypeError, ValueError):
        return 1


def decode_frame(dataset: Dataset, frame: int) -> np.ndarray[Any, Any]:
    """The 0-based ``frame`` of the data set as decoded stored values: (rows, columns) or
    (rows, columns, samples), YBR already converted to RGB by the decoder, Bits Stored and
    Pixel Representation applied (signed values sign-extended)."""
    if "PixelData" not in dataset:
        what = "Float or Double Pixel Data" if _float_pixels(dataset) else "no Pixel Data"
        raise NotRenderable(f"the instance has {what} to render")
    meta = getattr(dataset, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise Undecodable("the instance names no transfer syntax (0002,0010)")
    syntax = UID(meta.TransferSyntaxUID)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise Undecodable(f"no decoder for transfer syntax {syntax}") from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise Undecodable(
            f"transfer syntax {syntax} ({syntax.name}) cannot be decoded here ({missing})"
        )
    try:
        # Not raw: YBR_FULL, YBR_FULL_422 (and the JPEG codecs' YBR) become RGB (C.7.6.3.1.2).
        array, _meta = decoder.as_array(dataset, index=frame, raw=False)
    except Exception as exc:
        # Third-party codecs fail on damaged data with whatever they raise; to the client it
        # is one answer (406 with the reason), never a 500.
        reason = " ".join(str(exc).split())[:300]
        raise Undecodable(f"pixel data in {syntax.name} could not be decoded: {reason}") from exc
    return array


def display_pixels(
    dataset: Dataset, pixels: np.ndarray[Any, Any], window: Window | None = None
) -> np.ndarray[Any, Any]:
    """8-bit display values of one decoded frame: (rows, columns) grayscale or
    (rows, columns, 3) RGB."""
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, dataset)
        return _to_8_bits(rgb, _palette_bits(dataset))
    if pixels.ndim == 3:
        # RGB (planar configuration already undone by the decoder) or YBR turned RGB.
        bits = int(dataset.get("BitsStored", dataset.get("BitsAllocated", 8)))
        return _to_8_bits(pixels, bits)
    values = _modality_values(dataset, pixels)
    out = _voi(dataset, values, window)
    if photometric == "MONOCHROME1":
        # Minimum values shown white (PS3.3 C.7.6.3.1.2): rendered images show what a viewer
        # shows, so the image is inverted after the VOI.
        out = 255.0 - out
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _modality_values(dataset: Dataset, pixels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The Modality LUT (PS3.3 C.11.1): Rescale Slope and Intercept in single precision
    (24 bits of mantissa hold any stored value exactly; half the memory traffic of double),
    or the Modality LUT Sequence through pydicom."""
    if "ModalityLUTSequence" in dataset:
        return apply_modality_lut(pixels, dataset).astype(np.float32)
    slope = _first(dataset.get("RescaleSlope")) or 1.0
    intercept = _first(dataset.get("RescaleIntercept")) or 0.0
    values = pixels.astype(np.float32)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def render(dataset: Dataset, frame: int, options: RenderOptions) -> bytes:
    """The 0-based ``frame`` of ``dataset`` rendered as ``options.media_type``."""
    if options.media_type not in IMAGE_TYPES:
        raise Undecodable(f"frames render as {' or '.join(IMAGE_TYPES)}, not {options.media_type}")
    if not 0 <= frame < frame_count(dataset):
        raise NotRenderable(f"frame {frame + 1} is past the instance's {frame_count(dataset)}")
    shown = _native_grayscale(dataset, frame, options.window)
    if shown is None:
        shown = display_pixels(dataset, decode_frame(dataset, frame), options.window)
    image = Image.fromarray(shown)
    if options.region is not None:
        image = image.crop(_box(options.region, image.width, image.height))
    if options.viewport is not None:
        image = _fitted(image, *options.viewport)
    if options.media_type == JPEG:
        return _jpeg(image, max(1, min(100, options.quality)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _jpeg(image: Image.Image, quality: int) -> bytes:
    """The image as baseline JPEG, through libjpeg-turbo by way of imagecodecs.

    Pillow's encoder is the same library with the same defaults (the bytes are identical),
    but it holds the GIL while it encodes: the render threads and the server's event loop
    took turns, and two threads encoded no faster than one.  imagecodecs releases it (two
    threads, twice the images).  The picture is what ``display_pixels`` makes: 8-bit
    grayscale or RGB, the two modes both encoders take alike."""
    return bytes(imagecodecs.jpeg8_encode(np.asarray(image), level=quality))


#: Native syntaxes whose Pixel Data pydicom holds as little endian bytes (a deflated data set
#: is inflated when read).
_NATIVE_LITTLE_ENDIAN = frozenset(
    ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99")
)
#: Display tables of recent grayscale pipelines (a series shares one): key -> 8-bit table.
_TABLES: dict[tuple[Any, ...], np.ndarray[Any, Any]] = {}
_MAX_TABLES = 64


def _native_grayscale(
    dataset: Dataset, frame: int, window: Window | None
) -> np.ndarray[Any, Any] | None:
    """The 8-bit display values of a native grayscale frame through one table look-up, or
    None when this shortcut does not apply (the caller then decodes and computes).

    With a window (asked for, or the instance's own) and Rescale Slope/Intercept, every step
    of the pipeline (Bits Stored, sign, Modality LUT, VOI, MONOCHROME1) is a function of the
    stored value alone: ``display_pixels`` is applied once to every possible stored value
    (2**Bits Stored of them), and the frame is that table indexed by its stored bits, which
    is the same result as decoding and computing each pixel, at a fraction of the cost.
    """
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    meta = getattr(dataset, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if (
        photometric not in ("MONOCHROME1", "MONOCHROME2")
        or syntax not in _NATIVE_LITTLE_ENDIAN
        or int(dataset.get("SamplesPerPixel", 1) or 1) != 1
        or "ModalityLUTSequence" in dataset
        or "PixelData" not in dataset
    ):
        return None
    try:
        allocated = int(dataset.BitsAllocated)
        stored = int(dataset.get("BitsStored", allocated))
        signed = int(dataset.get("PixelRepresentation", 0)) == 1
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except (AttributeError, TypeError, ValueError):
        return None
    if allocated not in (8, 16) or not 1 <= stored <= allocated:
        return None
    chosen = window or instance_window(dataset)
    if chosen is None:
        return None  # the frame's own range or a VOI LUT: computed the long way
    size = rows * columns * allocated // 8
    value = dataset.PixelData
    if not isinstance(value, bytes | bytearray) or len(value) < (frame + 1) * size:
        return None  # the decoder says what is wrong with it
    key = (
        photometric,
        allocated,
        stored,
        signed,
        _first(dataset.get("RescaleSlope")),
        _first(dataset.get("RescaleIntercept")),
        chosen,
    )
    table = _TABLES.get(key)
    if table is None:
        table = _display_table(dataset, allocated, stored, signed, chosen)
        if len(_TABLES) >= _MAX_TABLES:
            _TABLES.clear()  # (render threads share it: no iteration over it)
        _TABLES[key] = table
    dtype = "<u2" if allocated == 16 else "u1"
    bits = np.frombuffer(value, dtype=dtype, count=rows * columns, offset=frame * size)
    if stored < allocated:
        bits = bits & np.array((1 << stored) - 1, dtype=bits.dtype)  # unused high bits dropped
    # np.take rather than table[bits]: the same values, in about half the time (no general
    # fancy-indexing machinery for a flat index array).
    shown: np.ndarray[Any, Any] = np.take(table, bits).reshape(rows, columns)
    return shown


def _display_table(
    dataset: Dataset, allocated: int, stored: int, signed: bool, window: Window
) -> np.ndarray[Any, Any]:
    """8-bit display value of each stored bit pattern 0 .. 2**stored - 1."""
    raw = np.arange(1 << stored, dtype=np.int64)
    if signed:
        raw = np.where(raw >= 1 << (stored - 1), raw - (1 << stored), raw)
    # The values in the type the decoder gives, so that every step computes as it would.
    kinds = {(16, True): np.int16, (16, False): np.uint16, (8, True): np.int8, (8, False): np.uint8}
    values = raw.astype(kinds[allocated, signed])
    return display_pixels(dataset, values, window)


def video_stream(dataset: Dataset) -> tuple[str, bytes]:
    """The media type and bytes of a video instance's stream: the fragments of its
    encapsulated Pixel Data after the Basic Offset Table (PS3.5 8.2.5-8.2.8, A.4), as stored:
    a video renders as itself (PS3.18 8.3.5.1)."""
    meta = getattr(dataset, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    media = VIDEO_MEDIA_TYPES.get(syntax)
    if media is None:
        raise NotRenderable(f"transfer syntax {syntax or '(none)'} is not a video syntax")
    if "PixelData" not in dataset:
        raise NotRenderable("the video instance has no Pixel Data")
    buffer = io.BytesIO(dataset.PixelData)
    try:
        parse_basic_offsets(buffer)
        return media, b"".join(generate_fragments(buffer))
    except (ValueError, EOFError) as exc:
        raise Undecodable(f"the video's encapsulated Pixel Data is malformed: {exc}") from exc


def encapsulated_document(dataset: Dataset) -> tuple[str, bytes] | None:
    """The media type and bytes of an encapsulated document (PS3.3 C.24.2: Encapsulated
    Document (0042,0011) with its MIME Type (0042,0012)), which renders as itself
    (PS3.18 8.3.5.1: a PDF instance as application/pdf); None for other instances."""
    if "EncapsulatedDocument" not in dataset:
        return None
    media = str(dataset.get("MIMETypeOfEncapsulatedDocument", "") or PDF).strip().lower()
    data = bytes(dataset.EncapsulatedDocument)
    length = dataset.get("EncapsulatedDocumentLength")
    if media == PDF and data.endswith(b"\x00") and length is None:
        # The value is padded to even length (PS3.5 7.1.1); a PDF ends at %%EOF.
        data = data[:-1]
    elif isinstance(length, int) and 0 <= length <= len(data):
        data = data[:length]
    return media, data


# --- the VOI (PS3.3 C.11.2) -----------------------------------------------------------------


def instance_window(dataset: Dataset) -> Window | None:
    """The instance's first Window Center/Width with its VOI LUT Function (C.11.2.1.2), looked
    up in the per-frame functional groups of an enhanced instance too; None when it has
    none."""
    source: Any = dataset
    if "WindowCenter" not in dataset or "WindowWidth" not in dataset:
        source = _functional_group_item(dataset, "FrameVOILUTSequence")
        if source is None:
            return None
    center, width = _first(source.get("WindowCenter")), _first(source.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = str(source.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    return Window(center, width, function)


def _voi(
    dataset: Dataset, values: np.ndarray[Any, Any], window: Window | None
) -> np.ndarray[Any, Any]:
    """Modality values to 0-255 (floating point)."""
    chosen = window or instance_window(dataset)
    if chosen is not None:
        return apply_window(values, chosen)
    table = _voi_lut_table(dataset)
    if table is not None:
        first, bits, lut = table
        index = np.clip(np.rint(values) - first, 0, len(lut) - 1).astype(np.int64)
        return lut[index] * (255.0 / (2**bits - 1))
    # No window anywhere: the frame's own range (PS3.18 8.3.5.1.3 leaves the choice to the
    # origin server; min/max shows every value).
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) * (255.0 / (high - low))


def apply_window(values: np.ndarray[Any, Any], window: Window) -> np.ndarray[Any, Any]:
    """The VOI LUT Functions of PS3.3 C.11.2.1.2 onto an output range 0-255."""
    c, w = window.center, window.width
    if window.function == "SIGMOID":  # C.11.2.1.3.1
        with np.errstate(over="ignore"):  # exp overflowing to inf is 0, as it should be
            return 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    if window.function == "LINEAR_EXACT":  # C.11.2.1.3.2
        return np.clip((values - c) / w + 0.5, 0.0, 1.0) * 255.0
    # LINEAR (C.11.2.1.2.1): width at least 1, centre and width offset by 0.5 and 1, so
    # that a width of 1 is a threshold at the centre.
    if w <= 1.0:
        return (values > c - 0.5).astype(np.float64) * 255.0
    return np.clip((values - (c - 0.5)) / (w - 1.0) + 0.5, 0.0, 1.0) * 255.0


def _voi_lut_table(dataset: Dataset) -> tuple[int, int, np.ndarray[Any, Any]] | None:
    """The first item of the VOI LUT Sequence (C.11.2.1.1): first mapped value, bits, table."""
    sequence = dataset.get("VOILUTSequence")
    if not sequence:
        return None
    item = sequence[0]
    try:
        count, first, bits = (int(v) for v in item.LUTDescriptor)
        raw = item.LUTData
    except (AttributeError, ValueError, TypeError):
        return None
    if isinstance(raw, bytes | bytearray):
        lut = np.frombuffer(raw, dtype="<u2" if bits > 8 else "u1").astype(np.float64)
    else:
        lut = np.asarray(raw, dtype=np.float64).reshape(-1)
    count = count or 65536  # 0 means 2**16 entries (C.11.1.1.1)
    if len(lut) < count or bits <= 0:
        return None
    if first >= 2**15 and int(dataset.get("PixelRepresentation", 0)) == 1:
        first -= 2**16  # the first value is signed for signed pixels (C.11.1.1.1)
    return first, bits, lut[:count]


# --- helpers ---------------------------------------------------------------------------------


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value[0]) if _is_multi(value) else float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return number if math.isfinite(number) else None


def _is_multi(value: Any) -> bool:
    return not isinstance(value, str | bytes) and hasattr(value, "__getitem__")


def _functional_group_item(dataset: Dataset, name: str) -> Dataset | None:
    """``name``'s first item in the Shared, else the first Per-frame, Functional Groups
    (PS3.3 C.7.6.16)."""
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = dataset.get(group)
        if items and name in items[0] and items[0][name].value:
            item: Dataset = items[0][name].value[0]
            return item
    return None


def _palette_bits(dataset: Dataset) -> int:
    descriptor = dataset.get("RedPaletteColorLookupTableDescriptor")
    try:
        return 16 if descriptor is None else int(descriptor[2])
    except (TypeError, ValueError, IndexError):
        return 16


def _to_8_bits(values: np.ndarray[Any, Any], bits: int) -> np.ndarray[Any, Any]:
    if bits <= 8:
        return values.astype(np.uint8)
    return (values.astype(np.uint32) >> (bits - 8)).clip(0, 255).astype(np.uint8)


def _float_pixels(dataset: Dataset) -> bool:
    return "FloatPixelData" in dataset or "DoubleFloatPixelData" in dataset


def _box(region: Region, width: int, height: int) -> tuple[int, int, int, int]:
    left = round(region.left * width)
    top = round(region.top * height)
    right = max(round(region.right * width), left + 1)
    bottom = max(round(region.bottom * height), top + 1)
    return left, top, min(right, width), min(bottom, height)


def _fitted(image: Image.Image, columns: int, rows: int) -> Image.Image:
    """Scaled to fit within columns x rows, aspect kept (``viewport``, PS3.18 8.3.5.1.1)."""
    columns = columns or image.width
    rows = rows or image.height
    scale = min(columns / image.width, rows / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
