"""Frame codecs (vna.dicom.pixel_codecs) and the pixel pack (vna.storage.pixelpack): every
lossless codec gives back the native frame byte for byte, over the pixel layouts the archive
meets (8 and 16 bits, signed and sign-extended, 12 of 16 bits, colour by pixel and by plane);
values above Bits Stored are refused before encoding; a pack rebuilds the original, reads a
range by decoding only the segments that hold it, and refuses damage."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vna.dicom import pixel_codecs as pc
from vna.dicom.pixel_codecs import NotRepresentable, PixelInfo
from vna.errors import StorageError
from vna.storage import pixelpack

needs_htj2k = pytest.mark.skipif(
    not pc.htj2k_encoder_available(), reason="HTJ2K encoding needs imagecodecs"
)
SYNTAXES = [
    pc.JPEG_LS_LOSSLESS,
    pc.JPEG_2000_LOSSLESS,
    pc.RLE_LOSSLESS,
    pytest.param(pc.HTJ2K_LOSSLESS, marks=needs_htj2k),
    pytest.param(pc.HTJ2K_LOSSLESS_RPCL, marks=needs_htj2k),
]


def frame_of(info: PixelInfo, seed: int = 1) -> bytes:
    """A smooth-ish frame within Bits Stored, in the native layout of ``info``."""
    rng = np.random.default_rng(seed)
    n = info.rows * info.columns * info.samples_per_pixel
    if info.pixel_representation:
        low, high = -(1 << (info.bits_stored - 1)), (1 << (info.bits_stored - 1)) - 1
    else:
        low, high = 0, (1 << info.bits_stored) - 1
    ramp = np.linspace(low, high, n)
    values = np.clip(ramp + rng.normal(0, 3, n), low, high).astype(np.int64)
    values[:4] = [low, high, low, high]  # the extremes, sign extension included
    dtype: Any = {
        (8, 0): np.uint8,
        (8, 1): np.int8,
        (16, 0): np.dtype("<u2"),
        (16, 1): np.dtype("<i2"),
    }[(info.bits_allocated, info.pixel_representation)]
    return values.astype(dtype).tobytes()


INFOS = {
    "ct-signed-16": PixelInfo(32, 33, 1, 16, 16, 1, "MONOCHROME2"),
    "ct-12-of-16": PixelInfo(33, 32, 1, 16, 12, 0, "MONOCHROME2"),
    "signed-12-of-16": PixelInfo(32, 40, 1, 16, 12, 1, "MONOCHROME2"),
    "mono1-8": PixelInfo(37, 32, 1, 8, 8, 0, "MONOCHROME1"),
    "rgb-by-pixel": PixelInfo(32, 34, 3, 8, 8, 0, "RGB", 0),
    "rgb-by-plane": PixelInfo(32, 34, 3, 8, 8, 0, "RGB", 1),
    "rgb-16-by-plane": PixelInfo(32, 32, 3, 16, 16, 0, "RGB", 1),
}


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("name", list(INFOS))
def test_every_codec_gives_back_the_native_frame(name: str, syntax: str) -> None:
    info = INFOS[name]
    frame = frame_of(info)
    coded = pc.encode_frame(frame, info, syntax)
    assert coded != frame
    assert pc.decode_frame(coded, info, syntax) == frame


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_bits_above_bits_stored_are_refused_before_encoding(syntax: str) -> None:
    info = INFOS["ct-12-of-16"]
    pixels = np.frombuffer(frame_of(info), dtype="<u2").copy()
    pixels[5] |= 0x8000
    with pytest.raises(NotRepresentable, match="above Bits Stored"):
        pc.encode_frame(pixels.tobytes(), info, syntax)
    # Signed data that is not sign-extended into the unused bits is refused too.
    signed = INFOS["signed-12-of-16"]
    raw = np.frombuffer(frame_of(signed), dtype="<i2").copy()
    raw[0] = 0x0FFF  # -1 in 12 bits, not sign-extended
    with pytest.raises(NotRepresentable):
        pc.encode_frame(raw.tobytes(), signed, syntax)


@pytest.mark.parametrize(
    ("info", "why"),
    [
        (PixelInfo(4, 4, 1, 32, 32, 0, "MONOCHROME2"), "Bits Allocated 32"),
        (PixelInfo(4, 4, 1, 1, 1, 0, "MONOCHROME2"), "Bits Allocated 1"),
        (PixelInfo(4, 4, 3, 8, 8, 0, "YBR_FULL_422"), "YBR_FULL_422"),
        (PixelInfo(4, 4, 2, 8, 8, 0, "MONOCHROME2"), "Samples per Pixel 2"),
    ],
)
def test_layouts_no_codec_takes_are_refused(info: PixelInfo, why: str) -> None:
    with pytest.raises(NotRepresentable, match=why):
        pc.encode_frame(b"\0" * max(info.frame_size, 1), info, pc.JPEG_LS_LOSSLESS)


@needs_htj2k
def test_htj2k_codestreams_carry_tlm_markers_and_decode_under_either_uid() -> None:
    """The RPCL syntax (PS3.5 A.4.11) asks for TLM marker segments (0xFF55): the encoder
    writes them, so one codestream is valid HTJ2K Lossless and HTJ2K Lossless RPCL."""
    info = INFOS["ct-12-of-16"]
    coded = pc.encode_frame(frame_of(info), info, pc.HTJ2K_LOSSLESS_RPCL)
    assert b"\xff\x55" in coded[: coded.index(b"\xff\x90")]  # TLM in the main header
    for uid in (pc.HTJ2K_LOSSLESS, pc.HTJ2K_LOSSLESS_RPCL):
        assert pc.decode_frame(coded, info, uid) == frame_of(info)


def test_jpeg_2000_refuses_images_too_small_for_its_resolutions() -> None:
    info = PixelInfo(31, 64, 1, 8, 8, 0, "MONOCHROME2")
    with pytest.raises(NotRepresentable, match="at least 32 x 32"):
        pc.encode_frame(frame_of(info), info, pc.JPEG_2000_LOSSLESS)


def test_a_frame_of_the_wrong_size_and_an_unknown_syntax_are_errors() -> None:
    info = INFOS["mono1-8"]
    with pytest.raises(NotRepresentable, match="expected 1184"):
        pc.encode_frame(b"\0" * 10, info, pc.JPEG_LS_LOSSLESS)
    with pytest.raises(pc.CodecUnavailable):
        pc.encode_frame(frame_of(info), info, "1.2.840.10008.1.2.4.50")
    with pytest.raises(pc.CodecError):
        pc.decode_frame(b"not a codestream", info, pc.JPEG_2000_LOSSLESS)


def original(frames: int, info: PixelInfo, header: bytes, trailer: bytes) -> tuple[bytes, int]:
    pixels = b"".join(frame_of(info, seed=i) for i in range(frames))
    return header + pixels + trailer, len(header)


@pytest.mark.parametrize("codec", ["jpeg-ls", "jpeg2000"])
def test_a_pack_rebuilds_the_original_and_reads_ranges(codec: str) -> None:
    info = INFOS["ct-12-of-16"]
    header = bytes(range(256)) * 1200  # more than one zstd segment (CHUNK is 256 KiB)
    data, offset = original(4, info, header, b"\0" + b"\xfe\xff\xdd\xe0" * 3)
    blob = pixelpack.pack(
        data, offset, len(data) - offset, 4, info, pixelpack.CODEC_SYNTAXES[codec]
    )
    assert pixelpack.unpack(blob) == data
    index = pixelpack.read_index(blob, "k")
    assert index.codec == codec and index.size == len(data)
    assert [s.kind for s in index.segments].count("f") == 4

    # A range inside frame 3 needs that segment alone.
    start = offset + 2 * info.frame_size + 10
    first, last = index.segments_for(start, 100)
    assert last - first == 1 and index.segments[first].kind == "f"
    seg = index.segments[first]
    stored = blob[seg.stored_start : seg.stored_start + seg.stored_length]
    (decoded,) = pixelpack.decode_segments(stored, index, first, last, "k")
    assert decoded[10:110] == data[start : start + 100]

    # The codestream of frame 2, without decoding.
    at, length = pixelpack.frame_payload(index, 2)
    frame2 = pc.decode_frame(blob[at : at + length], info, index.syntax)
    assert frame2 == data[offset + info.frame_size : offset + 2 * info.frame_size]
    with pytest.raises(StorageError, match="no frame 5"):
        pixelpack.frame_payload(index, 5)


def test_a_damaged_pack_is_refused_never_served() -> None:
    info = INFOS["mono1-8"]
    data, offset = original(2, info, b"HEADER" * 50, b"")
    blob = pixelpack.pack(data, offset, len(data) - offset, 2, info, pc.JPEG_LS_LOSSLESS)
    index = pixelpack.read_index(blob, "k")
    seg = index.frames[1]
    damaged = bytearray(blob)
    damaged[seg.stored_start + seg.stored_length // 2] ^= 0x01
    with pytest.raises(StorageError):
        pixelpack.unpack(bytes(damaged), "k")
    with pytest.raises(StorageError, match=r"truncated|no index"):
        pixelpack.unpack(blob[:-3], "k")
    bad_index = bytearray(blob)
    bad_index[-FOOTER_OFFSET] ^= 0x01
    with pytest.raises(StorageError, match="damaged index"):
        pixelpack.unpack(bytes(bad_index), "k")
    assert zlib.crc32(data) == zlib.crc32(pixelpack.unpack(blob))


FOOTER_OFFSET = pixelpack.FOOTER_SIZE + 2


def test_pixel_data_that_does_not_hold_its_frames_is_not_packed() -> None:
    info = INFOS["mono1-8"]
    data, offset = original(1, info, b"H" * 10, b"")
    with pytest.raises(NotRepresentable, match="does not hold 2 frame"):
        pixelpack.pack(data, offset, len(data) - offset, 2, info, pc.JPEG_LS_LOSSLESS)


def info_of(ds, planar: int | None = None) -> PixelInfo:
    return PixelInfo(
        ds.Rows,
        ds.Columns,
        ds.SamplesPerPixel,
        ds.BitsAllocated,
        ds.BitsStored,
        ds.PixelRepresentation,
        str(ds.PhotometricInterpretation),
        ds.get("PlanarConfiguration", 0) if planar is None else planar,
    )


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"],
)
def test_frames_other_systems_coded_decode_to_the_native_pixels(
    name: str, pydicom_test_dir: Path
) -> None:
    """Codestreams written elsewhere (pydicom's test files, signed 16-bit MR) decode to the
    samples of the uncompressed original, in its native layout."""
    import pydicom
    from pydicom.encaps import generate_frames

    native = pydicom.dcmread(pydicom_test_dir / "MR_small.dcm")
    coded = pydicom.dcmread(pydicom_test_dir / name)
    (frame,) = generate_frames(coded.PixelData, number_of_frames=1)
    syntax = str(coded.file_meta.TransferSyntaxUID)
    assert pc.decode_frame(frame, info_of(coded), syntax) == native.PixelData
    # And our own coding of the native frame decodes the same.
    assert (
        pc.decode_frame(
            pc.encode_frame(native.PixelData, info_of(native), syntax), info_of(native), syntax
        )
        == native.PixelData
    )


def test_an_rgb_rle_frame_decodes_colour_by_pixel_or_by_plane(pydicom_test_dir: Path) -> None:
    import pydicom
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(pydicom_test_dir / "SC_rgb_rle.dcm")
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    by_pixel = ds.pixel_array  # (rows, columns, 3)
    assert pc.decode_frame(frame, info_of(ds, 0), pc.RLE_LOSSLESS) == by_pixel.tobytes()
    assert (
        pc.decode_frame(frame, info_of(ds, 1), pc.RLE_LOSSLESS)
        == np.ascontiguousarray(by_pixel.transpose(2, 0, 1)).tobytes()
    )
