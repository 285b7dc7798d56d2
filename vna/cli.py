"""The ``vna`` command line.  Errors a user can act on print one line and exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from vna.config import Settings, environment_keys, load_settings
from vna.errors import ConfigError, VnaError

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vna", description="Vendor-neutral archive for DICOM")
    parser.add_argument("--config", help="TOML configuration file (or VNA_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

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
            level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
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


def _config_check(settings: Settings) -> int:
    print(f"data_dir      {settings.data_dir}")
    print(f"database      {'embedded under ' + str(settings.data_dir / 'pg') if settings.embedded_database else 'external'}")
    print(f"storage_url   {settings.effective_storage_url}")
    print(f"http          {settings.http.host}:{settings.http.port}")
    print(f"dimse         {settings.dimse.ae_title} on port {settings.dimse.port}")
    print(f"sources       {', '.join(s.name for s in settings.sources) or '(none: any sender accepted as DEFAULT)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
