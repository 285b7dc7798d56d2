"""The ``vna`` command line.  Errors a user can act on print one line and exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from vna.cli.options import PATIENT_HELP, add_format, add_global_options, patient_option
from vna.cli.startup import (
    CREATING_COMMANDS,
    NoArchive,
    configure_logging,
    init_archive,
    quiet_third_parties,
    require_archive,
)
from vna.config import Settings, load_settings, unknown_environment
from vna.errors import ConfigError, VnaError

log = logging.getLogger("vna")

EXIT_CONFIG = 2
EXIT_FAILURE = 1


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
    check = cfg.add_parser(
        "check",
        help="validate everything serve validates; print every effective setting (secrets masked)",
    )
    add_format(check)
    cfg.add_parser("env", help="the environment variables the archive reads: default, meaning")

    from vna.cli.admin import add_parsers as _add_admin_commands

    _add_admin_commands(sub)  # vna patients ..., vna conflicts ...

    from vna.cli.rejections import add_parsers as _add_rejection_commands

    _add_rejection_commands(sub)  # vna rejections list|instances|undo

    from vna.cli.security import add_parsers as _add_security_commands

    _add_security_commands(sub)  # vna tokens ..., vna audit

    _add_lifecycle_commands(sub)

    from vna.cli.dr import add_parsers as _add_dr_commands
    from vna.cli.recovery import add_parsers as _add_recovery_commands

    _add_dr_commands(sub)  # vna dr status|drill|failover|failback
    from vna.cli.hl7 import add_parsers as _add_hl7_commands

    _add_hl7_commands(sub)  # vna hl7 log|show

    from vna.cli.forward import add_parsers as _add_forward_commands

    _add_forward_commands(sub)  # vna forward status

    from vna.cli.notifications import add_parsers as _add_notification_commands

    _add_notification_commands(sub)  # vna notifications status
    _add_recovery_commands(sub)  # vna catalogue rebuild, vna verify

    from vna.cli.commitments import add_parsers as _add_commitment_commands

    _add_commitment_commands(sub)  # vna commitments list

    add_global_options(parser, top=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_third_parties()
    try:
        settings = load_settings(args.config)
        configure_logging(args, settings)
        worker = getattr(args, "worker", None)
        if worker is None and not (args.command == "config" and args.config_command == "check"):
            # Once per command (not per serve worker); `config check` makes it an error.
            for name in unknown_environment():
                log.warning("unknown environment variable %s: ignored", name)
        if args.command not in CREATING_COMMANDS:
            require_archive(settings)
        if args.command == "serve":
            from vna.cli.config import preflight
            from vna.server import serve
            from vna.supervisor import supervise, worker_count

            if worker is not None:
                _run_server(
                    serve(settings, worker=worker, http_fd=args.http_fd, dimse_fd=args.dimse_fd)
                )
                return 0
            # Before any worker starts: a mistake every worker would make is reported once.
            preflight(settings)
            workers = worker_count(settings)
            if workers > 1:
                config_path = args.config or None
                return supervise(settings, config_path, workers)
            _run_server(serve(settings))
            return 0
        if args.command == "init":
            return asyncio.run(init_archive(settings))
        if args.command == "import":
            from vna.cli.folder import run_import

            return asyncio.run(run_import(settings, args.paths, args.source, args.jobs))
        if args.command == "db" and args.db_command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "config":
            from vna.cli import config as config_commands

            if args.config_command == "check":
                return config_commands.check(settings, args.format)
            return config_commands.env()
        if args.command in ("patients", "studies", "conflicts"):
            from vna.cli.admin import run as run_admin

            return asyncio.run(run_admin(settings, args))
        if args.command == "rejections":
            from vna.cli.rejections import run as run_rejections

            return asyncio.run(run_rejections(settings, args))
        if args.command in ("tokens", "audit"):
            from vna.cli.security import run as run_security

            return asyncio.run(run_security(settings, args))
        if args.command in ("lifecycle", "retention", "hold"):
            return asyncio.run(_lifecycle_command(settings, args))
        if args.command == "dr":
            from vna.cli.dr import run as run_dr

            return asyncio.run(run_dr(settings, args))
        if args.command == "hl7":
            from vna.cli.hl7 import run as run_hl7

            return asyncio.run(run_hl7(settings, args))
        if args.command == "notifications":
            from vna.cli.notifications import run as run_notifications

            return asyncio.run(run_notifications(settings, args))
        if args.command == "forward":
            from vna.cli.forward import run as run_forward

            return asyncio.run(run_forward(settings, args))
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


_REVIEW_ID = "as printed by vna retention review"


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
    add_format(st)
    retry = lcs.add_parser("retry", help="queue dead jobs again")
    retry.add_argument(
        "job_ids", nargs="*", type=int, metavar="JOB_ID", help="dead jobs (vna lifecycle status)"
    )
    retry.add_argument("--all-dead", action="store_true", help="every dead job")

    rt = sub.add_parser("retention", help="retention reviews and approvals")
    rts = rt.add_subparsers(dest="retention_command", required=True)
    review = rts.add_parser("review", help="list and save the studies due for deletion")
    review.add_argument("--as-of", metavar="DATE", help="due as of DATE (default: today)")
    add_format(review, ("table", "json", "csv", "html"))
    review.add_argument("--output", type=Path, metavar="FILE", help="write the report to FILE")
    approve = rts.add_parser(
        "approve",
        help="delete the studies a review lists: every object of each, on every store",
        description="Shows what will be deleted, asks for confirmation on a terminal, then"
        " approves the review in the approver's name and deletes.",
    )
    approve.add_argument("review_id", type=int, metavar="REVIEW_ID", help=_REVIEW_ID)
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
    show.add_argument("review_id", type=int, metavar="REVIEW_ID", help=_REVIEW_ID)
    add_format(show, ("table", "json", "csv", "html"))
    show.add_argument("--output", type=Path, metavar="FILE", help="write the report to FILE")

    hd = sub.add_parser("hold", help="legal holds on patients and studies")
    hds = hd.add_subparsers(dest="hold_command", required=True)
    hset = hds.add_parser("set", help="put a study or a patient on legal hold")
    target = hset.add_mutually_exclusive_group(required=True)
    target.add_argument("--study", metavar="STUDY_UID", help="StudyInstanceUID")
    target.add_argument("--patient", metavar="PATIENT", help=PATIENT_HELP)
    hset.add_argument(
        "--issuer",
        help="IssuerOfPatientID (or write --patient ID^^^ISSUER; needed when the ID exists"
        " under several issuers)",
    )
    hset.add_argument("--reason", required=True, help="why (kept with the hold and audited)")
    hlist = hds.add_parser("list", help="list legal holds")
    hlist.add_argument("--all", action="store_true", help="released holds too")
    add_format(hlist)
    hrel = hds.add_parser("release", help="release a legal hold")
    hrel.add_argument("hold_id", type=int, metavar="HOLD_ID", help="as listed by vna hold list")
    hrel.add_argument("--reason", default="", help="why (audited)")


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
        patient_id, issuer = (
            patient_option(args.patient, args.issuer) if args.patient else (None, args.issuer)
        )
        return await c.hold_set(
            settings,
            study_uid=args.study,
            patient_id=patient_id,
            issuer=issuer,
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
        db = await Database.connect(
            url,
            min_size=1,
            max_size=1,
            statement_cache_size=settings.database_statement_cache_size,
        )
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
