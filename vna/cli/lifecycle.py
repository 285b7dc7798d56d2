"""The lifecycle commands of ``vna`` (``lifecycle``, ``retention``, ``hold``).

``vna.cli`` parses the arguments and calls these; each opens the archive, does one thing,
prints, and returns the exit status.  Errors are VnaError subclasses, which the command line
prints as one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from lifecycle import queue, report, retention, status
from lifecycle.policy.deletion import Verdict
from lifecycle.worker import run_workers
from vna.archive import Archive
from vna.cli.options import plural
from vna.config import Settings
from vna.errors import InvalidRequest


def parse_date(value: str | None, option: str = "--as-of") -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{option} must be a date (YYYY-MM-DD), got {value!r}") from None


def actor() -> str:
    return f"user:{getpass.getuser()}"


@contextlib.asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Archive]:
    archive = await Archive.open(settings)
    try:
        yield archive
    finally:
        await archive.close()


# --- lifecycle --------------------------------------------------------------------------------


async def lifecycle_run(
    settings: Settings, *, once: bool, as_of: str | None, workers: int | None
) -> int:
    day = parse_date(as_of)
    if workers is not None and workers < 1:
        raise InvalidRequest("--workers must be at least 1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with opened(settings) as archive:
        summary = await run_workers(archive, stop, workers=workers, once=once, as_of=day)
    if once:
        tick = summary.ticks[0] if summary.ticks else None
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.done.items()))
        print(
            f"done {plural(sum(summary.done.values()), 'job')}"
            + (f" ({kinds})" if kinds else "")
            + f"; retried {sum(summary.retried.values())}; dead {sum(summary.dead.values())};"
            f" waiting {sum(summary.rescheduled.values())}"
        )
        if tick is not None:
            moves = tick.tiering.queued if tick.tiering else {}
            queued = ", ".join(f"{n} to {tier}" for tier, n in sorted(moves.items())) or "none"
            print(
                f"retention computed for {plural(tick.retention_recomputed, 'study')};"
                " approved deletions"
                f" carried out: {len(tick.deleted)}; study moves queued: {queued}"
            )
    return 1 if summary.dead else 0


async def lifecycle_status(settings: Settings, *, as_of: str | None, fmt: str) -> int:
    today = parse_date(as_of) or dt.date.today()
    async with opened(settings) as archive:
        data = await status.collect(archive.db, settings, today)
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str))
    else:
        print(status.render_text(data))
    return 0


async def lifecycle_retry(settings: Settings, *, job_ids: list[int], all_dead: bool) -> int:
    if not job_ids and not all_dead:
        raise InvalidRequest("name the dead jobs to retry (JOB_ID ...) or give --all-dead")
    async with opened(settings) as archive, archive.db.acquire() as conn:
        requeued = await queue.requeue_dead(conn, job_ids, all_dead)
    missing = sorted(set(job_ids) - set(requeued))
    print(f"queued again: {plural(len(requeued), 'job')}")
    if missing:
        raise InvalidRequest(f"not dead jobs (or no such jobs): {', '.join(map(str, missing))}")
    return 0


# --- retention --------------------------------------------------------------------------------


async def retention_review(
    settings: Settings, *, as_of: str | None, fmt: str, output: Path | None
) -> int:
    day = parse_date(as_of) or dt.date.today()
    async with opened(settings) as archive:
        review = await retention.create_review(archive.db, settings.retention_rules, day, actor())
    text = report.render(review, fmt)
    _emit(text, output)
    if output is not None:
        print(
            f"retention review {review.id}: {plural(len(review.due), 'study')} due,"
            f" {len(review.held)} held back; written to {output}"
        )
    return 0


async def retention_approve(
    settings: Settings,
    *,
    review_id: int,
    approver: str | None = None,
    yes: bool = False,
    dry_run: bool = False,
) -> int:
    """Show what approving the review deletes, confirm (on a terminal, unless ``yes``), approve
    in the name of ``approver`` (a person: the Unix account running this says little), and
    delete."""
    terminal = sys.stdin.isatty()
    if approver is not None and not approver.strip():
        raise InvalidRequest("--as needs the name of the person approving the deletions")
    if approver is None and not terminal and not dry_run:
        raise InvalidRequest(
            "--as NAME is required when not on a terminal: the person approving the deletions,"
            " recorded in the audit trail"
        )
    if not yes and not terminal and not dry_run:
        raise InvalidRequest(
            "not on a terminal, so nothing can be confirmed: give --yes to approve (or"
            " --dry-run to see what would be deleted)"
        )
    async with opened(settings) as archive:
        plan = await retention.plan_approval(archive, settings.retention_rules, review_id)
        print(report.render_plan(review_id, plan))
        # Instances withdrawn by IOCM rejection notes go too (lifecycle.rejections).
        review = await retention.load_review(archive.db, review_id)
        rejected = sum(1 for r in review.rejected if r["state"] == "due")
        if rejected:
            print(f"and {rejected} rejected instances (IOCM rejection notes), as the review lists")
        if dry_run:
            print("dry run: nothing approved, nothing deleted")
            return 0
        if approver is None:
            approver = (
                await asyncio.to_thread(input, "your name, recorded as the approver: ")
            ).strip()
            if not approver:
                raise InvalidRequest("no approver named; nothing approved")
        if not yes:
            deleting = sum(1 for p in plan if p.verdict is Verdict.DELETE)
            answer = await asyncio.to_thread(
                input,
                f"approve review {review_id} as {approver} and delete"
                f" {report.studies(deleting)}"
                + (f" and {rejected} rejected instances" if rejected else "")
                + " now? [y/N] ",
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("not approved; nothing deleted")
                return 1
        result = await retention.approve(
            archive,
            settings.retention_rules,
            review_id,
            approver.strip(),
            detail={
                "confirmed": "--yes" if yes else "on the terminal",
                "os_user": getpass.getuser(),
            },
        )
    print(report.render_approval(result))
    return 0


async def retention_show(
    settings: Settings, *, review_id: int, fmt: str, output: Path | None
) -> int:
    async with opened(settings) as archive:
        review = await retention.load_review(archive.db, review_id)
    _emit(report.render(review, fmt), output)
    return 0


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"cannot write {output}: {exc.strerror}") from exc


# --- legal holds ------------------------------------------------------------------------------


async def hold_set(
    settings: Settings,
    *,
    study_uid: str | None,
    patient_id: str | None,
    issuer: str | None,
    reason: str,
) -> int:
    async with opened(settings) as archive:
        hold = await retention.set_hold(
            archive.db,
            actor=actor(),
            reason=reason,
            study_uid=study_uid,
            patient_id=patient_id,
            issuer=issuer,
        )
    print(f"legal hold {hold['id']} set on the {hold['scope']} {_target(hold)}")
    return 0


async def hold_list(settings: Settings, *, include_released: bool, fmt: str) -> int:
    async with opened(settings) as archive:
        holds = await retention.list_holds(archive.db, include_released)
    if fmt == "json":
        print(json.dumps(holds, indent=2, default=str))
        return 0
    if not holds:
        print("no legal holds" if include_released else "no active legal holds")
        return 0
    for h in holds:
        state = (
            f"released by {h['released_by']} {h['released_at']:%Y-%m-%d}"
            if h["released_at"]
            else "active"
        )
        print(
            f"{h['id']:>5}  {h['scope']:<7} {_target(h)}  ({plural(h['studies'], 'study')})"
            f"  {state};"
            f" set by {h['set_by']} {h['set_at']:%Y-%m-%d}: {h['reason']}"
        )
    return 0


async def hold_release(settings: Settings, *, hold_id: int, reason: str) -> int:
    async with opened(settings) as archive:
        hold = await retention.release_hold(archive.db, hold_id, actor(), reason)
    print(f"legal hold {hold['id']} on the {hold['scope']} {_target(hold)} released")
    return 0


def _target(hold: dict[str, Any]) -> str:
    if hold["scope"] == "study":
        return str(hold["study_uid"])
    return f"{hold['patient_id']}" + (f" (issuer {hold['issuer']})" if hold["issuer"] else "")
