"""``vna import PATH...``: folders of DICOM files through the ingest pipeline, with a progress
bar on a terminal, non-DICOM files skipped, and a summary of how far an interrupted import got
(a re-run continues: what is stored already comes back as duplicates)."""

from __future__ import annotations

import asyncio
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vna.config import DEFAULT_SOURCE, Settings
from vna.errors import ConfigError, InvalidRequest

if TYPE_CHECKING:
    from vna.ingest.folder import ImportSummary

#: Exit status when some files could not be imported.
EXIT_FAILED = 1
#: Files listed by name per kind (failed, not DICOM); the rest are counted.
LISTED = 50


async def run_import(
    settings: Settings, paths: list[Path], source_name: str | None, jobs: int
) -> int:
    from tqdm import tqdm

    from vna.archive import Archive
    from vna.ingest.folder import ImportSummary, import_paths, walk
    from vna.ingest.pipeline import Sender
    from vna.server import use_io_threads

    for path in paths:
        if not path.exists():
            raise InvalidRequest(f"no such file or folder: {path}")
    if jobs < 1:
        raise InvalidRequest("--jobs must be at least 1")
    source = DEFAULT_SOURCE
    if source_name is None and settings.sources:
        # Filed as DEFAULT, the files would keep whatever issuer they carry and mix with the
        # declared hospitals' patients (re-filing them later: vna studies set-source).
        names = ", ".join(s.name for s in settings.sources)
        raise InvalidRequest(f"--source is required once sources are declared (one of: {names})")
    if source_name is not None:
        found = settings.source_named(source_name)
        if found is None:
            raise ConfigError(f"--source {source_name!r} is not a declared source")
        source = found
    total = sum(1 for _ in walk(paths))
    # On a terminal only: in a log file a redrawn bar is noise; the summary says it all.
    bar = tqdm(total=total, unit="file", file=sys.stderr, disable=not sys.stderr.isatty())

    def progress(summary: ImportSummary, _path: Path) -> None:
        bar.update(1)
        bar.set_postfix(
            stored=summary.stored,
            duplicates=summary.duplicates,
            skipped=summary.skipped,
            failed=len(summary.failed),
            refresh=False,
        )

    use_io_threads(settings)
    summary = ImportSummary()
    archive: Archive | None = None
    try:
        archive = await Archive.open(settings)
        sender = Sender(source=source, protocol="import", actor=f"user:{getpass.getuser()}")
        await import_paths(
            archive.ingester,
            paths,
            sender,
            concurrency=jobs,
            progress=progress,
            summary=summary,
        )
    except (asyncio.CancelledError, KeyboardInterrupt):
        # Ctrl-C (while the archive opens, too): the files in hand were finished
        # (import_paths waits for them).
        bar.close()
        print(
            f"vna: import interrupted after {summary.seen} of {total} files: {_counts(summary)};"
            " run the same command again to continue (files already stored count as"
            " duplicates)",
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        bar.close()
        if archive is not None:
            await archive.close()
    print(_counts(summary))
    _list("skipped (not DICOM)", [str(p) for p in summary.not_dicom])
    _list("failed", [f"{path}: {reason}" for path, reason in summary.failed])
    return EXIT_FAILED if summary.failed else 0


def _counts(summary: ImportSummary) -> str:
    return (
        f"stored {summary.stored} ({summary.bytes_stored / 1e6:.1f} MB), duplicates"
        f" {summary.duplicates}, skipped {summary.skipped}, failed {len(summary.failed)}"
    )


def _list(what: str, lines: list[str]) -> None:
    for line in lines[:LISTED]:
        print(f"  {what} {line}")
    if len(lines) > LISTED:
        print(f"  ... and {len(lines) - LISTED} more {what}")
