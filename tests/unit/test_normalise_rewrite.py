"""Writing a normalised instance (vna.dicom.rewrite) and deciding what an arriving version is
(vna.ingest.decision): the header changes, every other byte is the received one."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import pydicom
import pytest

from vna.config import SourceSettings
from vna.dicom.coercion import CoercionRule
from vna.dicom.normalise import normalise
from vna.dicom.parse import data_set_offset, read_dataset
from vna.dicom.rewrite import write_with_header
from vna.ingest.decision import Decision, Existing, decide

PROFILE = SourceSettings(
    name="H1",
    issuer_of_patient_id="HOSP1",
    coerce=(CoercionRule("set", "InstitutionName", "Hôpital Un"),),
)
NOW = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
# One file per encoding the rewrite must keep: explicit and implicit VR little endian, explicit
# big endian, deflated, encapsulated (JPEG, RLE, JPEG 2000), multi-frame, no pixel data.
FILES = [
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",
    "JPEG2000.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_rle_2frame.dcm",
    "rtplan.dcm",
]


def tail(path: Path, header_end: int) -> bytes:
    return path.read_bytes()[header_end:]


@pytest.mark.parametrize("name", FILES)
def test_rewrite_changes_the_header_and_copies_the_rest(name: str, tmp_path: Path) -> None:
    source = Path(pydicom.data.get_testdata_file(name))  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = pydicom.dcmread(source)
        ds = read_dataset(source)
        result = normalise(ds, PROFILE, now=NOW, modifying_system="VNA")
        assert result.changed
        target = tmp_path / "out.dcm"
        written = write_with_header(source, target, result.dataset)
        out = pydicom.dcmread(target)
    assert out.IssuerOfPatientID == "HOSP1" and out.InstitutionName == "Hôpital Un"
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert out.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert out.original_encoding == original.original_encoding
    for keyword in ("PixelData", "FloatPixelData"):
        if keyword in original:
            assert out[keyword].value == original[keyword].value
    assert out.SOPInstanceUID == original.SOPInstanceUID
    data = target.read_bytes()
    assert written.size == len(data)
    import hashlib

    assert written.sha256 == hashlib.sha256(data).hexdigest()
    with open(target, "rb") as f:
        start = data_set_offset(f)
    assert written.data_set_sha256 == hashlib.sha256(data[start:]).hexdigest()
    if original.file_meta.TransferSyntaxUID != pydicom.uid.DeflatedExplicitVRLittleEndian:
        # The File Meta Information and the pixel data bytes are the received ones.
        received = source.read_bytes()
        assert data[:start] == received[:start]
        if "PixelData" in original:
            pixel_start = received.rfind(b"\xe0\x7f\x10\x00")
            if original.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian:
                pixel_start = received.rfind(b"\x7f\xe0\x00\x10")
            assert data.endswith(received[pixel_start:])


DECISIONS = [
    # (existing, arriving data-set hash, policy, decision)
    ("new", None, "a", "reject", Decision.STORE),
    ("resend", Existing("a"), "a", "reject", Decision.DUPLICATE),
    ("resend of normalised", Existing("a", "n"), "n", "reject", Decision.DUPLICATE),
    ("other content, reject", Existing("a", "n"), "b", "reject", Decision.CONFLICT),
    ("other content, replace", Existing("a", "n"), "b", "replace", Decision.REPLACE),
    ("other content, keep-both", Existing("a"), "b", "keep-both", Decision.QUARANTINE),
    (
        "earlier version resent",
        Existing("b", None, frozenset({"a"})),
        "a",
        "replace",
        Decision.DUPLICATE,
    ),
    (
        "quarantined resent",
        Existing("a", None, frozenset({"b"})),
        "b",
        "keep-both",
        Decision.DUPLICATE,
    ),
]


@pytest.mark.parametrize(
    "existing,arriving,policy,expected", [d[1:] for d in DECISIONS], ids=[d[0] for d in DECISIONS]
)
def test_decide(existing: Existing | None, arriving: str, policy: str, expected: Decision) -> None:
    assert decide(existing, arriving, policy) is expected


def test_unknown_policy_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        decide(Existing("a"), "b", "merge")
