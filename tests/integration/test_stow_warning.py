"""A STOW-RS 202 always says why (issue 23, item 8): instances stored with coercions
(WarningReason B000) come with a ``Warning`` header in words, as refusals do."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import aiohttp
import pytest

from tests.factory import ct_study, part10, stow_body
from vna.config import Settings, SourceSettings

TOKEN = "token-hosp1"
KEEP_TOKEN = "token-keep"


@pytest.fixture
def archive_settings(archive_settings: Settings) -> Settings:
    source = SourceSettings(
        name="HOSP1",
        issuer_of_patient_id="HOSP1",
        token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
    )
    keep = SourceSettings(
        name="KEEP",
        issuer_of_patient_id="HOSP1",
        token_sha256=hashlib.sha256(KEEP_TOKEN.encode()).hexdigest(),
        on_conflict="keep-both",
    )
    return dataclasses.replace(archive_settings, sources=(source, keep))


async def stow(
    url: str, parts: list[bytes], token: str = TOKEN
) -> tuple[int, list[str], dict[str, Any]]:
    body, content_type = stow_body(parts)
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/studies", data=body, headers=headers) as resp,
    ):
        return resp.status, resp.headers.getall("Warning", []), await resp.json(content_type=None)


async def test_coerced_instances_are_answered_202_with_a_warning_header(archive, dicomweb):
    study = ct_study(series=1, slices=3)
    status, warnings, body = await stow(dicomweb, [part10(ds) for ds in study])
    assert status == 202
    refs = body["00081199"]["Value"]
    assert [r["00081196"]["Value"] for r in refs] == [[0xB000]] * 3
    # One header for the three alike, naming what was coerced.
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith('299 vna "3 instances stored with WarningReason B000')
    assert "IssuerOfPatientID" in warnings[0]


async def test_a_resend_stored_as_sent_is_200_without_warning(archive, dicomweb):
    (ds,) = ct_study(series=1, slices=1)
    status, warnings, _ = await stow(dicomweb, [part10(ds)])
    assert status == 202 and warnings
    # The archive's own normalised copy sent back: nothing left to coerce.
    async with archive.db.acquire() as conn:
        key = await conn.fetchval("SELECT object_key FROM instances")
    stored = await archive.store.get_bytes(key)
    status, warnings, _ = await stow(dicomweb, [stored])
    assert (status, warnings) == (200, [])


async def test_a_refusal_and_a_coercion_in_one_request_both_say_why(archive, dicomweb):
    (good,) = ct_study(series=1, slices=1)
    status, warnings, _ = await stow(dicomweb, [part10(good), b"not DICOM"])
    assert status == 202
    text = " ".join(warnings)
    assert "1 instance stored with WarningReason B000" in text
    assert "not a DICOM Part 10 file" in text


async def test_a_quarantined_version_says_so(archive, dicomweb):
    (ds,) = ct_study(series=1, slices=1)
    assert (await stow(dicomweb, [part10(ds)], KEEP_TOKEN))[0] == 202
    ds.StudyDescription = "ANOTHER VERSION"
    status, warnings, _ = await stow(dicomweb, [part10(ds)], KEEP_TOKEN)
    assert status == 202
    assert any("quarantined as conflict" in w for w in warnings), warnings
