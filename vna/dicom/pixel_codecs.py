"""Lossless image codecs for one frame of native pixel data: encode and decode.

Pure (no settings, no storage): bytes in, bytes out.  Used by compression at rest
(vna.storage.pixelpack) and by transcoding on retrieve.

A *native frame* is one frame of uncompressed Pixel Data as it sits in a little-endian
transfer syntax: ``bits_allocated`` 8 or 16 per sample, samples interleaved (planar
configuration 0) or colour-by-plane (1), signed values sign-extended to ``bits_allocated``.
``decode_frame`` returns exactly that layout, so ``decode_frame(encode_frame(f))`` equals
``f`` whenever ``f`` is a valid frame (no bits set above Bits Stored beyond the sign
extension).  A frame that a lossless codec cannot represent (junk in the unused high bits,
overlays in them, more than 16 bits) raises ``NotRepresentable`` before any encoding: the
caller keeps the data as it is.

The codec packages (all permissively licensed, none GPL):

* JPEG-LS: ``pyjpegls`` (CharLS, BSD-3; pydicom's own JPEG-LS plugin, maintained by the
  pydicom team).  CharLS has no signed samples: signed data is coded as its Bits Stored
  two's-complement pattern, as pydicom does, and sign-extended on decode.
* JPEG 2000: ``pylibjpeg-openjpeg`` (OpenJPEG, BSD-2; pydicom's JPEG 2000 plugin,
  maintained by the pydicom team), reversible 5/3 wavelet, no colour transform; it always
  codes 6 resolutions, so images under 32 x 32 pixels are NotRepresentable.
* HTJ2K: OpenJPEG decodes HTJ2K but cannot encode it; ``imagecodecs`` (BSD-3, over OpenJPH,
  BSD-2, the reference HTJ2K implementation) encodes it in-process: reversible, RPCL order,
  with TLM marker segments, so one codestream serves HTJ2K Lossless (1.2.840.10008.1.2.4.201)
  and HTJ2K Lossless RPCL (1.2.840.10008.1.2.4.202).  :func:`htj2k_codestream` is the one
  call of the HTJ2K encoder in the archive (transcoding uses it too).  Signed samples are
  coded as their Bits Stored pattern, unsigned, as for JPEG-LS, and sign-extended on decode.
  Decoding uses OpenJPH too (twice as fast as OpenJPEG's HTJ2K decoder), OpenJPEG without it.
* RLE Lossless: pydicom's own encoder and decoder (MIT).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Final

import numpy as np

from vna.errors import VnaError

RLE_LOSSLESS: Final = "1.2.840.10008.1.2.5"
JPEG_LS_LOSSLESS: Final = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS: Final = "1.2.840.10008.1.2.4.90"
HTJ2K_LOSSLESS: Final = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL: Final = "1.2.840.10008.1.2.4.202"

#: Syntaxes this module decodes and encodes.
LOSSLESS_SYNTAXES: Final = frozenset(
    {RLE_LOSSLESS, JPEG_LS_LOSSLESS, JPEG_2000_LOSSLESS, HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL}
)
#: Photometric interpretations whose native samples a lossless codec carries unchanged.
_PHOTOMETRICS: Final = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_RCT"}
)


class CodecError(VnaError):
    """A codec failed on data it should handle (corrupt codestream, encoder error)."""


class NotRepresentable(CodecError):
    """The frame cannot go through the codec losslessly as native pixel data (why is in the
    message): the data is kept as it is."""


class CodecUnavailable(CodecError):
    """The codec's package or tool is not installed."""


