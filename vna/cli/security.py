"""``vna tokens create|list|revoke`` and ``vna audit``: arguments and output (the work is in
:mod:`vna.security.tokens` and :mod:`vna.security.audit`)."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from vna.cli.options import PATIENT_HELP, add_format, patient_option, plural
from vna.config import DEFAULT_SOURCE, Settings
from vna.errors import InvalidRequest
from vna.security import tokens
from vna.security.audit import AuditFilter, search
from vna.security.audit_message import audit_message

COMMANDS = ("tokens", "audit")
_RELATIVE = re.compile(r"^(\d+)([mhd])$")
# The detail keys the table shows, when present.
_SUMMARY_KEYS = (
    *("protocol", "operation", "level", "matches", "instances", "destination"),
    *("token", "role", "source", "reason", "error"),
)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tk = sub.add_parser("tokens", help="API tokens of DICOMweb and /admin: create, list, revoke")
    tks = tk.add_subparsers(dest="tokens_command", required=True)
    cr = tks.add_parser("create", help="create a token and print it (once)")
    cr.add_argument("name", metavar="NAME", help="what the audit trail calls its user")
    cr.add_argument(
        "--role",
        required=True,
        choices=tokens.ROLES,
        help="reader: query and retrieve; source: store as --source; admin: everything",
    )
    cr.add_argument("--source", help="the declared source a source token stores as")
    cr.add_argument(
        "--read-sources",
        metavar="A,B",
        help="read only the studies these sources sent (reader and source tokens)",
    )
    cr.add_argument("--expires-days", type=int, metavar="DAYS", help="expire after DAYS days")
    ls = tks.add_parser("list", help="tokens (live ones unless --all)")
    ls.add_argument("--all", action="store_true", help="revoked tokens too")
    add_format(ls, ("table", "json"))
    rv = tks.add_parser("revoke", help="revoke a token (within http.token_cache_seconds)")
    rv.add_argument("name", metavar="NAME", help="the token's name (vna tokens list)")

    au = sub.add_parser(
        "audit", help="the audit trail: who stored, read, changed or deleted what, when"
    )
    au.add_argument("--patient", metavar="PATIENT", help=PATIENT_HELP)
    au.add_argument(
        "--issuer", metavar="ISSUER", help="IssuerOfPatientID (or write --patient ID^^^ISSUER)"
    )
    au.add_argument("--study", metavar="UID", help="StudyInstanceUID")
    au.add_argument("--user", metavar="NAME", help="token name, AE title or user:NAME")
    au.add_argument("--action", help="store, query, retrieve, metadata, patient-merge, ...")
    au.add_argument("--since", metavar="T", help="from T: 2025-01-31, 2025-01-31T08:00, 24h, 7d")
    au.add_argument("--until", metavar="T", help="before T (same forms)")
    au.add_argument("--limit", type=int, default=100_000, help="rows at most (100000)")
    add_format(
        au,
        ("table", "jsonl", "json"),
        explain="jsonl: one DICOM audit message (PS3.15 A.5) per line; json: them as one array",
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from vna.archive import Archive

    # Checked before opening the archive: a typo costs no database start.
    audit_filter = _audit_filter(args) if args.command == "audit" else None
    archive = await Archive.open(settings)
    try:
        if audit_filter is not None:
            async with archive.db.acquire() as conn:
                rows = await search(conn, audit_filter)
            _print_audit(rows, args.format, settings.dimse.ae_title)
            return 0
        return await _tokens(archive, settings, args)
    finally:
        await archive.close()


async def _tokens(archive: Any, settings: Settings, args: argparse.Namespace) -> int:
    actor = f"user:{getpass.getuser()}"
    cmd = args.tokens_command
    if cmd == "create":
        read_sources = _names(args.read_sources) if args.read_sources is not None else None
        known = [s.name for s in settings.sources] + [DEFAULT_SOURCE.name]
        tokens.check_token_request(args.name, args.role, args.source, read_sources, known)
        if args.expires_days is not None and args.expires_days <= 0:
            raise InvalidRequest("--expires-days must be positive")
        expires = (
            dt.datetime.now(dt.UTC) + dt.timedelta(days=args.expires_days)
            if args.expires_days
            else None
        )
        async with archive.db.transaction() as conn:
            new = await tokens.create_token(
                conn,
                name=args.name,
                role=args.role,
                actor=actor,
                source=args.source,
                read_sources=read_sources,
                expires_at=expires,
            )
        # The token alone on standard output (for scripts), what it is on standard error.
        expiry = f", expires {expires:%Y-%m-%d}" if expires else ""
        print(
            f"token {new.name!r} ({_scope(new.role, new.source, new.read_sources)}){expiry}:"
            " keep it now, it is not shown again",
            file=sys.stderr,
        )
        print(new.secret)
        return 0
    if cmd == "revoke":
        async with archive.db.transaction() as conn:
            await tokens.revoke_token(conn, args.name, actor=actor)
        print(f"token {args.name!r} revoked")
        return 0
    async with archive.db.acquire() as conn:
        rows = await tokens.list_tokens(conn, include_revoked=args.all)
    if args.format == "json":
        print(json.dumps(rows, default=_json_default, indent=2))
        return 0
    print(f"{'name':<24} {'role':<7} {'scope':<36} {'created':<17} state")
    for r in rows:
        read = tuple(r["read_sources"]) if r["read_sources"] is not None else None
        state = (
            f"revoked {_when(r['revoked_at'])}"
            if r["revoked_at"]
            else (f"expires {_when(r['expires_at'])}" if r["expires_at"] else "live")
        )
        print(
            f"{r['name']:<24} {r['role']:<7} {_scope(r['role'], r['source'], read):<36}"
            f" {_when(r['created_at']):<17} {state}"
        )
    return 0


def _scope(role: str, source: str | None, read_sources: Sequence[str] | None) -> str:
    parts = []
    if role == "source":
        parts.append(f"stores as {source}")
    if role == "admin" or (role == "reader" and read_sources is None):
        parts.append("reads every source")
    elif read_sources:
        parts.append("reads " + ",".join(read_sources))
    elif role == "source":
        parts.append("reads nothing")
    return f"{role}: " + "; ".join(parts)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InvalidRequest("--read-sources needs at least one source name")
    return names


def _audit_filter(args: argparse.Namespace) -> AuditFilter:
    if args.limit <= 0:
        raise InvalidRequest("--limit must be positive")
    now = dt.datetime.now(dt.UTC)
    patient_id, issuer = (
        patient_option(args.patient, args.issuer) if args.patient else (None, args.issuer)
    )
    return AuditFilter(
        patient_id=patient_id,
        issuer=issuer,
        study_uid=args.study,
        actor=args.user,
        action=args.action,
        since=parse_time(args.since, now, "--since") if args.since else None,
        until=parse_time(args.until, now, "--until") if args.until else None,
        limit=args.limit,
    )


def parse_time(text: str, now: dt.datetime, option: str) -> dt.datetime:
    """An ISO date or date-time (UTC unless it has an offset), or a time ago (30m, 24h, 7d)."""
    text = text.strip()
    m = _RELATIVE.match(text)
    if m:
        amount, unit = int(m.group(1)), m.group(2)
        delta = {"m": dt.timedelta(minutes=1), "h": dt.timedelta(hours=1), "d": dt.timedelta(1)}
        return now - amount * delta[unit]
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"{option} {text!r} is not a date (2025-01-31), a date-time (2025-01-31T08:00)"
            " or a time ago (30m, 24h, 7d)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _print_audit(rows: list[dict[str, Any]], fmt: str, ae_title: str) -> None:
    if fmt == "jsonl":
        for row in rows:
            print(json.dumps(audit_message(row, ae_title), default=_json_default))
        return
    if fmt == "json":
        messages = [audit_message(row, ae_title) for row in rows]
        print(json.dumps(messages, default=_json_default, indent=2))
        return
    header = ("at (UTC)", "actor", "origin", "action", "outcome", "patient", "study", "detail")
    table = [
        (
            f"{r['at'].astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}",
            str(r["actor"]),
            str(r["origin"] or "-"),
            str(r["action"]),
            str(r["outcome"]),
            _patient(r),
            _study(r),
            _summary(r["detail"] or {}),
        )
        for r in rows
    ]
    # Columns as wide as their longest value: an action or a UID cut short is one an auditor
    # cannot search for.
    lines: list[tuple[str, ...]] = [header, *table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*cells, line[-1]]).rstrip())


def _patient(row: Mapping[str, Any]) -> str:
    if row["patient_id"]:
        return f"{row['patient_id']}^^^{row['issuer']}" if row["issuer"] else row["patient_id"]
    ids = row.get("patient_ids") or []
    return plural(len(ids), "patient") if ids else "-"


def _study(row: Mapping[str, Any]) -> str:
    if row["study_uid"]:
        return str(row["study_uid"])
    uids = row.get("study_uids") or []
    return plural(len(uids), "study") if uids else "-"


def _summary(detail: Mapping[str, Any]) -> str:
    keys = _SUMMARY_KEYS
    return " ".join(f"{k}={detail[k]}" for k in keys if detail.get(k) not in (None, ""))


def _when(value: dt.datetime | None) -> str:
    return f"{value.astimezone(dt.UTC):%Y-%m-%d %H:%M}" if value else "-"


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
