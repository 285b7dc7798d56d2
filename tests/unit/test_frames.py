"""vna.dicom.frames: the frame and bulk-value layout of a Part 10 object, and frames cut from
the ranges it names, compared with what pydicom reads from the same file."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels import unpack_bits
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from vna.dicom.frames import ObjectLayout, cut_frame, object_layout, parse_frame_list
from vna.errors import InvalidRequest, NotFound


def part10(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian)
    return out.getvalue()


def image(rows: int, columns: int, frames: int, bits: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    return ds


def frames_of(data: bytes, syntax: str) -> list[bytes]:
    layout = object_layout(data, syntax)
    assert layout is not None and layout.pixels is not None
    p = layout.pixels
    out = []
    for n in range(1, p.number_of_frames + 1):
        start, length = p.span(n)
        out.append(cut_frame(p, n, data[start : start + length]))
    return out


def test_one_bit_frames_that_start_inside_a_byte() -> None:
    # 3 x 5 pixels: 15 bits a frame, so frames 2.. start inside a byte (PS3.5 8.1.1).
    ds = image(3, 5, 7, 1)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 2, size=(7, 3, 5), dtype=np.uint8)
    bits = np.packbits(pixels.ravel(), bitorder="little").tobytes()
    ds.PixelData = bits + b"\x00" * (len(bits) % 2)
    data = part10(ds)
    cut = frames_of(data, ExplicitVRLittleEndian)
    assert len(cut) == 7
    for n, frame in enumerate(cut):
        assert len(frame) == 2  # ceil(15 / 8): the frame alone, padding bits cleared
        assert (unpack_bits(frame)[:15].reshape(3, 5) == pixels[n]).all()
        assert frame[1] >> 7 == 0


def test_native_frames_of_odd_length_in_implicit_vr() -> None:
    ds = image(3, 3, 5, 8)
    values = bytes(range(45))
    ds.PixelData = values + b"\x00"  # odd value padded to even length
    data = part10(ds, ImplicitVRLittleEndian)
    assert frames_of(data, ImplicitVRLittleEndian) == [values[i * 9 : i * 9 + 9] for i in range(5)]


def jpeg_like(n: int, size: int) -> bytes:
    # A codestream that begins with SOI and ends with EOI, as the marker scan expects.
    return b"\xff\xd8" + bytes([n]) * size + b"\xff\xd9"


@pytest.mark.parametrize("has_bot", [True, False])
@pytest.mark.parametrize("fragments", [1, 3])
def test_encapsulated_frames_with_and_without_basic_offset_table(
    has_bot: bool, fragments: int
) -> None:
    frames = [jpeg_like(n, 31 + n) for n in range(6)]
    ds = image(4, 4, 6, 8)
    ds.PixelData = encapsulate(frames, fragments_per_frame=fragments, has_bot=has_bot)
    ds["PixelData"].VR = "OB"
    data = part10(ds, JPEGBaseline8Bit)
    cut = frames_of(data, JPEGBaseline8Bit)
    # Fragments keep even lengths: a frame of odd length comes back with its pad byte.
    assert [c.rstrip(b"\x00") for c in cut] == frames


def test_encapsulated_frames_with_extended_offset_table() -> None:
    frames = [jpeg_like(n, 100 + 2 * n) for n in range(4)]
    ds = image(4, 4, 4, 8)
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(
        frames
    )
    ds["PixelData"].VR = "OB"
    data = part10(ds, JPEGBaseline8Bit)
    assert frames_of(data, JPEGBaseline8Bit) == frames


def test_frames_of_every_pydicom_test_file_match_pydicom() -> None:
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in get_testdata_files("*.dcm"):
            try:
                ds = pydicom.dcmread(path)
                syntax = str(ds.file_meta.TransferSyntaxUID)
                data = open(path, "rb").read()
            except Exception:
                continue
            layout = object_layout(data, syntax)
            if layout is None or layout.pixels is None:
                continue
            p = layout.pixels
            # Every frame the file claims is found (YBR_FULL_422 once counted none).
            claimed = str(ds.get("NumberOfFrames") or 1)
            if claimed.isdigit():
                assert p.number_of_frames == int(claimed), path
            if p.encapsulated:
                expected = list(generate_frames(ds.PixelData, number_of_frames=p.number_of_frames))
            elif p.frame_bits % 8 == 0:
                raw = ds[p.tag].value
                size = p.frame_bits // 8
                expected = [raw[i * size : (i + 1) * size] for i in range(p.number_of_frames)]
            else:
                continue
            assert frames_of(data, syntax) == expected, path
            checked += 1
    assert checked > 40


def test_bulk_values_top_level_and_in_sequence_items() -> None:
    ds = image(2, 2, 1, 8)
    ds.PixelData = b"\x01\x02\x03\x04"
    document = bytes(range(256)) * 300  # 76800 bytes: above the threshold
    ds.EncapsulatedDocument = document
    wave = Dataset()
    wave.WaveformBitsAllocated = 16
    wave.WaveformData = b"\x05\x06" * 2000
    ds.WaveformSequence = Sequence([Dataset(), wave])
    ds.ImageComments = "short"
    data = part10(ds)
    layout = object_layout(data, ExplicitVRLittleEndian)
    assert layout is not None
    doc = layout.bulk_value(("00420011",))
    assert data[doc.offset : doc.offset + doc.length] == document
    w = layout.bulk_value(("54000100", "1", "54001010"))
    assert w.vr == "OW" and data[w.offset : w.offset + w.length] == wave.WaveformData
    assert [b.path for b in layout.bulk] == [("00420011",), ("54000100", "1", "54001010")]
    with pytest.raises(NotFound):
        layout.bulk_value(("00280010",))
    assert ObjectLayout.from_json(layout.to_json()) == layout


def test_frame_past_number_of_frames_is_not_found_naming_it() -> None:
    ds = image(2, 2, 3, 8)
    ds.PixelData = bytes(12)
    layout = object_layout(part10(ds), ExplicitVRLittleEndian)
    assert layout is not None and layout.pixels is not None
    with pytest.raises(NotFound, match=r"frame 4 .* 3 frame"):
        layout.pixels.span(4)


def test_unmappable_syntaxes_have_no_layout() -> None:
    assert object_layout(b"\x00" * 200, "1.2.840.10008.1.2.1.99") is None
    assert object_layout(b"not dicom", ExplicitVRLittleEndian) is None


def test_frame_list() -> None:
    assert parse_frame_list("3,1,3, 2") == [3, 1, 3, 2]
    for bad in ("", "0", "1,,2", "-1", "a", "1.5"):
        with pytest.raises(InvalidRequest):
            parse_frame_list(bad)


def test_big_endian_and_deflated_objects_have_frames_through_pydicom() -> None:
    from vna.dicom.frames import parsed_pixels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, little in (("MR_small_bigendian.dcm", "MR_small.dcm"), ("image_dfl.dcm", None)):
            (path,) = get_testdata_files(name)
            data = open(path, "rb").read()
            parsed = parsed_pixels(data)
            assert parsed is not None
            layout, value = parsed
            start, length = layout.span(1)
            frame = cut_frame(layout, 1, value[start : start + length])
            if little is not None:
                # Native frames go out little endian, whatever the stored byte order.
                assert frame == pydicom.dcmread(get_testdata_files(little)[0]).PixelData
            else:
                assert frame == pydicom.dcmread(path).PixelData