@dataclass(frozen=True)
class PixelInfo:
    """The Image Pixel attributes that describe one native frame (PS3.3 C.7.6.3)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int = 0

    @property
    def frame_size(self) -> int:
        """Bytes of one native frame."""
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8

    def to_json(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "columns": self.columns,
            "samples_per_pixel": self.samples_per_pixel,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": self.pixel_representation,
            "photometric_interpretation": self.photometric_interpretation,
            "planar_configuration": self.planar_configuration,
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> PixelInfo:
        return cls(**doc)  # type: ignore[arg-type]


def check_codable(info: PixelInfo) -> None:
    """Raise NotRepresentable when no lossless codec here takes frames described by ``info``."""
    if info.bits_allocated not in (8, 16):
        raise NotRepresentable(f"Bits Allocated {info.bits_allocated} (codecs take 8 or 16)")
    if not 2 <= info.bits_stored <= info.bits_allocated:
        raise NotRepresentable(
            f"Bits Stored {info.bits_stored} with Bits Allocated {info.bits_allocated}"
        )
    if info.samples_per_pixel not in (1, 3):
        raise NotRepresentable(f"Samples per Pixel {info.samples_per_pixel}")
    if info.photometric_interpretation not in _PHOTOMETRICS:
        raise NotRepresentable(
            f"Photometric Interpretation {info.photometric_interpretation} is not coded losslessly"
        )
    if info.pixel_representation not in (0, 1) or info.planar_configuration not in (0, 1):
        raise NotRepresentable("Pixel Representation or Planar Configuration out of range")
    if info.rows < 1 or info.columns < 1 or info.rows > 65535 or info.columns > 65535:
        raise NotRepresentable(f"{info.rows} x {info.columns} pixels")


def _check_j2k_size(info: PixelInfo) -> None:
    # pylibjpeg-openjpeg always codes 6 resolutions (5 wavelet levels), which needs at least
    # 32 pixels each way.
    if info.rows < 32 or info.columns < 32:
        raise NotRepresentable(
            f"{info.rows} x {info.columns} pixels: JPEG 2000 here needs at least 32 x 32"
        )


_HAS_IMAGECODECS: Final = importlib.util.find_spec("imagecodecs") is not None


def htj2k_encoder_available() -> bool:
    return _HAS_IMAGECODECS


def encode_frame(frame: bytes, info: PixelInfo, syntax_uid: str) -> bytes:
    """One native frame coded in ``syntax_uid`` (a codestream, or an RLE frame), lossless."""
    check_codable(info)
    pixels = _checked_array(frame, info)
    if syntax_uid == JPEG_LS_LOSSLESS:
        return _jpeg_ls_encode(pixels, info)
    if syntax_uid == JPEG_2000_LOSSLESS:
        _check_j2k_size(info)
        return _openjpeg_encode(pixels, info)
    if syntax_uid in (HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL):
        return _htj2k_encode(pixels, info)
    if syntax_uid == RLE_LOSSLESS:
        # RLE segments are colour by plane whatever the layout: the encoder takes samples
        # colour by pixel.
        return _rle_encode(pixels.tobytes(), info)
    raise CodecUnavailable(f"no lossless encoder for transfer syntax {syntax_uid}")


def decode_frame(data: bytes | memoryview, info: PixelInfo, syntax_uid: str) -> bytes:
    """The native frame (layout of ``info``) that ``data``, coded in ``syntax_uid``, holds."""
    check_codable(info)
    try:
        if syntax_uid == JPEG_LS_LOSSLESS:
            import jpeg_ls

            decoded, _ = jpeg_ls.decode_buffer(bytes(data))
            dtype = np.uint8 if info.bits_stored <= 8 else np.dtype("<u2")
            pixels = np.frombuffer(decoded, dtype=dtype)
            pixels = pixels.reshape(_interleaved_shape(info))
        elif syntax_uid in (HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL) and _HAS_IMAGECODECS:
            # OpenJPH through imagecodecs: about twice OpenJPEG's HTJ2K decoding speed
            # (measured on a 512 x 512 CT frame: 375 against 197 MB/s per CPU second).
            import imagecodecs

            pixels = imagecodecs.htj2k_decode(bytes(data))
            if pixels.ndim == 3 and pixels.shape[0] == info.samples_per_pixel > 1:
                # Components without the colour transform come back component by component.
                pixels = pixels.transpose(1, 2, 0)
        elif syntax_uid in (JPEG_2000_LOSSLESS, HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL):
            import openjpeg

            pixels = openjpeg.decode(bytes(data))
        elif syntax_uid == RLE_LOSSLESS:
            return _rle_decode(data, info)
        else:
            raise CodecUnavailable(f"no lossless decoder for transfer syntax {syntax_uid}")
    except CodecError:
        raise
    except (ValueError, RuntimeError) as exc:
        raise CodecError(f"{syntax_uid} frame does not decode: {exc}") from exc
    return _native_bytes(pixels, info)


# --- native layout <-> arrays ----------------------------------------------------------------


def _dtype(info: PixelInfo) -> np.dtype[np.generic]:
    signed = info.pixel_representation == 1
    if info.bits_allocated == 8:
        return np.dtype(np.int8 if signed else np.uint8)
    return np.dtype("<i2" if signed else "<u2")


def _interleaved_shape(info: PixelInfo) -> tuple[int, ...]:
    if info.samples_per_pixel == 1:
        return (info.rows, info.columns)
    return (info.rows, info.columns, info.samples_per_pixel)


def _checked_array(frame: bytes, info: PixelInfo) -> np.ndarray:
    """The frame as a (rows, columns[, samples]) array, colour-by-pixel; NotRepresentable when
    a value uses bits above Bits Stored (other than its sign extension)."""
    if len(frame) != info.frame_size:
        raise NotRepresentable(f"frame of {len(frame)} bytes, expected {info.frame_size}")
    pixels = np.frombuffer(frame, dtype=_dtype(info))
    if info.samples_per_pixel > 1 and info.planar_configuration == 1:
        pixels = pixels.reshape(info.samples_per_pixel, info.rows, info.columns)
        pixels = np.ascontiguousarray(pixels.transpose(1, 2, 0))
    else:
        pixels = pixels.reshape(_interleaved_shape(info))
    if info.bits_stored < info.bits_allocated:
        if info.pixel_representation == 1:
            low, high = -(1 << (info.bits_stored - 1)), (1 << (info.bits_stored - 1)) - 1
            bad = bool(pixels.size) and (pixels.min() < low or pixels.max() > high)
        else:
            bad = bool(pixels.size) and int(pixels.max()) >> info.bits_stored != 0
        if bad:
            raise NotRepresentable(
                f"values use bits above Bits Stored ({info.bits_stored} of"
                f" {info.bits_allocated}): overlay or padding data in the high bits"
            )
    return pixels


def _native_bytes(pixels: np.ndarray, info: PixelInfo) -> bytes:
    """Decoded samples back to the native layout: sign-extended, Bits Allocated wide."""
    if pixels.size != info.rows * info.columns * info.samples_per_pixel:
        raise CodecError(f"decoded {pixels.size} samples, expected {info.frame_size} bytes")
    pixels = pixels.reshape(_interleaved_shape(info))
    if info.pixel_representation == 1:
        # Decoders give either signed values or the unsigned Bits Stored pattern (JPEG-LS).
        wide = pixels.astype(np.int32)
        bits = info.bits_stored
        wide = wide & ((1 << bits) - 1)
        wide = np.where(wide >= 1 << (bits - 1), wide - (1 << bits), wide)
        out = wide.astype(_dtype(info))
    else:
        out = pixels.astype(_dtype(info), copy=False)
    if info.samples_per_pixel > 1 and info.planar_configuration == 1:
        out = out.transpose(2, 0, 1)
    return np.ascontiguousarray(out).tobytes()


def _unsigned_pattern(pixels: np.ndarray, info: PixelInfo) -> np.ndarray:
    """Signed samples as their Bits Stored two's-complement pattern (unsigned)."""
    mask = (1 << info.bits_stored) - 1
    wide = pixels.astype(np.int32) & mask
    return wide.astype(np.uint8 if info.bits_allocated == 8 else np.dtype("<u2"))


