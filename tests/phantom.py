"""CT instances whose pixels compress like real ones: a smooth body phantom with mild noise,
12 bits stored (``tests.factory.ct_study`` fills pixels with uniform noise, which no lossless
coder can shrink much, unlike a real CT)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from tests.factory import ct_study


def phantom_pixels(size: int, index: int, rng: np.random.Generator) -> bytes:
    """A body-shaped ellipse in stored values (HU + 1024): air, soft tissue, lungs, spine."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = ((x - 0.5) / 0.4) ** 2 + ((y - 0.5) / 0.3) ** 2 <= 1
    lungs = (((x - 0.33) / 0.1) ** 2 + ((y - 0.48) / 0.16) ** 2 <= 1) | (
        ((x - 0.67) / 0.1) ** 2 + ((y - 0.48) / 0.16) ** 2 <= 1
    )
    spine = ((x - 0.5) / 0.045) ** 2 + ((y - 0.68) / 0.045) ** 2 <= 1
    image = np.zeros((size, size), dtype=np.float32)
    image[body] = 1064 + 15 * np.sin(index / 7)
    image[lungs] = 200
    image[spine] = 1700
    image += rng.normal(0, 6, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 4095).astype("<u2").tobytes()


def smooth_ct_study(
    *,
    size: int = 128,
    birth_date: str = "19700101",
    study_description: str = "CT CHEST",
    **kwargs: Any,
) -> list[Dataset]:
    """``ct_study`` with phantom pixels and the given birth date and description."""
    study = ct_study(size=size, **kwargs)
    rng = np.random.default_rng(abs(hash(study[0].StudyInstanceUID)) % 2**32)
    for index, ds in enumerate(study):
        ds.PixelData = phantom_pixels(size, index, rng)
        ds.PatientBirthDate = birth_date
        ds.StudyDescription = study_description
    return study


def dicom_date(day: dt.date) -> str:
    return day.strftime("%Y%m%d")
