"""The change feed of two archive nodes on one catalogue (two ``vna serve`` processes on the
same database and store): 4 writers, two on each node, store 1,000 instances over STOW-RS
while a client follows the feed with Microsoft's documented parameters (``offset``,
``limit``, ``includeMetadata``) from one node.  It reads every change once, no gap, no
duplicate, sequence strictly increasing; the other node serves the same feed."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.factory import ct_study, part10, stow_body
from tests.two_nodes import ADMIN_TOKEN, SOURCE_TOKENS, two_nodes

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

WRITERS = 4
PER_WRITER = 250
BATCH = 25


async def page(http: aiohttp.ClientSession, url: str, offset: int) -> list[dict[str, Any]]:
    async with http.get(
        f"{url}/changefeed",
        params={"offset": str(offset), "limit": "200", "includeMetadata": "false"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        return list(await resp.json())


async def read_all(http: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while batch := await page(http, url, len(entries)):
        entries.extend(batch)
    return entries


async def test_two_nodes_four_writers_one_thousand_changes_no_gap_no_duplicate(
    tmp_path: Path, database_url: str
):
    studies = [ct_study(patient_id=f"W{w}", series=1, slices=PER_WRITER) for w in range(WRITERS)]
    written = {str(ds.SOPInstanceUID) for s in studies for ds in s}
    with two_nodes(tmp_path, database_url) as nodes:
        urls = [n.url for n in nodes]
        done = asyncio.Event()
        read: list[dict[str, Any]] = []

        async def writer(http: aiohttp.ClientSession, w: int) -> None:
            url = urls[w % 2]
            token = SOURCE_TOKENS["H1"]
            parts = [part10(ds) for ds in studies[w]]
            for i in range(0, len(parts), BATCH):
                body, content_type = stow_body(parts[i : i + BATCH])
                async with http.post(
                    f"{url}/studies",
                    data=body,
                    headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
                ) as resp:
                    # 202: stored, with the source's issuer added (a coercion warning).
                    assert resp.status in (200, 202), (await resp.text())[:500]

        async def reader(http: aiohttp.ClientSession) -> None:
            while True:
                finished = done.is_set()
                batch = await page(http, urls[0], len(read))
                read.extend(batch)
                if finished and not batch:
                    return
                if not batch:
                    await asyncio.sleep(0.05)

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
            following = asyncio.create_task(reader(http))
            try:
                await asyncio.gather(*(writer(http, w) for w in range(WRITERS)))
            finally:
                done.set()
            await following
            other = await read_all(http, urls[1])

    sequences = [e["Sequence"] for e in read]
    uids = [e["SopInstanceUid"] for e in read]
    assert len(read) == WRITERS * PER_WRITER
    assert len(set(uids)) == len(uids)  # no duplicate
    assert set(uids) == written  # no change missing
    assert all(a < b for a, b in itertools.pairwise(sequences))
    assert sequences == list(range(sequences[0], sequences[0] + len(read)))  # no gap
    assert {e["Action"] for e in read} == {"create"}
    # Both nodes serve the one feed.
    assert [(e["Sequence"], e["SopInstanceUid"]) for e in other] == list(
        zip(sequences, uids, strict=True)
    )
