"""The ``vna dr`` commands (status, drill, failover, failback).

``vna.cli`` builds the parsers with ``add_parsers`` and calls ``run``; errors are VnaError
subclasses, which the command line prints as one line.  The archive and the DR code are
imported only when a ``dr`` command runs (the command line starts fast for the others).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vna.cli.options import add_format
from vna.config import Settings
from vna.errors import InvalidRequest

#: Exit status of a drill that found defects (or missed its RPO target), and of a failback
#: that did not switch back.
EXIT_DEFECTS = 1


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dr", help="disaster recovery: replication status, drills, failover")
    drs = p.add_subparsers(dest="dr_command", required=True)
    st = drs.add_parser("status", help="per replica: replicated, backlog, RPO, last checks")
    add_format(st)
    drill = drs.add_parser(
        "drill", help="serve from a replica as if the primary store were lost; report RPO/RTO"
    )
    drill.add_argument("--replica", metavar="NAME", help="replica to drill (if several)")
    amount = drill.add_mutually_exclusive_group()
    amount.add_argument("--full", action="store_true", help="read every instance")
    amount.add_argument("--sample", type=int, metavar="N", help="read N random instances (100)")
    drill.add_argument("--report", type=Path, metavar="FILE.html", help="write an HTML report")
    drill.add_argument(
        "--max-rpo", type=float, metavar="SECONDS", help="fail the drill above this RPO"
    )
    add_format(drill)
    fo = drs.add_parser("failover", help="make a replica the active store (reads and writes)")
    fo.add_argument("--to", required=True, metavar="NAME", help="the replica to serve from")
    fo.add_argument(
        "--no-sync",
        action="store_true",
        help="switch at once, without first copying what the replica lacks",
    )
    fb = drs.add_parser("failback", help="resynchronise the primary and make it active again")
    fb.add_argument(
        "--verify", action="store_true", help="read back every object already on the primary"
    )
    fb.add_argument(
        "--force", action="store_true", help="switch back even if some instances are missing"
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from lifecycle.dr import drill, failover, status
    from lifecycle.dr import report as dr_report
    from lifecycle.dr.json_form import jsonable
    from vna.cli.lifecycle import actor, opened

    async with opened(settings) as archive:
        if args.dr_command == "status":
            data = await status.collect_status(archive)
            print(
                json.dumps(data, indent=2)
                if args.format == "json"
                else dr_report.render_status(data)
            )
            return 0
        if args.dr_command == "drill":
            if args.report is not None and args.report.suffix.lower() not in (".html", ".htm"):
                raise InvalidRequest(f"--report {args.report}: an .html file")
            result = await drill.drill(
                archive,
                replica=args.replica,
                full=args.full,
                sample=args.sample,
                actor=actor(),
                max_rpo_seconds=args.max_rpo,
            )
            if args.report is not None:
                try:
                    args.report.write_text(dr_report.render_drill_html(result), encoding="utf-8")
                except OSError as exc:
                    raise InvalidRequest(f"cannot write {args.report}: {exc.strerror}") from exc
            if args.format == "json":
                print(json.dumps(jsonable(result.as_dict()), indent=2))
            else:
                print(dr_report.render_drill_text(result))
                if args.report is not None:
                    print(f"  report         {args.report}")
            return 0 if result.passed else EXIT_DEFECTS
        if args.dr_command == "failover":
            report = await failover.failover(archive, args.to, sync=not args.no_sync, actor=actor())
            print(dr_report.render_failover(report))
            return 0
        back = await failover.failback(archive, verify=args.verify, force=args.force, actor=actor())
        print(dr_report.render_failback(back))
        if not back.switched:
            print("vna: failback not completed: the primary lacks some instances", file=sys.stderr)
            return EXIT_DEFECTS
        return 0
