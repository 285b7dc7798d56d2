"""Transcoding a stored instance into another transfer syntax (PS3.5 8, 10, A.4, A.5).

Pure: Part 10 bytes (or a data set, or one frame's bytes with its header) in, bytes out; no
I/O, no settings.  The service that runs this off the event loop and caches what it made is
``vna/transcoding.py``; DIMSE senders call :func:`transcode_dataset` from their own threads.

What the archive can produce (:data:`PRODUCIBLE`) and at what cost (:func:`cost`) is decided
here too, so that WADO-RS negotiation, C-MOVE/C-GET and forwarding agree: the stored syntax
costs nothing (the stored bytes go out untouched), another native syntax a re-encoding of the
header, a compressed one a decode and/or an encode.  Lossy output from lossless data is
produced only when the caller allows it (``[transcoding] allow_lossy``), and then Lossy Image
Compression (0028,2110), its Ratio (0028,2112) and Method (0028,2114) say so (PS3.3
C.7.6.1.1.5).  Pixel values never change in a lossless transcode: a frame that does not decode
is an error naming the reason, never other bytes.

Codecs: pydicom 3's ``decompress`` / ``compress`` with the installed plugins (pylibjpeg and
pylibjpeg-openjpeg, pyjpegls, python-gdcm; never pylibjpeg-libjpeg, GPL) for RLE, JPEG-LS and
JPEG 2000; pydicom has no HTJ2K encoder, so :func:`encode_htj2k_frame` encodes HTJ2K one frame
at a time through :func:`vna.dicom.pixel_codecs.htj2k_codestream` (imagecodecs over OpenJPH).
"""

from __future__ import annotations

import copy
import importlib.util
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from vna.dicom.pixel_codecs import CodecError, htj2k_codestream
from vna.errors import CannotTranscode, TranscodeFailed

__all__ = ["CannotTranscode", "TranscodeFailed"]

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"

#: Our File Meta Information (PS3.10 7.1): who wrote a transcoded file.
IMPLEMENTATION_CLASS_UID = "2.25.68002370681520726140598087032854542478"
IMPLEMENTATION_VERSION_NAME = "VNA_0_1"

#: Syntaxes whose pixel data is not encapsulated.
NATIVE = frozenset({IMPLICIT, EXPLICIT, DEFLATED, BIG_ENDIAN})
#: Native syntaxes a file can be written in (big endian is retired, PS3.5 A.3: never made).
NATIVE_TARGETS = (EXPLICIT, IMPLICIT, DEFLATED)
#: Lossless encodings the archive can make.
LOSSLESS_ENCODINGS = (RLE, JPEG_LS_LOSSLESS, J2K_LOSSLESS, HTJ2K_LOSSLESS, HTJ2K_RPCL)
#: Every syntax the archive produces from any decodable stored data.
PRODUCIBLE = (*NATIVE_TARGETS, *LOSSLESS_ENCODINGS)
#: Lossy encodings the archive can make, only when allowed, with their Lossy Image
#: Compression Method (PS3.3 C.7.6.1.1.5.1, Defined Terms).
LOSSY_ENCODINGS = {JPEG_LS_NEAR: "ISO_14495_1", J2K: "ISO_15444_1"}
#: Stored syntaxes whose pixel data has lost information (any of them may be sent as stored).
LOSSY = frozenset(
    {
        JPEG_BASELINE,
        JPEG_EXTENDED,
        JPEG_LS_NEAR,
        J2K,
        "1.2.840.10008.1.2.4.93",
        HTJ2K,
        "1.2.840.10008.1.2.4.111",
        "1.2.840.10008.1.2.4.112",
        *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),
    }
)
#: Stored encapsulated syntaxes the installed decoders read.
DECODABLE = frozenset(
    {
        RLE,
        JPEG_BASELINE,
        JPEG_EXTENDED,
        JPEG_LOSSLESS,
        JPEG_LOSSLESS_SV1,
        JPEG_LS_LOSSLESS,
        JPEG_LS_NEAR,
        J2K_LOSSLESS,
        J2K,
        HTJ2K_LOSSLESS,
        HTJ2K_RPCL,
        HTJ2K,
    }
)

