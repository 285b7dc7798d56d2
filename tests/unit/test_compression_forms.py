"""Which instances the lifecycle stores in an image codec's pixel pack, and which it keeps in
zstd, with the reason (lifecycle.compression: build_pack, and the checked form the job uses).
Whatever the outcome, nothing is ever altered: a pack rebuilds the file byte for byte."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from lifecycle.compression import _pack_checked, build_pack
from tests.factory import ct_study, part10
from vna.dicom.pixel_codecs import NotRepresentable
from vna.storage import pixelpack

CODECS = ["jpeg-ls", "jpeg2000"]


def image(size: int = 64, bits: int = 16, stored: int = 12, signed: int = 0):
    (ds,) = ct_study(series=1, slices=1, size=size)
    rng = np.random.default_rng(5)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
        bits,
        stored,
        stored - 1,
        signed,
    )
    low, high = (
        (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    )
    # A smooth ramp with mild noise, as image content compresses (noise alone does not).
    y, x = np.mgrid[0:size, 0:size]
    # CT-like values (air to bone) when signed: crossing zero, as real CT does.
    a, b = (max(low, -1024), min(high, 3071)) if signed else (low, high)
    ramp = a + (b - a) * (x + y) / (2 * size)
    values = np.clip(ramp + rng.normal(0, 2, ramp.shape), low, high).astype(np.int64).ravel()
    dtype = (
        {8: np.uint8, 16: np.dtype("<u2")}[bits] if not signed else {8: np.int8, 16: "<i2"}[bits]
    )
    ds.PixelData = values.astype(dtype).tobytes()
    return ds


def check(data: bytes, ts: str, codec: str) -> bytes:
    return _pack_checked(data, hashlib.sha256(data).hexdigest(), ts, codec, 3)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("case", "ds"),
    [
        ("12 of 16 bits", image()),
        ("signed 16 bits", image(stored=16, signed=1)),
        ("signed 12 of 16, sign-extended", image(signed=1)),
        ("8 bits, odd length: a padding byte after the pixels", image(size=65, bits=8, stored=8)),
    ],
)
def test_images_are_packed_and_rebuild_byte_for_byte(codec: str, case: str, ds) -> None:
    for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = ts
        data = part10(ds)
        blob = check(data, ts, codec)
        assert pixelpack.unpack(blob) == data, case
        assert len(blob) < len(data)


def test_a_trailing_element_after_the_pixel_data_is_kept() -> None:
    ds = image()
    ds.add_new(0xFFFAFFFA, "SQ", [])  # Digital Signatures Sequence: after Pixel Data
    data = part10(ds)
    assert pixelpack.unpack(check(data, ExplicitVRLittleEndian, "jpeg-ls")) == data


@pytest.mark.parametrize(
    ("case", "make", "why"),
    [
        ("overlay bits above Bits Stored", "overlay", "above Bits Stored"),
        ("32-bit samples", "wide", "Bits Allocated 32"),
        ("float pixel data", "float", "no native Pixel Data|no Pixel Data"),
        ("no pixel data", "none", "no Pixel Data"),
        ("flat image: zstd is smaller", "flat", "zstd is smaller"),
    ],
)
def test_what_the_codec_cannot_carry_is_refused_with_the_reason(
    case: str, make: str, why: str
) -> None:
    ds = image()
    if make == "overlay":
        pixels = np.frombuffer(ds.PixelData, dtype="<u2").copy()
        pixels[100:200] |= 0x1000  # an overlay plane in bit 12
        ds.PixelData = pixels.tobytes()
    elif make == "wide":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
        ds.PixelData = np.arange(64 * 64, dtype="<u4").tobytes()
    elif make == "float":
        del ds.PixelData
        ds.BitsAllocated = 32
        ds.FloatPixelData = np.linspace(0, 1, 64 * 64, dtype="<f4").tobytes()
    elif make == "none":
        del ds.PixelData
    else:
        ds.PixelData = b"\0" * (64 * 64 * 2)
    data = part10(ds)
    with pytest.raises(NotRepresentable, match=why):
        check(data, ExplicitVRLittleEndian, "jpeg-ls")


def test_big_endian_and_a_wrong_digest_are_refused() -> None:
    data = part10(image())
    with pytest.raises(NotRepresentable, match="not native little endian"):
        build_pack(data, "1.2.840.10008.1.2.2", "jpeg-ls", 3)
    with pytest.raises(Exception, match="catalogued SHA-256"):
        _pack_checked(data, "0" * 64, ExplicitVRLittleEndian, "jpeg-ls", 3)
