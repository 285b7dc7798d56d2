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


@dataclass
class ImportSummary:
    stored: int = 0
    duplicates: int = 0
    skipped: int = 0
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
) -> ImportSummary:
    summary = ImportSummary()
    queue: asyncio.Queue[Path | None] = asyncio.Queue(maxsize=concurrency * 4)

    async def worker() -> None:
        while (path := await queue.get()) is not None:
            await _one(path)

    async def _one(path: Path) -> None:
        if path.name.upper() in _SKIP_NAMES:
            summary.skipped += 1
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