#: The work each target costs beyond decoding: a native re-encoding is cheap, deflate more,
#: then the image codecs from fastest to slowest (measured on CT slices).
_ENCODE_COST = {
    EXPLICIT: 1,
    IMPLICIT: 1,
    DEFLATED: 3,
    RLE: 4,
    JPEG_LS_LOSSLESS: 5,
    HTJ2K_RPCL: 5,
    HTJ2K_LOSSLESS: 5,
    J2K_LOSSLESS: 7,
    JPEG_LS_NEAR: 6,
    J2K: 8,
}
#: The encoder of each syntax, named: left to choose, pydicom would take python-gdcm's RLE
#: encoder, which aborts the process on some pixel data (a C++ exception past its binding).
_ENCODERS = {
    # pylibjpeg-rle (Rust) is about six times faster than pydicom's own Python encoder.
    RLE: "pylibjpeg" if importlib.util.find_spec("rle") is not None else "pydicom",
    JPEG_LS_LOSSLESS: "pyjpegls",
    JPEG_LS_NEAR: "pyjpegls",
    J2K_LOSSLESS: "pylibjpeg",
    J2K: "pylibjpeg",
}
#: Decoding stored compressed pixel data costs more than any re-encoding of native data.
_DECODE_COST = 10


def syntax_name(uid: str) -> str:
    name = UID(uid).name
    return f"{uid} ({name})" if name and name != uid else uid


@dataclass(frozen=True)
class PixelFacts:
    """What the encoders' limits depend on, known from the catalogue before any decoding."""

    #: Bits Allocated (0028,0100) of the Pixel Data; None when unknown.
    bits_allocated: int | None
    photometric: str
    #: Whether the instance has integer Pixel Data (7FE0,0010): Float Pixel Data encodes not.
    has_pixels: bool


def facts_of(metadata: dict[str, Any], has_pixel_data: bool, pixel_tag: int | None) -> PixelFacts:
    """PixelFacts from an instance's DICOM JSON (as catalogued) and its pixel layout."""

    def first(tag: str) -> Any:
        try:
            return metadata[tag]["Value"][0]
        except (KeyError, IndexError, TypeError):
            return None

    bits = first("00280100")
    return PixelFacts(
        bits_allocated=int(bits) if isinstance(bits, (int, float)) else None,
        photometric=str(first("00280004") or ""),
        has_pixels=has_pixel_data and pixel_tag in (None, 0x7FE00010),
    )


def _encoder_refusal(stored: str, target: str, facts: PixelFacts) -> str | None:
    """Why the encoder of ``target`` will not take this pixel data, foreseen from its facts
    (so that a study is refused before its answer starts, not cut short in the middle)."""
    name = syntax_name(target)
    if not facts.has_pixels:
        return f"transfer syntax {name} encodes Pixel Data, which the instance does not have"
    if facts.bits_allocated is not None and facts.bits_allocated not in (8, 16):
        return (
            f"transfer syntax {name} is made from 8 or 16 bits allocated,"
            f" not {facts.bits_allocated}"
        )
    if stored in NATIVE and facts.photometric.startswith(("YBR_FULL_422", "YBR_PARTIAL")):
        return f"transfer syntax {name} is not made from native {facts.photometric} data"
    return None


def refusal(
    stored: str, target: str, *, allow_lossy: bool = False, facts: PixelFacts | None = None
) -> str | None:
    """Why ``target`` cannot be made from data stored in ``stored`` (with these pixel facts,
    when known); None when it can."""
    if target == stored:
        return None
    reason = _syntax_refusal(stored, target, allow_lossy)
    if reason is None and facts is not None and target not in NATIVE:
        reason = _encoder_refusal(stored, target, facts)
    return reason


def _syntax_refusal(stored: str, target: str, allow_lossy: bool) -> str | None:
    if stored not in NATIVE and stored not in DECODABLE:
        return (
            f"transfer syntax {syntax_name(target)} cannot be made from {syntax_name(stored)}:"
            " the archive has no decoder for it"
        )
    if target in PRODUCIBLE:
        return None
    if target in LOSSY_ENCODINGS:
        if stored in LOSSY:
            return (
                f"transfer syntax {syntax_name(target)} would compress already lossy data"
                f" ({syntax_name(stored)}) again"
            )
        if not allow_lossy:
            return (
                f"transfer syntax {syntax_name(target)} is lossy and the instance is stored"
                " lossless ([transcoding] allow_lossy is off)"
            )
        return None
    if target in LOSSY:
        return f"the archive has no encoder for the lossy transfer syntax {syntax_name(target)}"
    return f"the archive cannot produce transfer syntax {syntax_name(target)}"


