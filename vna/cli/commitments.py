"""``vna commitments list``: the Storage Commitment requests sources made and how each was
answered (vna.commitment; PS3.4 Annex J)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from vna.catalog.commitments import STATES, list_commitments
from vna.cli.options import add_format
from vna.config import Settings
from vna.errors import InvalidRequest


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("commitments", help="Storage Commitment requests and their reports")
    cs = p.add_subparsers(dest="commitments_command", required=True)
    ls = cs.add_parser("list", help="requests, newest first, with what was committed")
    ls.add_argument("--state", choices=STATES, help="only requests in this state")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    add_format(ls, ("table", "json"))


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from vna.cli.lifecycle import opened

    if args.limit < 1:
        raise InvalidRequest(f"--limit {args.limit}: give a positive number")
    async with opened(settings) as archive:
        async with archive.db.acquire() as conn:
            rows = await list_commitments(conn, state=args.state, limit=args.limit)
    records = [_record(r) for r in rows]
    if args.format == "json":
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print("no storage commitment requests")
        return 0
    print(
        f"{'ID':>6}  {'REQUESTED (UTC)':19}  {'SOURCE':12} {'CALLING AE':16} {'STATE':13}"
        f" {'INSTANCES':>9} {'COMMITTED':>9} {'FAILED':>6}  VIA / LAST ERROR"
    )
    for r in records:
        note = r["reported_via"] or r["last_error"] or ""
        print(
            f"{r['id']:>6}  {r['requested_at'][:19]:19}  {r['source'][:12]:12}"
            f" {r['calling_ae'][:16]:16} {r['state']:13} {r['instances']:>9}"
            f" {_count(r['committed']):>9} {_count(r['failed']):>6}  {note[:60]}"
        )
    return 0


def _record(r: Any) -> dict[str, Any]:
    return {
        "id": r["id"],
        "transaction_uid": r["transaction_uid"],
        "source": r["source"],
        "calling_ae": r["calling_ae"],
        "requested_at": r["requested_at"].isoformat(),
        "required_replicas": r["required_replicas"],
        "state": r["state"],
        "instances": r["instances"],
        "committed": r["committed"],
        "failed": r["failed"],
        "reported_via": r["reported_via"],
        "reported_at": r["reported_at"].isoformat() if r["reported_at"] else None,
        "attempts": r["attempts"],
        "last_error": r["last_error"],
    }


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)
