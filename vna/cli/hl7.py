"""``vna hl7 log``: the HL7 ADT messages the listener received, with what became of each (the
work is in ``vna.admin.adt``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from vna.admin import adt
from vna.cli.options import add_format
from vna.config import Settings

COMMANDS = ("hl7",)
OUTCOMES = ("applied", "unchanged", "unknown-patient", "error", "refused", "malformed")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    h = sub.add_parser("hl7", help="HL7 ADT messages received over MLLP")
    hs = h.add_subparsers(dest="hl7_command", required=True)
    lg = hs.add_parser("log", help="messages received, newest first, with their outcome")
    lg.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    lg.add_argument("--outcome", choices=OUTCOMES, help="only messages with this outcome")
    add_format(lg)
    sh = hs.add_parser("show", help="one message as received, and its outcome")
    sh.add_argument("message_id", type=int, metavar="ID", help="from vna hl7 log")
    add_format(sh)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from vna.archive import Archive

    archive = await Archive.open(settings)
    try:
        if args.hl7_command == "show":
            shown = await adt.show_logged(archive, args.message_id)
            if args.format == "json":
                print(json.dumps(shown, default=_json_default, ensure_ascii=False, indent=2))
                return 0
            for key, value in shown.items():
                if key != "message":
                    print(f"{key:<17} {_text(value)}")
            # Segments one per line (they end with CR on the wire).
            print()
            print("\n".join(shown["message"].split("\r")))
            return 0
        rows = await adt.list_log(archive, limit=args.limit, outcome=args.outcome)
        if args.format == "json":
            print(json.dumps(rows, default=_json_default, ensure_ascii=False, indent=2))
            return 0
        if not rows:
            print("no HL7 messages received")
            return 0
        columns = [
            "id",
            "received_at",
            "sending_facility",
            "control_id",
            "message_type",
            "patient",
            "ack_code",
            "outcome",
            "receipts",
            "detail",
        ]
        cells = [[_text(r.get(c)) for c in columns] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        return 0
    finally:
        await archive.close()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