def cost(stored: str, target: str) -> int:
    """Relative work to make ``target`` from ``stored`` (0: the stored bytes as they are)."""
    if target == stored:
        return 0
    decode = 0 if stored in NATIVE else _DECODE_COST
    if stored == DEFLATED or target == DEFLATED:
        decode += 1
    return decode + _ENCODE_COST.get(target, 50)


def choose(
    stored: str,
    acceptable: Sequence[tuple[str, float]],
    *,
    allow_lossy: bool = False,
    facts: PixelFacts | None = None,
) -> str | list[str]:
    """The cheapest syntax of ``acceptable`` (syntax, quality) that can be made from
    ``stored``; ties go to the higher quality, then the order given.  When none can, the
    reasons, one per syntax asked (for the 406)."""
    best: tuple[int, float, int, str] | None = None
    reasons = []
    for index, (syntax, quality) in enumerate(acceptable):
        if quality <= 0:
            continue
        reason = refusal(stored, syntax, allow_lossy=allow_lossy, facts=facts)
        if reason is not None:
            reasons.append(reason)
            continue
        key = (cost(stored, syntax), -quality, index, syntax)
        if best is None or key < best:
            best = key
    if best is None:
        return reasons or ["no transfer syntax was asked for"]
    return best[3]


# --- whole instances -------------------------------------------------------------------------


def transcode(data: bytes, target: str, *, allow_lossy: bool = False) -> bytes:
    """The Part 10 file ``data`` in transfer syntax ``target``: the same data set, pixel values
    unchanged (lossless targets), with File Meta Information of our making.  ``data`` itself
    when it is already in ``target``."""
    dataset = _read(data)
    stored = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    if stored == target:
        return data
    return write(transcode_dataset(dataset, target, allow_lossy=allow_lossy))


def transcode_dataset(dataset: Dataset, target: str, *, allow_lossy: bool = False) -> Dataset:
    """``dataset`` (read from a Part 10 file) changed to transfer syntax ``target``, in place:
    pixel data decoded and re-encoded as needed, File Meta Information updated.  Write it
    with :func:`write`, or hand it to pynetdicom (which encodes it in the context's syntax)."""
    meta = getattr(dataset, "file_meta", None)
    stored = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not stored:
        raise CannotTranscode("the instance names no transfer syntax (0002,0010)")
    reason = refusal(stored, target, allow_lossy=allow_lossy)
    if reason is not None:
        raise CannotTranscode(reason)
    if stored == target:
        return dataset
    if stored == BIG_ENDIAN:
        _to_little_endian(dataset)
    encapsulated = stored not in NATIVE
    has_pixels = "PixelData" in dataset
    if has_pixels and encapsulated:
        _decode(dataset, stored)
    if stored in LOSSY and has_pixels:
        # PS3.3 C.7.6.1.1.5: once lossy compressed, always said to be.
        dataset.LossyImageCompression = "01"
    if target in LOSSY_ENCODINGS or target in LOSSLESS_ENCODINGS:
        if not has_pixels:
            raise CannotTranscode(
                f"transfer syntax {syntax_name(target)} encodes Pixel Data, which the"
                " instance does not have (or holds as Float or Double Float Pixel Data)"
            )
        _encode(dataset, target)
    _set_meta(dataset, target)
    # The data set says it is encoded as its new syntax (pynetdicom refuses a data set whose
    # encoding and File Meta disagree), every element decoded first so that those read as
    # implicit VR have their VR to be written with.
    for _ in dataset.iterall():
        pass
    dataset.set_original_encoding(target == IMPLICIT, True, dataset.original_character_set)
    return dataset


