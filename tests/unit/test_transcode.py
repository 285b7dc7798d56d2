"""The pure transcoding rules and the awkward sources (vna/dicom/transcode.py): which syntax
is chosen and why one is refused; big endian, colour-by-plane, mislabelled implicit VR and
deflated files come out with the same pixel values; lossy output says so."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from vna.dicom import transcode as tc

LOSSLESS = list(tc.PRODUCIBLE)


@pytest.mark.parametrize(
    ("stored", "acceptable", "allow_lossy", "expected"),
    [
        # The stored syntax costs nothing.
        (
            tc.JPEG_LS_LOSSLESS,
            [(tc.EXPLICIT, 1.0), (tc.JPEG_LS_LOSSLESS, 0.1)],
            False,
            tc.JPEG_LS_LOSSLESS,
        ),
        # Decoding before encoding, whatever the quality values.
        (tc.J2K_LOSSLESS, [(tc.HTJ2K_RPCL, 1.0), (tc.IMPLICIT, 0.2)], False, tc.IMPLICIT),
        # Native to native is a header re-encoding.
        (tc.IMPLICIT, [(tc.RLE, 1.0), (tc.EXPLICIT, 0.5)], False, tc.EXPLICIT),
        # Equal cost: the higher quality, then the order given.
        (tc.IMPLICIT, [(tc.EXPLICIT, 0.4), (tc.EXPLICIT, 0.9)], False, tc.EXPLICIT),
        # Lossy from lossless only when allowed.
        (tc.EXPLICIT, [(tc.J2K, 1.0)], True, tc.J2K),
        # Lossy stored: its own syntax as stored, or decoded.
        (tc.JPEG_BASELINE, [(tc.JPEG_BASELINE, 1.0)], False, tc.JPEG_BASELINE),
        (tc.JPEG_BASELINE, [(tc.EXPLICIT, 1.0)], False, tc.EXPLICIT),
    ],
)
def test_the_cheapest_acceptable_syntax_is_chosen(
    stored: str, acceptable: list[tuple[str, float]], allow_lossy: bool, expected: str
) -> None:
    assert tc.choose(stored, acceptable, allow_lossy=allow_lossy) == expected


@pytest.mark.parametrize(
    ("stored", "target", "said"),
    [
        (tc.EXPLICIT, tc.J2K, "allow_lossy is off"),
        (tc.EXPLICIT, tc.JPEG_BASELINE, "no encoder for the lossy"),
        (tc.JPEG_BASELINE, tc.J2K, "already lossy"),
        ("1.2.840.10008.1.2.4.102", tc.EXPLICIT, "no decoder"),  # MPEG-4 video
        (tc.EXPLICIT, "1.2.3.4", "cannot produce"),
    ],
)
def test_a_syntax_that_cannot_be_made_says_why(stored: str, target: str, said: str) -> None:
    reasons = tc.choose(stored, [(target, 1.0)])
    assert isinstance(reasons, list) and said in reasons[0] and target in reasons[0]


def test_pixel_facts_foresee_what_the_encoders_refuse() -> None:
    one_bit = tc.PixelFacts(bits_allocated=1, photometric="MONOCHROME2", has_pixels=True)
    assert "not 1" in tc.choose(tc.EXPLICIT, [(tc.RLE, 1)], facts=one_bit)[0]
    assert tc.choose(tc.EXPLICIT, [(tc.IMPLICIT, 1)], facts=one_bit) == tc.IMPLICIT
    floats = tc.facts_of({"00280100": {"vr": "US", "Value": [32]}}, True, 0x7FE00008)
    assert "does not have" in tc.choose(tc.EXPLICIT, [(tc.J2K_LOSSLESS, 1)], facts=floats)[0]


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_bigendian.dcm",  # 16-bit, big endian
        "SC_rgb_small_odd_big_endian.dcm",  # 8-bit colour in swapped OW words, odd size
        "rtdose_expb.dcm",  # 32-bit big endian
        "ExplVR_BigEnd.dcm",  # colour-by-plane, big endian
        "SC_rgb_rle_16bit_2frame.dcm",  # two colour RLE frames, 16-bit
        "SC_rgb_jpeg.dcm",  # says explicit VR, is implicit
        "image_dfl.dcm",  # deflated
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS, signed
    ],
)
def test_awkward_sources_keep_their_pixel_values(name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    data = open(path, "rb").read()
    reference = pydicom.dcmread(path).pixel_array
    made = 0
    for target in tc.PRODUCIBLE:
        try:
            out = tc.transcode(data, target)
        except tc.CannotTranscode:
            continue  # 1-bit, 32-bit...: refused with the reason, never wrong
        got = pydicom.dcmread(io.BytesIO(out))
        assert got.file_meta.TransferSyntaxUID == target
        assert np.array_equal(got.pixel_array, reference), (name, target)
        made += 1
    assert made >= 3


def test_deflated_output_is_raw_deflate_after_an_uncompressed_file_meta() -> None:
    path = get_testdata_file("CT_small.dcm")
    out = tc.transcode(open(path, "rb").read(), tc.DEFLATED)
    start = 144 + int.from_bytes(out[140:144], "little")
    body = zlib.decompressobj(-zlib.MAX_WBITS).decompress(out[start:])
    ds = pydicom.dcmread(io.BytesIO(tc.transcode(out, tc.EXPLICIT)))
    # The inflated data set is the Explicit VR LE one, element by element.
    assert body.startswith(b"\x08\x00")
    assert np.array_equal(ds.pixel_array, pydicom.dcmread(path).pixel_array)


def test_lossy_output_says_so_and_keeps_earlier_values() -> None:
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "5"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    tc.transcode_dataset(ds, tc.JPEG_LS_NEAR, allow_lossy=True)
    assert ds.LossyImageCompression == "01"
    assert list(ds.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_14495_1"]
    assert float(ds.LossyImageCompressionRatio[0]) == 5
    assert float(ds.LossyImageCompressionRatio[1]) > 1
    assert ds.SOPInstanceUID == pydicom.dcmread(path).SOPInstanceUID
    with pytest.raises(tc.CannotTranscode, match="allow_lossy"):
        tc.transcode_dataset(pydicom.dcmread(path), tc.J2K)


def test_decoded_lossy_data_still_says_it_was_lossy() -> None:
    path = get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")  # JPEG baseline, YCbCr
    ds = pydicom.dcmread(path)
    del ds.LossyImageCompression  # a sender that did not say
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    got = pydicom.dcmread(io.BytesIO(tc.transcode(buffer.getvalue(), tc.EXPLICIT)))
    assert got.LossyImageCompression == "01"
    assert got.PhotometricInterpretation == "RGB"