# --- the codecs ----------------------------------------------------------------------------


def _jpeg_ls_encode(pixels: np.ndarray, info: PixelInfo) -> bytes:
    try:
        import jpeg_ls
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise CodecUnavailable("JPEG-LS needs the pyjpegls package") from exc
    if info.pixel_representation == 1:
        pixels = _unsigned_pattern(pixels, info)
    if info.bits_stored <= 8 and pixels.dtype.itemsize == 2:
        pixels = pixels.astype(np.uint8)
    try:
        return bytes(
            jpeg_ls.encode_buffer(
                pixels.tobytes(),
                info.rows,
                info.columns,
                info.samples_per_pixel,
                info.bits_stored,
                interleave_mode=2 if info.samples_per_pixel > 1 else None,
            )
        )
    except (ValueError, RuntimeError) as exc:
        raise CodecError(f"JPEG-LS encoding failed: {exc}") from exc


def _openjpeg_encode(pixels: np.ndarray, info: PixelInfo) -> bytes:
    try:
        import openjpeg
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise CodecUnavailable("JPEG 2000 needs the pylibjpeg-openjpeg package") from exc
    try:
        # Photometric 0 (unspecified) and no MCT: samples are coded as they are, whatever the
        # colour space, so decoding gives them back unchanged.
        return bytes(
            openjpeg.encode(
                pixels, bits_stored=info.bits_stored, photometric_interpretation=0, use_mct=False
            )
        )
    except (ValueError, RuntimeError) as exc:
        raise CodecError(f"JPEG 2000 encoding failed: {exc}") from exc


