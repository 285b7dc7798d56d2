"""The ``vna`` command line.  Errors a user can act on print one line and exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from vna.config import Settings, environment_keys, load_settings
from vna.errors import ConfigError, InvalidRequest, VnaError

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vna", description="Vendor-neutral archive for DICOM")
    parser.add_argument("--config", help="TOML configuration file (or VNA_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="run the archive: DICOMweb and DIMSE gateways")

    imp = sub.add_parser(
        "import", help="import DICOM files from folders through the ingest pipeline"
    )
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    imp.add_argument("--source", help="declared source to store as (default: DEFAULT)")
    imp.add_argument("--jobs", type=int, default=8, help="instances imported at once (8)")

    db = sub.add_parser("db", help="catalogue database").add_subparsers(dest="db_command")
    db.required = True
    db.add_parser("migrate", help="apply pending schema migrations")

    cfg = sub.add_parser("config", help="configuration").add_subparsers(dest="config_command")
    cfg.required = True
    cfg.add_parser("check", help="validate the configuration and print the effective values")
    cfg.add_parser("env", help="list the environment variables the archive reads")

    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        if args.command == "serve":
            from vna.server import serve

            asyncio.run(serve(settings))
            return 0
        if args.command == "import":
            return asyncio.run(_import(settings, args.paths, args.source, args.jobs))
        if args.command == "db" and args.db_command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "config" and args.config_command == "check":
            return _config_check(settings)
        if args.command == "config" and args.config_command == "env":
            print("\n".join(environment_keys()))
            return 0
    except ConfigError as exc:
        print(f"vna: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except VnaError as exc:
        print(f"vna: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    parser.error("unknown command")
    return EXIT_FAILURE


async def _migrate(settings: Settings) -> int:
    from vna.catalog.database import Database, EmbeddedPostgres
    from vna.catalog.migrate import migrate

    embedded = None
    url = settings.database_url
    if settings.embedded_database:
        embedded = EmbeddedPostgres(settings.data_dir / "pg")
        url = await asyncio.to_thread(embedded.start)
    try:
        db = await Database.connect(url, min_size=1, max_size=1)
        try:
            async with db.acquire() as conn:
                applied = await migrate(conn)
        finally:
            await db.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


async def _import(settings: Settings, paths: list[Path], source_name: str | None, jobs: int) -> int:
    import getpass

    from vna.archive import Archive
    from vna.config import DEFAULT_SOURCE
    from vna.ingest.folder import ImportSummary, import_paths, walk
    from vna.ingest.pipeline import Sender

    for path in paths:
        if not path.exists():
            raise InvalidRequest(f"no such file or folder: {path}")
    if jobs < 1:
        raise InvalidRequest("--jobs must be at least 1")
    source = DEFAULT_SOURCE
    if source_name is not None:
        found = settings.source_named(source_name)
        if found is None:
            raise ConfigError(f"--source {source_name!r} is not a declared source")
        source = found
    total = sum(1 for _ in walk(paths))
    interactive = sys.stderr.isatty()

    def progress(summary: ImportSummary, _path: Path) -> None:
        if interactive or summary.seen == total or summary.seen % 500 == 0:
            width = 30
            done = int(width * summary.seen / total) if total else width
            print(
                f"\r[{'#' * done}{'.' * (width - done)}] {summary.seen}/{total}"
                f"  stored {summary.stored}  duplicates {summary.duplicates}"
                f"  failed {len(summary.failed)}",
                end="" if interactive else "\n",
                file=sys.stderr,
                flush=True,
            )

    from vna.server import use_io_threads

    use_io_threads(settings)
    archive = await Archive.open(settings)
    try:
        sender = Sender(source=source, protocol="import", actor=f"user:{getpass.getuser()}")
        summary = await import_paths(
            archive.ingester, paths, sender, concurrency=jobs, progress=progress
        )
    finally:
        await archive.close()
    if interactive:
        print(file=sys.stderr)
    print(
        f"stored {summary.stored} ({summary.bytes_stored / 1e6:.1f} MB), duplicates"
        f" {summary.duplicates}, skipped {summary.skipped}, failed {len(summary.failed)}"
    )
    for path, reason in summary.failed[:50]:
        print(f"  failed {path}: {reason}")
    if len(summary.failed) > 50:
        print(f"  ... and {len(summary.failed) - 50} more failures")
    return EXIT_FAILURE if summary.failed else 0


def _config_check(settings: Settings) -> int:
    database = (
        f"embedded under {settings.data_dir / 'pg'}" if settings.embedded_database else "external"
    )
    names = ", ".join(s.name for s in settings.sources)
    print(f"data_dir      {settings.data_dir}")
    print(f"database      {database}")
    print(f"storage_url   {settings.effective_storage_url}")
    print(f"http          {settings.http.host}:{settings.http.port}")
    print(f"dimse         {settings.dimse.ae_title} on port {settings.dimse.port}")
    print(f"sources       {names or '(none: any sender accepted as DEFAULT)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
