"""``vna rejections list|instances|undo``: IOCM rejection notes and the instances they
withdraw (``vna.admin.rejections``).  Withdrawn instances are deleted by ``vna retention
review`` and ``approve``, not here."""

from __future__ import annotations

import argparse
import getpass

from vna.cli.admin import _print_json, _table
from vna.cli.options import add_format
from vna.config import Settings


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rj = sub.add_parser("rejections", help="IOCM rejection notes: list, withdrawn instances, undo")
    rjs = rj.add_subparsers(dest="rejections_command", required=True)
    ls = rjs.add_parser("list", help="rejection notes, newest first (active unless --all)")
    ls.add_argument("--all", action="store_true", help="undone notes too")
    add_format(ls)
    ins = rjs.add_parser("instances", help="the instances rejection notes withdraw")
    ins.add_argument("--study", metavar="UID", help="of this study only")
    add_format(ins)
    un = rjs.add_parser("undo", help="undo a rejection: its instances are shown again")
    un.add_argument("note", metavar="NOTE_UID", help="SOP Instance UID of the rejection note")
    un.add_argument("--reason", default="", help="why (kept in the audit trail)")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from vna.admin import rejections
    from vna.archive import Archive

    actor = f"user:{getpass.getuser()}"
    archive = await Archive.open(settings)
    try:
        cmd = args.rejections_command
        if cmd == "undo":
            result = await rejections.undo(
                archive.db, args.note, actor=actor, origin="cli", reason=args.reason
            )
            print(
                f"rejection {args.note} undone:"
                f" {len(result['visibleAgain'])} instances visible again"
            )
            return 0
        if cmd == "list":
            notes = await rejections.list_notes(archive.db, include_undone=args.all)
            if args.format == "json":
                _print_json(notes)
            else:
                _table(
                    notes,
                    ["note_sop_uid", "study_uid", "code", "meaning", "referenced", "rejected",
                     "not_held", "received_at", "actor", "undone_at"],
                )  # fmt: skip
            return 0
        rows = await rejections.list_rejected(archive.db, args.study)
        if args.format == "json":
            _print_json(rows)
        else:
            _table(
                rows,
                ["study_uid", "series_uid", "sop_uid", "patient_id", "issuer", "code",
                 "meaning", "note_sop_uid"],
            )  # fmt: skip
        return 0
    finally:
        await archive.close()