def _htj2k_encode(pixels: np.ndarray, info: PixelInfo) -> bytes:
    # Signed data is coded as its Bits Stored two's-complement pattern, unsigned, as CharLS
    # does for JPEG-LS in DICOM; decode_frame sign-extends it, and DICOM decoders apply Pixel
    # Representation (pydicom's J2K sign correction does).
    if info.pixel_representation == 1:
        pixels = _unsigned_pattern(pixels, info)
    if info.bits_stored <= 8 and pixels.dtype.itemsize == 2:
        pixels = pixels.astype(np.uint8)
    return htj2k_codestream(pixels)


def htj2k_codestream(pixels: np.ndarray, rgb: bool = False) -> bytes:
    """One frame (rows x columns [x samples], colour by pixel; the dtype carries sign and
    width) as a reversible HTJ2K codestream in RPCL order with TLM marker segments (PS3.5
    A.4.11); ``rgb``: with the reversible colour transform.  The one place the HTJ2K encoder
    is called."""
    try:
        import imagecodecs  # imported here: only HTJ2K output needs it
    except ImportError as exc:
        raise CodecUnavailable("HTJ2K encoding needs the imagecodecs package") from exc
    try:
        return bytes(
            imagecodecs.htj2k_encode(
                np.ascontiguousarray(pixels), reversible=True, tlm=True, rgb=rgb
            )
        )
    except Exception as exc:  # imagecodecs raises its own error types per codec
        raise CodecError(f"HTJ2K encoding failed: {exc}") from exc


def _rle_encode(frame: bytes, info: PixelInfo) -> bytes:
    from pydicom.pixels.encoders import RLELosslessEncoder

    try:
        return bytes(
            RLELosslessEncoder.encode(
                frame,
                rows=info.rows,
                columns=info.columns,
                samples_per_pixel=info.samples_per_pixel,
                bits_allocated=info.bits_allocated,
                bits_stored=info.bits_stored,
                pixel_representation=info.pixel_representation,
                photometric_interpretation=info.photometric_interpretation,
                planar_configuration=0,
                number_of_frames=1,
                byteorder="<",
            )
        )
    except (ValueError, RuntimeError) as exc:
        raise CodecError(f"RLE encoding failed: {exc}") from exc


def _rle_decode(data: bytes | memoryview, info: PixelInfo) -> bytes:
    # pydicom's frame decoder (not re-exported, but the one its RLE plugin uses) returns the
    # samples colour-by-plane, each little endian.
    from pydicom.pixels.decoders.rle import _rle_decode_frame

    try:
        planes = _rle_decode_frame(
            bytes(data), info.rows, info.columns, info.samples_per_pixel, info.bits_allocated
        )
    except (ValueError, RuntimeError) as exc:
        raise CodecError(f"RLE frame does not decode: {exc}") from exc
    if len(planes) != info.frame_size:
        raise CodecError(f"RLE frame decodes to {len(planes)} bytes, expected {info.frame_size}")
    if info.samples_per_pixel == 1 or info.planar_configuration == 1:
        return bytes(planes)
    pixels = np.frombuffer(planes, dtype=_dtype(info)).reshape(
        info.samples_per_pixel, info.rows, info.columns
    )
    return np.ascontiguousarray(pixels.transpose(1, 2, 0)).tobytes()