def write(dataset: Dataset) -> bytes:
    """A data set as a Part 10 file in its File Meta's transfer syntax (Deflated: the data
    set after the File Meta Information deflated, PS3.5 A.5)."""
    target = str(dataset.file_meta.TransferSyntaxUID)
    # Every element decoded with its VR before writing: elements read as implicit VR from
    # a file that said explicit (pydicom reads such files) have no VR to write otherwise.
    for _ in dataset.iterall():
        pass
    out = io.BytesIO()
    if target == DEFLATED:
        dataset.file_meta.TransferSyntaxUID = UID(EXPLICIT)
        try:
            dataset.save_as(out, enforce_file_format=True)
        finally:
            dataset.file_meta.TransferSyntaxUID = UID(DEFLATED)
        whole = out.getvalue()
        start = _end_of_meta(whole)
        # PS3.5 A.5: the Deflate of RFC 1951 without a zlib header or checksum.  Level 1:
        # made while the client waits, about seven times faster than level 6 on CT for a
        # few per cent more bytes.
        packer = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = packer.compress(whole[start:]) + packer.flush()
        if len(body) % 2:
            body += b"\x00"  # PS3.5 A.5: padded to an even length
        return _meta_bytes(dataset) + body
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _read(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise TranscodeFailed(f"the stored instance could not be parsed: {exc}") from exc


#: Bytes per word of the binary VRs a big endian file holds swapped (PS3.5 7.3).
_WORDS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _to_little_endian(dataset: Dataset) -> None:
    """A data set read from Explicit VR Big Endian made ready to be written little endian:
    every element decoded (numbers then re-encode in the new byte order), the words of the
    binary values that pydicom keeps as bytes (Pixel Data OW among them) swapped."""
    for element in dataset.iterall():
        width = _WORDS.get(str(element.VR))
        if element.tag == 0x7FE00010 and width:
            # Pixel values are swapped whole, 32-bit ones too (how pydicom reads them); 8-bit
            # values in OW sit in swapped 16-bit words (PS3.5 A.3).
            width = max(int(dataset.get("BitsAllocated", 16) or 16) // 8, 2)
        if width and isinstance(element.value, bytes) and len(element.value) % width == 0:
            element.value = (
                np.frombuffer(element.value, dtype=f">u{width}").astype(f"<u{width}").tobytes()
            )
    dataset.set_original_encoding(False, True, dataset.original_character_set)
    # From here on the pixel data is read as little endian (pixel_array, the encoders).
    dataset.file_meta.TransferSyntaxUID = UID(EXPLICIT)


def _decode(dataset: Dataset, stored: str) -> None:
    try:
        # The same instance in another syntax: its SOP Instance UID stays (pydicom would make
        # a new one).  Colour JPEG data comes out as RGB (pydicom converts YCbCr and updates
        # Photometric Interpretation), the one colour space every native reader takes.
        dataset.decompress(as_rgb=True, generate_instance_uid=False)
    except Exception as exc:  # the plugins raise what they like on corrupt data
        raise TranscodeFailed(
            f"the stored pixel data ({syntax_name(stored)}) could not be decoded: {exc}"
        ) from exc


def _encode(dataset: Dataset, target: str) -> None:
    before = _pixel_bytes(dataset)
    _by_pixel(dataset)
    try:
        if target in (HTJ2K_RPCL, HTJ2K_LOSSLESS):
            # One encoder for both: an RPCL codestream with TLM is an HTJ2K lossless one.
            _compress_htj2k(dataset, target)
        elif target in (J2K_LOSSLESS, J2K):
            # RGB goes through the multiple-component transform, reversible for lossless,
            # and says so (PS3.3 C.7.6.3.1.2, PS3.5 8.2.4: YBR_RCT / YBR_ICT): what dcmtk and
            # GDCM write and every validator takes; decoders give RGB back.
            rgb = str(dataset.get("PhotometricInterpretation", "")) == "RGB"
            dataset.compress(
                target,
                generate_instance_uid=False,
                encoding_plugin=_ENCODERS[target],
                use_mct=rgb,
                j2k_cr=[10] if target == J2K else None,
            )
            if rgb:
                dataset.PhotometricInterpretation = "YBR_ICT" if target == J2K else "YBR_RCT"
        elif target == JPEG_LS_NEAR:
            dataset.compress(
                target, generate_instance_uid=False, encoding_plugin=_ENCODERS[target], jls_error=2
            )
        else:
            dataset.compress(target, generate_instance_uid=False, encoding_plugin=_ENCODERS[target])
    except CannotTranscode:
        raise
    except Exception as exc:  # pydicom and the plugins refuse what they cannot encode
        raise CannotTranscode(
            f"transfer syntax {syntax_name(target)} cannot be made from this instance's"
            f" pixel data: {exc}"
        ) from exc
    if int(dataset.get("SamplesPerPixel", 1) or 1) > 1:
        # PS3.5 8.2: colour-by-pixel in the encoded frames; a native source's Planar
        # Configuration 1 (colour-by-plane) must not be left to mislead decoders.
        dataset.PlanarConfiguration = 0
    method = LOSSY_ENCODINGS.get(target)
    if method is not None:
        after = sum(
            len(f) for f in generate_frames(dataset.PixelData, number_of_frames=_frames(dataset))
        )
        _mark_lossy(dataset, before / max(after, 1), method)


def _by_pixel(dataset: Dataset) -> None:
    """Native colour-by-plane pixel data (Planar Configuration 1) reordered colour-by-pixel:
    the encoders read the native bytes as by-pixel whatever the attribute says."""
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples == 1 or int(dataset.get("PlanarConfiguration", 0) or 0) != 1:
        return
    width = int(dataset.BitsAllocated) // 8
    if width not in (1, 2, 4):
        return  # the encoders refuse such data themselves, with the reason
    rows, cols, frames = int(dataset.Rows), int(dataset.Columns), _frames(dataset)
    size = rows * cols * samples * frames
    planes = np.frombuffer(bytes(dataset.PixelData), dtype=f"<u{width}")[:size]
    if planes.size != size:
        raise CannotTranscode("the native pixel data is shorter than its attributes say")
    by_pixel = planes.reshape(frames, samples, rows, cols).transpose(0, 2, 3, 1)
    dataset.PixelData = np.ascontiguousarray(by_pixel).tobytes()
    dataset.PlanarConfiguration = 0


def _mark_lossy(dataset: Dataset, ratio: float, method: str) -> None:
    """PS3.3 C.7.6.1.1.5: Lossy Image Compression 01, and one more value of Ratio and Method
    for this compression, after those of earlier ones."""
    ratios = [str(r) for r in _values(dataset.get("LossyImageCompressionRatio"))]
    methods = [str(m) for m in _values(dataset.get("LossyImageCompressionMethod"))]
    dataset.LossyImageCompression = "01"
    dataset.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"[:16]]
    dataset.LossyImageCompressionMethod = [*methods, method]


def _values(element: object) -> list[object]:
    if element is None:
        return []
    if isinstance(element, (list, tuple)) or type(element).__name__ == "MultiValue":
        return list(element)  # type: ignore[call-overload]
    return [element]


def _frames(dataset: Dataset) -> int:
    try:
        return max(int(dataset.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _pixel_bytes(dataset: Dataset) -> int:
    rows, cols = int(dataset.Rows), int(dataset.Columns)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    return rows * cols * samples * _frames(dataset) * ((int(dataset.BitsAllocated) + 7) // 8)


def _compress_htj2k(dataset: Dataset, target: str) -> None:
    """HTJ2K Lossless (RPCL) (PS3.5 A.4.9): each frame its own codestream, one fragment each,
    after a Basic Offset Table."""
    if int(dataset.BitsAllocated) not in (8, 16):
        raise CannotTranscode(
            f"transfer syntax {syntax_name(target)} takes 8 or 16 bits allocated,"
            f" not {dataset.BitsAllocated}"
        )
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR"):
        raise CannotTranscode(
            f"transfer syntax {syntax_name(target)} is not made from {photometric} data"
        )
    frames = _frames(dataset)
    array = dataset.pixel_array
    if frames == 1:
        array = array[np.newaxis, ...]
    bits_stored = int(dataset.get("BitsStored", dataset.BitsAllocated))
    signed = int(dataset.get("PixelRepresentation", 0)) == 1
    rgb = photometric == "RGB"
    encoded = [encode_htj2k_frame(array[i], bits_stored, signed, rgb) for i in range(frames)]
    dataset.PixelData = encapsulate(encoded, has_bot=True)
    element = dataset["PixelData"]
    element.VR = "OB"
    element.is_undefined_length = True
    if int(dataset.get("SamplesPerPixel", 1) or 1) > 1:
        dataset.PlanarConfiguration = 0
    if rgb:
        dataset.PhotometricInterpretation = "YBR_RCT"  # as for JPEG 2000 (PS3.5 8.2.4)


def encode_htj2k_frame(
    pixels: np.ndarray, bits_stored: int, signed: bool, rgb: bool = False
) -> bytes:
    """One frame (rows x columns [x samples], colour by pixel) as an HTJ2K lossless
    codestream in RPCL progression order with TLM markers (PS3.5 A.4.9); ``rgb``: with the
    reversible colour transform (the data set then says YBR_RCT)."""
    del bits_stored, signed  # the array's dtype carries both (sign-extended values)
    try:
        return htj2k_codestream(pixels, rgb=rgb)
    except CodecError as exc:
        raise CannotTranscode(f"the HTJ2K encoder refused the frame: {exc}") from exc


def _set_meta(dataset: Dataset, target: str) -> None:
    """File Meta Information of a file we wrote (PS3.10 7.1): its transfer syntax and our
    implementation; the group length is computed on writing."""
    old = getattr(dataset, "file_meta", None) or FileMetaDataset()
    meta = FileMetaDataset()
    # PS3.10 7.1: the SOP Class and Instance of the data set (a received file whose meta
    # said otherwise is corrected in what we write; the stored file keeps what it said).
    meta.MediaStorageSOPClassUID = dataset.get("SOPClassUID") or old.get("MediaStorageSOPClassUID")
    meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID") or old.get(
        "MediaStorageSOPInstanceUID"
    )
    meta.TransferSyntaxUID = UID(target)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle"):
        if keyword in old:
            setattr(meta, keyword, old.get(keyword))
    dataset.file_meta = meta


def _meta_bytes(dataset: Dataset) -> bytes:
    """Preamble, DICM and the File Meta Information group as written for this data set."""
    from pydicom.filewriter import write_file_meta_info

    out = pydicom.filebase.DicomBytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, dataset.file_meta, enforce_standard=True)
    return out.getvalue()


def _end_of_meta(data: bytes) -> int:
    """Offset of the first data set byte after the File Meta Information group."""
    # (0002,0000) UL, explicit VR: tag 4 + VR 2 + length 2 + value 4, right after DICM.
    length = int.from_bytes(data[140:144], "little")
    return 144 + length


# --- frames ------------------------------------------------------------------------------------


def transcode_frames(
    header: bytes, encapsulated: bool, values: Sequence[bytes], target: str, *, allow_lossy: bool
) -> list[bytes]:
    """Stored frames (``values``, each as the retriever cut it, with the instance's header
    up to its Pixel Data) as frames in ``target``: the little-endian native bytes of each
    frame for native targets (PS3.18 8.7.3.5.2), each frame's own codestream otherwise."""
    try:
        base = pydicom.dcmread(io.BytesIO(header), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise TranscodeFailed(f"the stored instance's header could not be parsed: {exc}") from exc
    out = []
    for value in values:
        one = copy.deepcopy(base)
        one.NumberOfFrames = 1
        if encapsulated:
            one.PixelData = encapsulate([value])
            one["PixelData"].VR = "OB"
            one["PixelData"].is_undefined_length = True
        else:
            one.PixelData = value
            one["PixelData"].VR = "OB" if int(one.BitsAllocated) <= 8 else "OW"
            # Native frames are handed over little endian (vna.dicom.frames).
            one.file_meta.TransferSyntaxUID = UID(EXPLICIT)
        transcode_dataset(one, target, allow_lossy=allow_lossy)
        if target in NATIVE:
            out.append(bytes(one.PixelData))
        else:
            (frame,) = generate_frames(one.PixelData, number_of_frames=1)
            out.append(frame)
    return out


def frames_of_file(data: bytes, numbers: Sequence[int], target: str) -> list[bytes]:
    """Frames ``numbers`` (1-based) of a Part 10 file written in ``target`` (by
    :func:`transcode`): native frames cut by their size, little endian; encapsulated frames
    as PS3.5 A.4 gives them."""
    dataset = _read(data)
    count = _frames(dataset)
    if target in NATIVE:
        value = bytes(dataset.PixelData)
        size = len(value) // count
        return [value[(n - 1) * size : n * size] for n in numbers]
    frames = list(generate_frames(dataset.PixelData, number_of_frames=count))
    return [frames[n - 1] for n in numbers]
