"""The ``vna catalogue rebuild`` and ``vna verify`` commands.

``vna.cli`` parses the arguments and calls ``run``; errors are VnaError subclasses, which
the command line prints as one line.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import TYPE_CHECKING

from vna.cli.options import add_format, plural
from vna.config import Settings
from vna.errors import InvalidRequest

if TYPE_CHECKING:
    from vna.archive import Archive

#: Defaults, repeated in the help texts (the modules are imported only when a command runs).
REBUILD_JOBS = 8
VERIFY_SAMPLE = 1000

#: Exit status when objects could not be indexed, or a fixity check found problems.
EXIT_PROBLEMS = 1


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cat = sub.add_parser("catalogue", help="the catalogue: rebuild it from the objects")
    cats = cat.add_subparsers(dest="catalogue_command", required=True)
    rb = cats.add_parser(
        "rebuild", help="reconstruct the catalogue from the objects of a store (after its loss)"
    )
    rb.add_argument(
        "--from",
        dest="from_url",
        required=True,
        metavar="STORE_URL",
        help="file:///path or s3://bucket?... holding the objects (or a declared store name)",
    )
    rb.add_argument(
        "--force",
        action="store_true",
        help="run on a catalogue that already holds instances (adds what it lacks)",
    )
    rb.add_argument(
        "--no-copy",
        action="store_true",
        help="do not copy objects into the active store when --from is another store",
    )
    rb.add_argument(
        "--jobs", type=int, default=REBUILD_JOBS, help=f"objects at once ({REBUILD_JOBS})"
    )

    vf = sub.add_parser("verify", help="fixity: read objects and compare them with the catalogue")
    amount = vf.add_mutually_exclusive_group()
    amount.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help=f"check N random instances ({VERIFY_SAMPLE})",
    )
    amount.add_argument("--all", action="store_true", help="check every instance")
    vf.add_argument("--store", metavar="NAME", help="a replica to check (default: active store)")
    vf.add_argument(
        "--repair",
        action="store_true",
        help="copy good versions of missing or damaged objects back from the replicas",
    )
    add_format(vf)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from lifecycle.dr import fixity
    from vna.archive import Archive

    actor = f"user:{getpass.getuser()}"
    archive = await Archive.open(settings)
    try:
        assert archive.sites is not None
        if args.command == "verify":
            report = await fixity.verify(
                archive.db,
                archive.sites,
                sample=args.sample,
                every=args.all,
                store_name=args.store,
                repair=args.repair,
                scratch_dir=archive.incoming,
                actor=actor,
            )
            if args.format == "json":
                print(json.dumps(report.as_dict(), indent=2))
            else:
                print(fixity.render_text(report))
            return 0 if report.ok else EXIT_PROBLEMS
        return await _rebuild(archive, args, actor)
    finally:
        await archive.close()


async def _rebuild(archive: Archive, args: argparse.Namespace, actor: str) -> int:
    from lifecycle.dr import catalogue_rebuild as rebuild
    from vna.recovery.sites import store_urls
    from vna.storage.factory import open_store

    assert archive.sites is not None
    urls = store_urls(archive.settings)
    # A declared store may be named instead of spelled out.
    url = urls.get(args.from_url, args.from_url)
    if not url.startswith(("file://", "s3://")):
        raise InvalidRequest(f"--from {args.from_url!r}: a file:// or s3:// URL, or a store name")
    names = {u.rstrip("/"): n for n, u in urls.items()}
    name = names.get(url.rstrip("/"), "rebuild-source")
    if name == archive.sites.active:
        source = archive.sites.active_store
        owned = False
    else:
        source = await open_store(url, name=name)
        owned = True
    replica = name if name in archive.sites.replica_names else None

    def progress(r: rebuild.RebuildReport) -> None:
        print(
            f"  {plural(r.objects, 'object')}: {plural(r.instances, 'instance')},"
            f" {r.failed_count:,} failed",
            file=sys.stderr,
            flush=True,
        )

    try:
        report = await rebuild.rebuild(
            archive.db,
            archive.sites,
            source,
            scratch_dir=archive.incoming,
            actor=actor,
            force=args.force,
            copy=not args.no_copy,
            replica_name=replica,
            jobs=args.jobs,
            progress=progress,
        )
    finally:
        if owned:
            await source.close()
    print(
        f"catalogue rebuilt from {url}: {plural(report.objects, 'object')} read,"
        f" {plural(report.instances, 'instance')} filed ({report.bytes / 1e6:.1f} MB) in"
        f" {plural(report.studies, 'study')} of {plural(report.patients, 'patient')};"
        f" {plural(report.versions, 'earlier version')},"
        f" {plural(report.duplicates, 'duplicate object')},"
        f" {report.already:,} already catalogued, {report.copied:,} copied into the active"
        f" store, {report.failed_count:,} not indexed"
    )
    if report.without_metadata:
        print(
            f"  {plural(report.without_metadata, 'object')} carried no archive metadata: received"
            f" times unknown; filed under source {rebuild.UNKNOWN_SOURCE} unless the study"
            " had another"
        )
    for key, reason in report.failed[:50]:
        print(f"  not indexed {key}: {reason}")
    if report.failed_count > 50:
        print(f"  ... and {report.failed_count - 50} more (see the audit trail)")
    return EXIT_PROBLEMS if report.failed_count else 0
