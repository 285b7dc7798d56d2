"""``vna patients ...``, ``vna studies ...`` and ``vna conflicts ...``: arguments and output of
the administration commands (the work is in ``vna.admin.patients``, ``vna.admin.studies`` and
``vna.admin.conflicts``)."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
from typing import Any

from vna.admin import conflicts as c
from vna.admin import patients as p
from vna.admin import studies as st_admin
from vna.admin.patients import Identity
from vna.cli.options import PATIENT_HELP, add_format, patient_option
from vna.config import Settings
from vna.dicom.corrections import STUDY_ATTRIBUTES
from vna.errors import InvalidRequest

COMMANDS = ("patients", "studies", "conflicts")
_IDENTITY = PATIENT_HELP


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pt = sub.add_parser("patients", help="patients: find, link, correct, merge, undo")
    pts = pt.add_subparsers(dest="patients_command", required=True)
    ls = pts.add_parser("list", help="patients (with their linked identities)")
    ls.add_argument("patient", nargs="?", metavar="PATIENT", help=_IDENTITY)
    add_format(ls)
    lk = pts.add_parser("link", help="declare two identities the same person")
    lk.add_argument("a", metavar="PATIENT", help=_IDENTITY)
    lk.add_argument("b", metavar="OTHER", help=_IDENTITY)
    lk.add_argument("--reason", default="", help="why (kept in the audit trail)")
    ul = pts.add_parser("unlink", help="remove a link")
    ul.add_argument("link_id", type=int, metavar="LINK_ID", help="as listed by vna patients links")
    lks = pts.add_parser(
        "links", help="the links of a patient and every identity reached, or --pending ones"
    )
    lks.add_argument("patient", nargs="?", metavar="PATIENT", help=_IDENTITY)
    lks.add_argument(
        "--pending",
        action="store_true",
        help="links the archive proposes (a second source sent an identical instance)",
    )
    add_format(lks)
    al = pts.add_parser("accept-link", help="accept a pending link: the identities are linked")
    al.add_argument("pending_id", type=int, metavar="PENDING_ID", help="from links --pending")
    al.add_argument("--reason", default="", help="recorded with the link")
    rl = pts.add_parser("reject-link", help="reject a pending link: it is not proposed again")
    rl.add_argument("pending_id", type=int, metavar="PENDING_ID", help="from links --pending")
    up = pts.add_parser("update", help="correct a patient in the catalogue and in the objects")
    up.add_argument("patient", metavar="PATIENT", help=_IDENTITY)
    up.add_argument("--name", help="PatientName (DICOM PN: FAMILY^GIVEN)")
    up.add_argument("--birth-date", help="PatientBirthDate (YYYYMMDD)")
    up.add_argument("--sex", help="PatientSex (M, F or O)")
    up.add_argument("--id", dest="new_id", help="PatientID")
    up.add_argument("--issuer", help="IssuerOfPatientID")
    mg = pts.add_parser("merge", help="move every study of PATIENT to TARGET")
    mg.add_argument("source", metavar="PATIENT", help=_IDENTITY)
    mg.add_argument("target", metavar="TARGET", help=_IDENTITY)
    for name in ("undo", "unmerge"):
        un = pts.add_parser(name, help="undo a correction or merge")
        un.add_argument(
            "change_id", type=int, metavar="CHANGE_ID", help="as listed by vna patients changes"
        )
    ch = pts.add_parser("changes", help="corrections and merges, newest first")
    add_format(ch)

    st = sub.add_parser("studies", help="studies: show, correct, move to another patient, undo")
    sts = st.add_subparsers(dest="studies_command", required=True)
    sh = sts.add_parser("show", help="a study's attributes, patient and changes")
    sh.add_argument("study_uid", metavar="STUDY_UID", help="StudyInstanceUID")
    add_format(sh)
    su = sts.add_parser("update", help="correct study attributes in the catalogue and the objects")
    su.add_argument("study_uid", metavar="STUDY_UID", help="StudyInstanceUID")
    su.add_argument(
        "--set",
        dest="values",
        action="append",
        required=True,
        metavar="KEYWORD=VALUE",
        help=f"one of {', '.join(STUDY_ATTRIBUTES)} (repeat for several)",
    )
    sm = sts.add_parser("move", help="file the study under another patient (IOCM reconciliation)")
    sm.add_argument("study_uid", metavar="STUDY_UID", help="StudyInstanceUID")
    sm.add_argument("--to-patient", required=True, metavar="PATIENT", help=f"target {_IDENTITY}")
    sm.add_argument(
        "--issuer", help="IssuerOfPatientID of --to-patient (or write ID^^^ISSUER; omit: none)"
    )
    ss = sts.add_parser(
        "set-source",
        help="re-file studies under a declared source, with its issuer of patient ID",
    )
    which = ss.add_mutually_exclusive_group(required=True)
    which.add_argument("study_uid", nargs="?", metavar="STUDY_UID", help="one study")
    which.add_argument("--patient", metavar="PATIENT", help=f"every study of a {_IDENTITY}")
    which.add_argument(
        "--from-ae",
        metavar="AE_TITLE",
        help="every study filed as DEFAULT that this calling AE title sent (DIMSE)",
    )
    ss.add_argument("--source", required=True, help="the declared source to file them as")
    ss.add_argument(
        "--dry-run", action="store_true", help="list what would be re-filed; change nothing"
    )
    sn = sts.add_parser("undo", help="undo a study correction, move or set-source")
    sn.add_argument("change_id", type=int, metavar="CHANGE_ID", help="as shown by vna studies show")

    cf = sub.add_parser("conflicts", help="quarantined versions of archived instances")
    cfs = cf.add_subparsers(dest="conflicts_command", required=True)
    cl = cfs.add_parser("list", help="conflicts (open ones unless --state)")
    cl.add_argument(
        "--state", choices=(*c.STATES, "all"), default="open", help="which conflicts (open)"
    )
    add_format(cl)
    cs = cfs.add_parser("show", help="a conflict and how it differs from the archived version")
    cs.add_argument(
        "conflict_id", type=int, metavar="CONFLICT_ID", help="as listed by vna conflicts list"
    )
    add_format(cs)
    cr = cfs.add_parser("resolve", help="accept (replace the archived version) or discard")
    cr.add_argument(
        "conflict_id", type=int, metavar="CONFLICT_ID", help="as listed by vna conflicts list"
    )
    cr.add_argument(
        "action",
        choices=c.ACTIONS,
        help="accept: the quarantined version replaces the archived one; discard: drop it",
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from vna.archive import Archive

    actor = f"user:{getpass.getuser()}"
    archive = await Archive.open(settings)
    try:
        if args.command == "conflicts":
            return await _conflicts(archive, args, actor)
        if args.command == "studies":
            return await _studies(archive, args, actor)
        return await _patients(archive, args, actor)
    finally:
        await archive.close()


async def _conflicts(archive: Any, args: argparse.Namespace, actor: str) -> int:
    cmd = args.conflicts_command
    if cmd == "list":
        rows = await c.list_conflicts(archive.db, None if args.state == "all" else args.state)
        if args.format == "json":
            _print_json(rows)
        else:
            _table(
                rows,
                ["id", "state", "source", "patient_id", "issuer", "sop_uid", "received_at"],
            )
        return 0
    if cmd == "show":
        shown = await c.show_conflict(archive.db, args.conflict_id)
        if args.format == "json":
            _print_json(shown)
            return 0
        conflict = shown["conflict"]
        print(f"conflict {conflict['id']} ({conflict['state']}) from {conflict['source']}")
        print(f"  SOP Instance UID  {conflict['sop_uid']}")
        print(f"  study / series    {conflict['study_uid']} / {conflict['series_uid']}")
        print(f"  received          {_text(conflict['received_at'])} by {conflict['actor']}")
        archived = shown["archived"]
        if archived is None:
            print("  the archived version is gone: accepting stores this one")
        else:
            print(f"  archived version  from {archived['source']}, {archived['size']} bytes")
        for d in shown["differences"]:
            print(f"  {d['keyword']:<32} archived {_text(d['archived'])}")
            print(f"  {'':<32} this     {_text(d['quarantined'])}")
        if shown.get("note"):
            print(f"  {shown['note']}")
        return 0
    result = await c.resolve_conflict(archive.db, args.conflict_id, args.action, actor=actor)
    print(f"conflict {result['conflict']} {result['state']}")
    return 0


async def _patients(archive: Any, args: argparse.Namespace, actor: str) -> int:
    cmd = args.patients_command
    if cmd == "list":
        who = Identity.parse(args.patient) if args.patient else None
        rows = await p.find_patients(archive.db, who)
        if args.format == "json":
            _print_json(rows)
        else:
            for r in rows:
                r["linked"] = ", ".join(r["linked"])
            _table(
                rows,
                ["patient_id", "issuer", "patient_name", "birth_date", "sex", "studies", "linked"],
            )
        return 0
    if cmd == "link":
        link_id = await p.link(
            archive.db,
            Identity.parse(args.a),
            Identity.parse(args.b),
            reason=args.reason,
            actor=actor,
        )
        print(f"link {link_id}: {args.a} and {args.b} are the same person")
        return 0
    if cmd == "unlink":
        await p.unlink(archive.db, args.link_id, actor=actor)
        print(f"link {args.link_id} removed")
        return 0
    if cmd == "links" and args.pending:
        pending = await p.pending_links(archive.db)
        if args.format == "json":
            _print_json(pending)
            return 0
        if not pending:
            print("no pending links")
        for r in pending:
            a, b = p.link_identities(r)
            print(
                f"pending link {r['id']}: {a} = {b}  (source {r['source']} sent instance"
                f" {r['sop_uid']} of study {r['study_uid']}; seen {r['sightings']}x)"
            )
        return 0
    if cmd == "accept-link":
        link_id = await p.accept_pending_link(
            archive.db, args.pending_id, actor=actor, reason=args.reason
        )
        print(f"pending link {args.pending_id} accepted: link {link_id}")
        return 0
    if cmd == "reject-link":
        await p.reject_pending_link(archive.db, args.pending_id, actor=actor)
        print(f"pending link {args.pending_id} rejected")
        return 0
    if cmd == "links":
        if not args.patient:
            raise InvalidRequest("name a PATIENT (ID^^^ISSUER), or list --pending links")
        links = await p.links_of(archive.db, Identity.parse(args.patient))
        if args.format == "json":
            _print_json(links)
        else:
            for link in links["links"]:
                a, b = p.link_identities(link)
                print(f"link {link['id']}: {a} = {b}  ({link['reason'] or 'no reason given'})")
            print("same person: " + ", ".join(links["same_person"]))
        return 0
    if cmd == "update":
        values = {
            keyword: value
            for keyword, value in (
                ("PatientName", args.name),
                ("PatientBirthDate", args.birth_date),
                ("PatientSex", args.sex),
                ("PatientID", args.new_id),
                ("IssuerOfPatientID", args.issuer),
            )
            if value is not None
        }
        if not values:
            raise InvalidRequest("give at least one of --name, --birth-date, --sex, --id, --issuer")
        change = await p.update_patient(archive, Identity.parse(args.patient), values, actor=actor)
        print(f"change {change}: {args.patient} updated (undo: vna patients undo {change})")
        return 0
    if cmd == "merge":
        change = await p.merge_patients(
            archive, Identity.parse(args.source), Identity.parse(args.target), actor=actor
        )
        print(
            f"change {change}: {args.source} merged into {args.target}"
            f" (undo: vna patients unmerge {change})"
        )
        return 0
    if cmd in ("undo", "unmerge"):
        return await _undo(archive, args, actor)
    rows = await p.list_changes(archive.db)
    if args.format == "json":
        _print_json(rows)
    else:
        _table(
            rows,
            [
                "id",
                "kind",
                "patient_id",
                "issuer",
                "target_patient_id",
                "study_uid",
                "state",
                "instances",
                "actor",
                "created_at",
            ],
        )
    return 0


async def _studies(archive: Any, args: argparse.Namespace, actor: str) -> int:
    cmd = args.studies_command
    if cmd == "show":
        shown = await st_admin.show_study(archive.db, args.study_uid)
        if args.format == "json":
            _print_json(shown)
            return 0
        study = shown["study"]
        print(f"study {study['study_uid']} of patient {shown['patient']}")
        for keyword, (_, column) in STUDY_ATTRIBUTES.items():
            print(f"  {keyword:<24} {_text(study[column])}")
        for c in shown["changes"]:
            print(
                f"  change {c['id']}: {c['kind']} ({c['state']}) by {c['actor']}"
                f" at {_text(c['created_at'])}: {_text(c['changes'])}"
            )
        return 0
    if cmd == "update":
        values: dict[str, str] = {}
        for item in args.values:
            keyword, sep, value = item.partition("=")
            if not sep or not keyword.strip():
                raise InvalidRequest(f"--set takes KEYWORD=VALUE, not {item!r}")
            values[keyword.strip()] = value
        change = await st_admin.update_study(archive, args.study_uid, values, actor=actor)
        print(f"change {change}: study {args.study_uid} updated (undo: vna studies undo {change})")
        return 0
    if cmd == "move":
        patient_id, issuer = patient_option(args.to_patient, args.issuer, "--to-patient")
        target = Identity(patient_id, issuer or "")
        change = await st_admin.move_study(archive, args.study_uid, target, actor=actor)
        print(
            f"change {change}: study {args.study_uid} moved to patient {target}"
            f" (undo: vna studies undo {change})"
        )
        return 0
    if cmd == "set-source":
        return await _set_source(archive, args, actor)
    return await _undo(archive, args, actor)


async def _undo(archive: Any, args: argparse.Namespace, actor: str) -> int:
    """``vna patients undo|unmerge`` and ``vna studies undo``: one change log for both."""
    await p.undo_change(archive, args.change_id, actor=actor)
    print(f"change {args.change_id} undone")
    return 0


async def _set_source(archive: Any, args: argparse.Namespace, actor: str) -> int:
    if args.study_uid:
        uids = [args.study_uid]
    elif args.patient:
        uids = await st_admin.studies_of(archive.db, Identity.parse(args.patient))
    else:
        uids = await st_admin.default_studies_from(archive.db, args.from_ae.strip())
        if not uids:
            print(f"no study filed as DEFAULT was sent by AE title {args.from_ae.strip()}")
            return 0
    failed = 0
    for uid in uids:
        try:
            if args.dry_run:
                plan = await st_admin.plan_set_source(archive, uid, args.source)
                joins = " (an existing patient)" if plan.joins_patient else ""
                print(
                    f"would file study {uid} ({plan.current}, source {', '.join(plan.sources)})"
                    f" as {plan.source} under {plan.target}{joins}"
                )
                continue
            change = await st_admin.set_source(archive, uid, args.source, actor=actor)
        except InvalidRequest as exc:
            if len(uids) == 1:
                raise
            # One study already filed so (or changed meanwhile) must not stop the others.
            print(f"study {uid}: {exc}")
            failed += 1
            continue
        print(
            f"change {change}: study {uid} filed as {args.source} (undo: vna studies undo {change})"
        )
    done = len(uids) - failed
    if len(uids) > 1:
        verb = "would re-file" if args.dry_run else "re-filed"
        print(f"{verb} {done} of {len(uids)} {'study' if len(uids) == 1 else 'studies'}")
    return 0 if done or not uids else 1


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[_text(r.get(col)) for col in columns] for r in rows]
    widths = [max(len(col), *(len(row[i]) for row in cells)) for i, col in enumerate(columns)]
    print("  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, list):
        return "\\".join(_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _print_json(value: Any) -> None:
    print(json.dumps(value, default=_json_default, ensure_ascii=False, indent=2))


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
