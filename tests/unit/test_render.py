"""Rendered images (vna/dicom/render.py) against what numpy computes from pydicom's own
pixel_array, written out here from PS3.3 C.11 rather than through the module's helpers."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from vna.dicom.render import (
    JPEG,
    PNG,
    CannotRender,
    NotRenderable,
    Region,
    RenderOptions,
    Undecodable,
    Window,
    encapsulated_document,
    render,
)


def _file(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path)


def _png(ds: Dataset, frame: int = 0, **options: Any) -> np.ndarray[Any, Any]:
    data = render(ds, frame, RenderOptions(media_type=PNG, **options))
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(Image.open(io.BytesIO(data)))


def _linear(x: np.ndarray[Any, Any], c: float, w: float) -> np.ndarray[Any, Any]:
    # PS3.3 C.11.2.1.2.1, the three cases written out, output range 0-255.
    low = x <= c - 0.5 - (w - 1) / 2
    high = x > c - 0.5 + (w - 1) / 2
    mid = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    return np.where(low, 0.0, np.where(high, 255.0, mid))


def _expected_gray(ds: Dataset, frame: int = 0, window: tuple[float, float] | None = None):
    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[frame]
    x = pixels.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0)
    )
    if window is None and "WindowCenter" in ds:
        window = (_first(ds.WindowCenter), _first(ds.WindowWidth))
    if window is not None:
        y = _linear(x, *window)
    else:
        y = (x - x.min()) / (x.max() - x.min()) * 255
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 255 - y
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _first(value: Any) -> float:
    return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # signed 16-bit, rescale intercept -1024, a window in the file
        "MR_small.dcm",  # 16-bit without a window: min/max
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless (pylibjpeg-openjpeg)
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless (pyjpegls)
        "MR_small_bigendian.dcm",
        "JPEG2000.dcm",
        "liver_1frame.dcm",
        "image_dfl.dcm",  # deflated
        "rtdose.dcm",  # 15 frames, 32-bit, dose grid scaling is not a Modality LUT: min/max
    ],
)
def test_grayscale_matches_the_modality_lut_and_window_computed_from_pixel_array(name):
    ds = _file(name)
    got = _png(ds)
    want = _expected_gray(ds)
    assert got.shape == want.shape
    # Rounding may differ by one level between float paths; nothing more.
    assert int(np.abs(got.astype(int) - want.astype(int)).max()) <= 1
    assert got.std() > 0, "a rendering with one grey level shows nothing"


def test_the_instances_first_window_applies_to_modality_values():
    ds = _file("CT_small.dcm")  # rescale intercept -1024: the window is in HU
    ds.WindowCenter = [40, 300]
    ds.WindowWidth = [400, 1500]
    got = _png(ds)
    want = _expected_gray(ds, window=(40, 400))
    assert int(np.abs(got.astype(int) - want.astype(int)).max()) <= 1
    assert got.std() > 0


def test_a_modality_lut_sequence_maps_stored_values():
    ds = _synthetic(np.array([[0, 1, 2, 3]], dtype=np.uint16).tobytes(), rows=1, columns=4)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]
    item.ModalityLUTType = "HU"
    item.LUTData = [0, 1000, 2000, 4000]
    ds.ModalityLUTSequence = [item]
    want = np.rint(np.array([[0, 1000, 2000, 4000]]) / 4000 * 255).astype(np.uint8)
    assert np.array_equal(_png(ds), want)


def test_a_window_asked_for_replaces_the_instances_own():
    ds = _file("CT_small.dcm")
    got = _png(ds, window=Window(40, 400))
    want = _expected_gray(ds, window=(40, 400))
    assert int(np.abs(got.astype(int) - want.astype(int)).max()) <= 1
    assert not np.array_equal(got, _png(ds))


def test_later_frames_of_a_multiframe_render_their_own_pixels():
    ds = _file("rtdose.dcm")
    frames = [_png(ds, i) for i in (0, 7, 14)]
    for index, got in zip((0, 7, 14), frames, strict=True):
        assert int(np.abs(got.astype(int) - _expected_gray(ds, index).astype(int)).max()) <= 1
    assert not np.array_equal(frames[0], frames[2])
    with pytest.raises(NotRenderable, match="frame 16"):
        render(ds, 15, RenderOptions())


def test_monochrome1_is_inverted_after_the_window():
    ds = _file("CT_small.dcm")
    inverted = copy.deepcopy(ds)
    inverted.PhotometricInterpretation = "MONOCHROME1"
    normal, got = _png(ds), _png(inverted)
    assert np.array_equal(got, 255 - normal)
    assert np.array_equal(got, _expected_gray(inverted))


def test_bits_stored_and_signed_pixels_are_honoured():
    # 12 bits stored in 16 allocated, signed: -2048..2047 with garbage above bit 11 that a
    # renderer reading whole words would show.
    values = np.array([[-2048, -1, 0, 2047]], dtype=np.int16)
    garbage = (values.view(np.uint16) & 0x0FFF) | 0xA000
    ds = _synthetic(garbage.tobytes(), rows=1, columns=4, bits_stored=12, signed=True)
    got = _png(ds)
    want = np.rint((values.astype(float) + 2048) / 4095 * 255).astype(np.uint8)
    assert np.array_equal(got, want)


def test_rgb_of_either_planar_configuration_and_ybr_render_as_pydicoms_rgb():
    for name in ("SC_rgb_rle.dcm", "examples_rgb_color.dcm", "SC_ybr_full_422_uncompressed.dcm"):
        ds = _file(name)
        want = ds.pixel_array  # pydicom converts YBR to RGB (as_rgb)
        bits = int(ds.BitsStored)
        want = (want.astype(np.uint32) >> max(bits - 8, 0)).astype(np.uint8)
        assert np.array_equal(_png(ds), want), name
    # The same colours stored planar (PS3.3 C.7.6.3.1.3: R plane, G plane, B plane).
    ds = _file("examples_rgb_color.dcm")
    assert int(ds.PlanarConfiguration) == 0
    planar = copy.deepcopy(ds)
    planar.PixelData = np.ascontiguousarray(ds.pixel_array.transpose(2, 0, 1)).tobytes()
    planar.PlanarConfiguration = 1
    assert np.array_equal(_png(planar), _png(ds))


def test_palette_colour_looks_up_each_value_in_its_16_bit_palette():
    ds = _file("examples_palette.dcm")
    index = ds.pixel_array.astype(np.int64)
    want = np.empty((*index.shape, 3), dtype=np.uint8)
    for channel, colour in enumerate(("Red", "Green", "Blue")):
        descriptor = ds[f"{colour}PaletteColorLookupTableDescriptor"].value
        lut = np.frombuffer(ds[f"{colour}PaletteColorLookupTableData"].value, dtype="<u2")
        entries = lut[np.clip(index - int(descriptor[1]), 0, len(lut) - 1)]
        want[..., channel] = (entries >> 8).astype(np.uint8)
    assert np.array_equal(_png(ds), want)


def test_jpeg_quality_viewport_and_region():
    ds = _file("CT_small.dcm")  # 128 x 128
    small = render(ds, 0, RenderOptions(media_type=JPEG, quality=30))
    large = render(ds, 0, RenderOptions(media_type=JPEG, quality=95))
    assert small.startswith(b"\xff\xd8") and len(small) < len(large)
    decoded = np.asarray(Image.open(io.BytesIO(large)).convert("L")).astype(int)
    assert np.abs(decoded - _expected_gray(ds).astype(int)).mean() < 3
    assert _png(ds, viewport=(64, 32)).shape == (32, 32)
    assert _png(ds, viewport=(256, 256)).shape == (256, 256)
    crop = _png(ds, region=Region(0.5, 0.0, 1.0, 0.25))
    assert np.array_equal(crop, _expected_gray(ds)[0:32, 64:128])


def test_jpeg_is_the_baseline_jpeg_pillow_writes_of_the_same_picture():
    """JPEG goes through imagecodecs (it releases the GIL while encoding) but is the image
    Pillow's libjpeg-turbo writes with its defaults: same quality scale, same 4:2:0 colour
    subsampling, the same bytes, for grayscale and colour."""
    for name, quality in (("CT_small.dcm", 90), ("CT_small.dcm", 7), ("SC_rgb_rle.dcm", 75)):
        ds = _file(name)
        shown = _png(ds)
        pillow = io.BytesIO()
        Image.fromarray(shown).save(pillow, format="JPEG", quality=quality)
        got = render(ds, 0, RenderOptions(media_type=JPEG, quality=quality))
        assert got == pillow.getvalue(), (name, quality)
        assert Image.open(io.BytesIO(got)).mode == ("RGB" if shown.ndim == 3 else "L")


def test_what_cannot_be_decoded_or_rendered_is_refused_with_a_reason():
    ds = _file("CT_small.dcm")
    unknown = copy.deepcopy(ds)
    unknown.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"
    with pytest.raises(Undecodable, match=r"1\.2\.3\.4\.5\.6"):
        render(unknown, 0, RenderOptions())
    truncated = _file("MR_truncated.dcm")
    with pytest.raises(Undecodable, match="could not be decoded"):
        render(truncated, 0, RenderOptions())
    with pytest.raises(NotRenderable, match="no Pixel Data"):
        render(_file("test-SR.dcm"), 0, RenderOptions())
    with pytest.raises(CannotRender, match="image/gif"):
        render(ds, 0, RenderOptions(media_type="image/gif"))


def test_an_encapsulated_pdf_renders_as_the_document_it_holds():
    ds = _synthetic(b"", rows=1, columns=1)
    del ds.PixelData
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n\x00"
    assert encapsulated_document(ds) == ("application/pdf", b"%PDF-1.4\n%%EOF\n")
    assert encapsulated_document(_file("CT_small.dcm")) is None


def _synthetic(
    pixels: bytes, *, rows: int, columns: int, bits_stored: int = 16, signed: bool = False
) -> Dataset:
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = pixels
    return ds


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_RLE.dcm",
        "examples_palette.dcm",
        "examples_ybr_color.dcm",  # 30 JPEG baseline frames, YBR_FULL_422
        "rtdose.dcm",
        "SC_rgb_rle_2frame.dcm",
        "JPEG2000.dcm",
    ],
)
def test_a_frame_renders_from_the_header_and_its_own_bytes_as_from_the_whole_object(name):
    from vna.dicom.frames import cut_frame, object_layout
    from vna.rendering import _render_frame_values

    path = get_testdata_file(name)
    assert path is not None
    data = Path(path).read_bytes()
    ds = pydicom.dcmread(path)
    layout = object_layout(data, str(ds.file_meta.TransferSyntaxUID))
    assert layout is not None and layout.pixels is not None
    pixels = layout.pixels
    last = pixels.number_of_frames
    header = data[: pixels.starts[0] if pixels.encapsulated else pixels.value_offset]
    values = []
    for number in (1, last):
        start, length = pixels.span(number)
        values.append(cut_frame(pixels, number, data[start : start + length]))
    options = RenderOptions(media_type=PNG)
    got = _render_frame_values(header, pixels.encapsulated, [1, last], values, options)
    assert [n for n, _ in got] == [1, last]
    for (number, image), index in zip(got, (0, last - 1), strict=True):
        assert image == render(ds, index, options), (name, number)


@pytest.mark.parametrize(
    ("allocated", "stored", "signed", "photometric", "slope", "intercept", "window"),
    [
        (16, 12, False, "MONOCHROME2", 1, -1024, (40, 400)),  # CT, garbage above bit 11
        (16, 16, True, "MONOCHROME2", 1, 0, (0, 2000)),
        (16, 10, True, "MONOCHROME1", 2.5, 7, (100, 300)),
        (8, 7, False, "MONOCHROME2", 1, 0, (64, 40)),
        (8, 8, True, "MONOCHROME1", 1, 0, (0, 1)),  # a threshold (width 1)
    ],
)
def test_a_native_grayscale_frame_renders_as_decoding_and_computing_each_pixel_would(
    allocated, stored, signed, photometric, slope, intercept, window
):
    # The table look-up of native grayscale frames against the decoder path (pydicom's
    # pixel_array, Bits Stored and sign applied by it), high bits filled with noise.
    from vna.dicom.render import _native_grayscale, decode_frame, display_pixels

    rng = np.random.default_rng(7)
    dtype = "<u2" if allocated == 16 else "u1"
    raw = rng.integers(0, 1 << allocated, size=2 * 24 * 32, dtype=np.uint32).astype(dtype)
    ds = _synthetic(raw.tobytes(), rows=24, columns=32, bits_stored=stored, signed=signed)
    ds.BitsAllocated, ds.HighBit = allocated, stored - 1
    ds.NumberOfFrames = 2
    ds.PhotometricInterpretation = photometric
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.WindowCenter, ds.WindowWidth = window
    for frame in (0, 1):
        fast = _native_grayscale(ds, frame, None)
        assert fast is not None
        slow = display_pixels(ds, decode_frame(ds, frame), None)
        assert fast.dtype == np.uint8 and fast.shape == (24, 32)
        np.testing.assert_array_equal(fast, slow)
    asked = Window(10.0, 50.0, "SIGMOID")
    np.testing.assert_array_equal(
        _native_grayscale(ds, 1, asked), display_pixels(ds, decode_frame(ds, 1), asked)
    )
