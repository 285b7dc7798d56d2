"""Folder import (``vna import PATH...``): every file under the paths, through the same pipeline.

The user's files are never moved or changed (the pipeline copies them into the store).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vna.errors import VnaError
from vna.ingest.pipeline import Ingester, Outcome, Sender

#: Media directory files index a CD; they are not instances and are skipped, not failed.
_SKIP_NAMES = frozenset({"DICOMDIR"})
#: PS3.10 7.1: a DICOM file starts with a 128-byte preamble and the four bytes "DICM".  The
#: archive takes only such files (the parser refuses others), so a file without them is not
#: DICOM: a README, a viewer on a CD, a thumbnail.  Skipped, not failed.
_PREFIX = (128, b"DICM")


@dataclass
class ImportSummary:
    stored: int = 0
    duplicates: int = 0
    #: DICOMDIR files and files that are not DICOM (listed in ``not_dicom`` too).
    skipped: int = 0
    not_dicom: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    bytes_stored: int = 0

    @property
    def seen(self) -> int:
        return self.stored + self.duplicates + self.skipped + len(self.failed)

    def failure_reasons(self) -> Counter[str]:
        return Counter(reason for _, reason in self.failed)


def walk(paths: Sequence[Path]) -> Iterator[Path]:
    for root in paths:
        if root.is_file():
            yield root
            continue
        if not root.is_dir():
            raise FileNotFoundError(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                yield Path(dirpath) / name


async def import_paths(
    ingester: Ingester,
    paths: Sequence[Path],
    sender: Sender,
    *,
    concurrency: int = 8,
    progress: Callable[[ImportSummary, Path], None] | None = None,
    summary: ImportSummary | None = None,
) -> ImportSummary:
    """Ingest every file under ``paths``; counts go to ``summary`` as they happen (give one to
    know how far an interrupted import got)."""
    summary = ImportSummary() if summary is None else summary
    queue: asyncio.Queue[Path | None] = asyncio.Queue(maxsize=concurrency * 4)

    async def worker() -> None:
        while (path := await queue.get()) is not None:
            await _one(path)

    async def _one(path: Path) -> None:
        if path.name.upper() in _SKIP_NAMES:
            summary.skipped += 1
        elif not await asyncio.to_thread(_is_dicom_file, path):
            summary.skipped += 1
            summary.not_dicom.append(path)
        else:
            try:
                result = await ingester.ingest_file(path, sender, consume=False)
            except VnaError as exc:
                summary.failed.append((path, str(exc)))
            else:
                if result.outcome is not Outcome.DUPLICATE:
                    summary.stored += 1
                    summary.bytes_stored += result.size
                else:
                    summary.duplicates += 1
        if progress is not None:
            progress(summary, path)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        for path in walk(paths):
            await queue.put(path)
    finally:
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    return summary


def _is_dicom_file(path: Path) -> bool:
    """Whether ``path`` carries the DICOM file prefix; an unreadable file counts as DICOM, so
    that the pipeline reports why it cannot be read (a failure, not a skip)."""
    offset, magic = _PREFIX
    try:
        with path.open("rb") as f:
            head = f.read(offset + len(magic))
    except OSError:
        return True
    return head[offset:] == magic
