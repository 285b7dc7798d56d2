"""A realistic CT corpus for the benchmarks: N studies x M series x K slices of 512x512 16-bit.

Each slice is a complete Part 10 file (explicit VR little endian, ~0.5 MB) with the header a
CT scanner would write: patient, study, series and instance identification, geometry
(Image Position/Orientation, Pixel Spacing, Slice Location), rescale and window values.
Pixel data is a body-shaped phantom plus per-slice noise, so it neither compresses to nothing
nor is pure noise.

The corpus is cached by its parameters under ``bench/.corpus/`` (git-ignored): a re-run with the
same parameters reuses the files. UIDs are derived deterministically from the parameters, so
the same corpus always carries the same UIDs; the benchmark stores it into empty servers.

Run it alone to build a corpus: ``python bench/corpus.py --studies 4 --series 2 --slices 155``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

#: Bump when the generated content changes, so stale caches are not reused.
CORPUS_VERSION = 1
DEFAULT_ROOT = Path(__file__).resolve().parent / ".corpus"
ROWS = COLUMNS = 512
PIXEL_SPACING_MM = 0.703125  # 360 mm field of view / 512


@dataclass(frozen=True)
class CorpusSpec:
    studies: int = 4
    series: int = 2
    slices: int = 155
    seed: int = 1

    @property
    def name(self) -> str:
        return f"ct-v{CORPUS_VERSION}-{self.studies}x{self.series}x{self.slices}-s{self.seed}"

    @property
    def instances(self) -> int:
        return self.studies * self.series * self.slices


@dataclass
class StudyInfo:
    study_uid: str
    patient_id: str
    study_date: str  # YYYYMMDD
    files: list[str] = field(default_factory=list)  # relative to the corpus directory
    sop_uids: list[str] = field(default_factory=list)
    bytes: int = 0


@dataclass
class Corpus:
    """A generated corpus on disk and what the benchmark needs to check the servers' answers."""

    spec: CorpusSpec
    directory: Path
    studies: list[StudyInfo]

    @property
    def files(self) -> list[Path]:
        return [self.directory / f for s in self.studies for f in s.files]

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.studies)

    @property
    def instance_count(self) -> int:
        return sum(len(s.files) for s in self.studies)

    def file_sizes(self) -> dict[Path, int]:
        return {p: p.stat().st_size for p in self.files}

    def sop_uid_of(self) -> dict[Path, str]:
        pairs = (pair for s in self.studies for pair in zip(s.files, s.sop_uids, strict=True))
        return {self.directory / f: uid for f, uid in pairs}


def _uid(spec: CorpusSpec, *parts: object) -> str:
    """A valid UID (2.25 root under pydicom's prefix) that depends only on spec and parts."""
    return generate_uid(entropy_srcs=[spec.name, *map(str, parts)])


def _phantom(rng: np.random.Generator) -> np.ndarray:
    """A body-like ellipse in stored values (HU + 1024): air 0, soft tissue ~1064, bone ~1700."""
    y, x = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.float32)
    cy, cx = ROWS / 2, COLUMNS / 2
    body = ((x - cx) / 200) ** 2 + ((y - cy) / 150) ** 2 <= 1.0
    spine = ((x - cx) / 22) ** 2 + ((y - cy - 95) / 22) ** 2 <= 1.0
    image = np.zeros((ROWS, COLUMNS), dtype=np.float32)
    image[body] = 1064
    image[spine] = 1700
    lung_l = ((x - cx + 85) / 55) ** 2 + ((y - cy + 5) / 80) ** 2 <= 1.0
    lung_r = ((x - cx - 85) / 55) ** 2 + ((y - cy + 5) / 80) ** 2 <= 1.0
    image[lung_l | lung_r] = 200
    image += rng.normal(0, 3, size=image.shape).astype(np.float32)
    return image


def _slice_pixels(base: np.ndarray, rng: np.random.Generator, index: int) -> bytes:
    noise = rng.normal(0, 12, size=base.shape).astype(np.float32)
    shift = np.float32(20 * np.sin(index / 9.0))  # anatomy that changes slowly along z
    pixels = np.clip(base + noise + shift * (base > 500), 0, 4095).astype("<u2")
    return pixels.tobytes()


def _patient(spec: CorpusSpec, study: int) -> tuple[str, str, str, str]:
    """(PatientID, PatientName, birth date, sex); two studies per patient, as follow-ups."""
    p = study // 2
    names = ["DOE^JANE", "ROE^RICHARD", "MUSTERMANN^ERIKA", "DUPONT^JEAN", "ROSSI^MARIO"]
    name = f"{names[p % len(names)]}{'' if p < len(names) else p}"
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=(p * 4111) % 25000)
    return f"BENCH{spec.seed:02d}{p:05d}", name, birth.strftime("%Y%m%d"), "FM"[p % 2]


def _study_date(spec: CorpusSpec, study: int) -> dt.date:
    # Spread over 2023, 37 days apart, so date-range queries select a known subset.
    return dt.date(2023, 1, 9) + dt.timedelta(days=(study * 37) % 350)


