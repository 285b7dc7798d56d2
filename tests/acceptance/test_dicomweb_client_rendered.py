"""dicomweb-client's rendered retrieves against ``vna serve`` (issue 17, second acceptance
point): for every pydicom test file the archive accepts, ``retrieve_instance_rendered`` and
``retrieve_instance_frames_rendered`` give the picture of the stored file's pixels as pydicom
reads them, and an instance that cannot be rendered is refused with 406, never a 500."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.uid import generate_uid

from vna.dicom.render import PNG, CannotRender, RenderOptions, render

pytestmark = pytest.mark.slow


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_rendered_retrieves_match_pydicoms_pixels_for_every_accepted_file(
    archive_process, pydicom_test_dir: Path
) -> None:
    client = DICOMwebClient(url=archive_process.url)
    checked, refused = [], []
    for path in sorted(pydicom_test_dir.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path)
            # Several files are one instance in several syntaxes (MR_small*): fresh UIDs,
            # or the archive would rightly refuse the second as a conflicting version.
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        except Exception:
            continue  # not a Part 10 file: nothing to store
        try:
            client.store_instances([ds])
        except Exception:
            # Refused at ingest, or not even encodable by the client (pydicom's deliberately
            # broken files): not the archive's to render.
            continue
        try:
            want = render(ds, 0, RenderOptions(PNG))
        except CannotRender:
            with pytest.raises(requests.HTTPError) as err:
                client.retrieve_instance_rendered(*uids, media_types=(PNG,))
            assert err.value.response.status_code == 406, (path.name, err.value.response.text)
            refused.append(path.name)
            continue
        try:
            got = client.retrieve_instance_rendered(*uids, media_types=(PNG,))
        except requests.HTTPError as exc:
            raise AssertionError((path.name, exc.response.text)) from exc
        assert np.array_equal(_pixels(got), _pixels(want)), path.name
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            # One frame asked for: one image, not a multipart answer.
            last = client.retrieve_instance_frames_rendered(
                *uids, frame_numbers=[frames], media_types=(PNG,)
            )
            wanted = render(ds, frames - 1, RenderOptions(PNG))
            assert np.array_equal(_pixels(last), _pixels(wanted)), path.name
        checked.append(path.name)
    # The transfer syntaxes a viewer meets most, rendered through the plugins.
    for name in (
        "CT_small.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "MR_small_RLE.dcm",
        "examples_palette.dcm",
        "rtdose.dcm",
    ):
        assert name in checked, (name, refused)
