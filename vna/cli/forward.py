"""``vna forward status``: what the ``[[forward]]`` rules sent, per destination, and what the
destinations refused (with their DIMSE status)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from vna.cli.options import add_format
from vna.config import Settings


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("forward", help="forwarding rules: what was sent where")
    fs = p.add_subparsers(dest="forward_command", required=True)
    st = fs.add_parser("status", help="per destination: queued, sent, failed; recent failures")
    st.add_argument(
        "--failures", type=int, default=20, metavar="N", help="recent failures to list (20)"
    )
    add_format(st)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from lifecycle import forwarding
    from lifecycle.engine import Engine
    from vna.cli.lifecycle import opened

    async with opened(settings) as archive:
        data = await forwarding.status(Engine(archive), failures=args.failures)
    print(json.dumps(data, indent=2) if args.format == "json" else render(data))
    # Non-zero when a destination refused instances, so that monitoring scripts notice.
    return 1 if any(d["failed"] for d in data["destinations"].values()) else 0


def render(data: dict[str, Any]) -> str:
    if not data["destinations"]:
        return "no forward rules ([[forward]] in the configuration) and nothing forwarded"
    lines = [f"{'destination':<20} {'queued':>8} {'sent':>8} {'failed':>8}  last"]
    for name, d in sorted(data["destinations"].items()):
        lines.append(
            f"{name:<20} {d['queued']:>8} {d['sent']:>8} {d['failed']:>8}  {d.get('last') or '-'}"
        )
    if data["failures"]:
        lines += ["", "recent failures:"]
        for f in data["failures"]:
            lines.append(
                f"  {f['destination']}: {f['sop_uid']} status {f['status'] or 'none'}"
                f" {f['error'] or ''} ({f['at']})".rstrip()
            )
    return "\n".join(lines)