def generate(spec: CorpusSpec, root: Path = DEFAULT_ROOT, progress: bool = True) -> Corpus:
    """Return the corpus for ``spec``, generating it under ``root`` unless already there."""
    final = root / spec.name
    manifest = final / "manifest.json"
    if manifest.exists():
        return load(final)

    root.mkdir(parents=True, exist_ok=True)
    building = root / f".{spec.name}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    rng = np.random.default_rng(spec.seed)
    base = _phantom(rng)
    studies: list[StudyInfo] = []
    started = time.monotonic()
    written = 0
    for st in range(spec.studies):
        patient_id, patient_name, birth, sex = _patient(spec, st)
        date = _study_date(spec, st)
        study_uid = _uid(spec, "study", st)
        info = StudyInfo(study_uid, patient_id, date.strftime("%Y%m%d"))
        for se in range(spec.series):
            series_uid = _uid(spec, "series", st, se)
            frame_uid = _uid(spec, "frame", st, se)
            thickness = 1.25 if se % 2 == 0 else 2.5
            for sl in range(spec.slices):
                sop_uid = _uid(spec, "sop", st, se, sl)
                ds = _slice_dataset(
                    spec,
                    st,
                    se,
                    sl,
                    thickness,
                    patient_id=patient_id,
                    patient_name=patient_name,
                    birth=birth,
                    sex=sex,
                    date=date,
                    study_uid=study_uid,
                    series_uid=series_uid,
                    frame_uid=frame_uid,
                    sop_uid=sop_uid,
                )
                ds.PixelData = _slice_pixels(base, rng, sl)
                rel = f"{st:03d}/{se:03d}/{sl:05d}.dcm"
                path = building / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(path, enforce_file_format=True)
                size = path.stat().st_size
                info.files.append(rel)
                info.sop_uids.append(sop_uid)
                info.bytes += size
                written += 1
                if progress and (written % 50 == 0 or written == spec.instances):
                    print(
                        f"\rgenerating corpus {spec.name}: {written}/{spec.instances}",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
        studies.append(info)
    if progress:
        print(f" ({time.monotonic() - started:.1f} s)", file=sys.stderr)
    corpus = Corpus(spec, final, studies)
    (building / "manifest.json").write_text(
        json.dumps({"spec": asdict(spec), "studies": [asdict(s) for s in studies]}, indent=1)
    )
    try:
        building.rename(final)
    except OSError:  # another process finished the same corpus first
        shutil.rmtree(building, ignore_errors=True)
        return load(final)
    return corpus


def load(directory: Path) -> Corpus:
    data = json.loads((directory / "manifest.json").read_text())
    return Corpus(CorpusSpec(**data["spec"]), directory, [StudyInfo(**s) for s in data["studies"]])


def _slice_dataset(
    spec: CorpusSpec,
    st: int,
    se: int,
    sl: int,
    thickness: float,
    *,
    patient_id: str,
    patient_name: str,
    birth: str,
    sex: str,
    date: dt.date,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    sop_uid: str,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "VNA_BENCH_1"

    study_time = f"{8 + st % 10:02d}{(st * 7) % 60:02d}00"
    content_time = f"{8 + st % 10:02d}{(st * 7) % 60:02d}{(sl // 10) % 60:02d}.{sl % 10}00000"
    z = -150.0 + sl * thickness

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = date.strftime("%Y%m%d")
    ds.InstanceCreationTime = study_time
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = study_time
    ds.AcquisitionTime = ds.ContentTime = content_time
    ds.AccessionNumber = f"ACC{spec.seed:02d}{st:06d}"
    ds.Modality = "CT"
    ds.Manufacturer = "BENCH MEDICAL SYSTEMS"
    ds.InstitutionName = "GENERAL HOSPITAL"
    ds.ReferringPhysicianName = "WELBY^MARCUS"
    ds.StationName = "CT01"
    ds.StudyDescription = "CT CHEST ABDOMEN PELVIS W CONTRAST"
    ds.SeriesDescription = f"AXIAL {thickness:g}MM {'SOFT TISSUE' if se % 2 == 0 else 'LUNG'}"
    ds.ManufacturerModelName = "BENCHSCAN 128"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "BENCH"
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.PatientAge = f"{max(1, 2023 - int(birth[:4])):03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = f"{thickness:g}"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.SoftwareVersions = "1.0"
    ds.ReconstructionDiameter = "360"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "160"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "250"
    ds.Exposure = "125"
    ds.ConvolutionKernel = "STANDARD" if se % 2 == 0 else "LUNG"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"{st + 1}"
    ds.SeriesNumber = se + 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = sl + 1
    ds.ImagePositionPatient = [-180.0, -180.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{z:g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    ds.PixelSpacing = [PIXEL_SPACING_MM, PIXEL_SPACING_MM]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40" if se % 2 == 0 else "-600"
    ds.WindowWidth = "400" if se % 2 == 0 else "1500"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--series", type=int, default=2)
    parser.add_argument("--slices", type=int, default=155)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args(argv)
    corpus = generate(CorpusSpec(args.studies, args.series, args.slices, args.seed), args.root)
    print(
        f"{corpus.directory}: {corpus.instance_count} instances, "
        f"{corpus.total_bytes / 1e6:.1f} MB in {len(corpus.studies)} studies"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
