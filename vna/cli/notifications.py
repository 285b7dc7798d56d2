"""``vna notifications status``: per ``[[notifications]]`` subscription, events pending,
delivered and dead, and the latest dead ones."""

from __future__ import annotations

import argparse
import json
from typing import Any

from vna.cli.options import add_format
from vna.config import Settings


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("notifications", help="event notifications: what was delivered where")
    ns = p.add_subparsers(dest="notifications_command", required=True)
    st = ns.add_parser("status", help="per subscription: pending, delivered, dead")
    st.add_argument("--dead", type=int, default=20, metavar="N", help="dead events to list (20)")
    add_format(st)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from lifecycle import notifications
    from lifecycle.engine import Engine
    from vna.cli.lifecycle import opened

    async with opened(settings) as archive:
        data = await notifications.status(Engine(archive), dead=args.dead)
    print(json.dumps(data, indent=2) if args.format == "json" else render(data))
    # Non-zero when events were given up, so that monitoring scripts notice.
    return 1 if any(t["dead"] for t in data["targets"].values()) else 0


def render(data: dict[str, Any]) -> str:
    if not data["targets"]:
        return "no subscriptions ([[notifications]] in the configuration) and nothing sent"
    lines = [f"{'subscription':<20} {'pending':>8} {'delivered':>10} {'dead':>6}  oldest pending"]
    for name, t in sorted(data["targets"].items()):
        lines.append(
            f"{name:<20} {t['pending']:>8} {t['delivered']:>10} {t['dead']:>6}"
            f"  {t['oldest_pending'] or '-'}"
        )
    if data["dead"]:
        lines += ["", "dead events:"]
        for d in data["dead"]:
            lines.append(
                f"  {d['target']}: {d['event']} {d['study_uid']} #{d['sequence']}"
                f" after {d['attempts']} attempts: {d['error'] or ''} ({d['at']})"
            )
    return "\n".join(lines)
