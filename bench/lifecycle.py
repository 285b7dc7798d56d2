"""Lifecycle engine benchmark: policy evaluation over a large catalogue, compression throughput
and the storage a CT corpus saves.

1. **Evaluation**: N generated instance rows (default 1,000,000: 20,000 studies of 2 series of
   25 instances, dates over 30 years, mixed modalities, sources and ages, some birth dates
   missing) are written straight into a migrated catalogue, then timed: computing every study's
   retain-until date (``recompute_stale``), a retention review as of today (set-based, saved),
   and a tiering evaluation that queues the moves.  Target: under 60 s together.
2. **Compression**: the CT corpus of ``bench/corpus.py`` (512x512, 12 bits stored, a phantom
   with per-slice noise) is ingested into an archive on the filesystem store, then the lifecycle
   workers compress it; printed: MB/s of original bytes through the whole job (read, compress,
   verify by decompressing, write, catalogue switch) and the storage saved in percent.  Then
   zstandard alone on the same files at several levels, to choose ``compression.level``.

    python bench/lifecycle.py                      # 1M rows, 1x1x100 CT corpus
    python bench/lifecycle.py --instances 200000 --ct-slices 40 --level 9 --workers 8

PostgreSQL: ``VNA_BENCH_DATABASE_URL`` (a server the benchmark may create databases on), or an
embedded server under a temporary directory.  Figures go to stdout and to
``bench/results/lifecycle-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# This file is named like the package it measures: keep bench/ off the path (Python puts the
# script's folder first) so that `import lifecycle` finds the package, not this script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import zstandard  # noqa: E402

from bench.corpus import CorpusSpec, generate  # noqa: E402
from lifecycle import retention, tiering  # noqa: E402
from lifecycle.worker import run_once  # noqa: E402
from vna.archive import Archive  # noqa: E402
from vna.catalog.database import Database, EmbeddedPostgres  # noqa: E402
from vna.catalog.migrate import migrate  # noqa: E402
from vna.config import (  # noqa: E402
    DEFAULT_SOURCE,
    CompressionSettings,
    LifecycleSettings,
    RetentionRuleSettings,
    Settings,
    TieringRuleSettings,
)
from vna.ingest.pipeline import Sender  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MB = 1_000_000

RETENTION_RULES = (
    RetentionRuleSettings(name="adult", min_age_at_study=18, retain_years=10),
    RetentionRuleSettings(name="child", max_age_at_study=17, retain_until_age=25, retain_years=10),
    RetentionRuleSettings(name="mammography", modalities=("MG",), retain_years=20),
    RetentionRuleSettings(name="hosp3-research", sources=("HOSP3",), retain_years=15),
)
TIERING_RULES = (
    TieringRuleSettings(tier="warm", name="idle-90d", min_days_since_access=90),
    TieringRuleSettings(tier="cold", name="old-3y", min_study_age_days=3 * 365),
)

# One statement per table, all set-based: a million rows in well under a minute.
# (statement, the counts it takes: p = patients, s = studies, n = series per study, i = per series)
GENERATE: list[tuple[str, str]] = [
    (
        """INSERT INTO patients (patient_id, issuer, patient_name, birth_date, sex)
        SELECT 'P' || p, 'BENCH', 'PATIENT^' || p,
               CASE WHEN p % 50 = 0 THEN ''
                    ELSE to_char(date '1930-01-01' + (p * 7919) % 33000, 'YYYYMMDD') END,
               CASE WHEN p % 2 = 0 THEN 'F' ELSE 'M' END
        FROM generate_series(1, $1::int) AS p""",
        "p",
    ),
    (
        """INSERT INTO studies (study_uid, patient_fk, study_date, study_description, source,
                                accession_number)
        SELECT '2.25.' || s, 1 + (s * 31) % $1::int,
               CASE WHEN s % 97 = 0 THEN NULL ELSE date '1995-01-01' + (s * 4243) % 11300 END,
               'STUDY ' || s, 'HOSP' || (1 + s % 3), 'A' || s
        FROM generate_series(1, $2::int) AS s""",
        "ps",
    ),
    (
        """INSERT INTO series (series_uid, study_fk, modality, series_number)
        SELECT '2.25.9' || st.id || '.' || n, st.id,
               (ARRAY['CT', 'MR', 'CR', 'MG', 'US'])[1 + (st.id * 7 + n) % 5], n
        FROM studies st, generate_series(1, $1::int) AS n""",
        "n",
    ),
    (
        """INSERT INTO instances (sop_uid, series_fk, sop_class_uid, instance_number,
                                  transfer_syntax, sha256, received_sha256, size, object_key,
                                  stored_size, source, received_at, last_accessed_at, metadata)
        SELECT '2.25.8' || se.id || '.' || n, se.id, '1.2.840.10008.5.1.4.1.1.2', n,
               '1.2.840.10008.1.2.1', h, h, 525000, 'sha256/' || h, 525000, 'HOSP1',
               now() - make_interval(days => (se.id % 2000)::int),
               CASE WHEN se.id % 3 = 0 THEN NULL
                    ELSE now() - make_interval(days => (se.id % 400)::int) END,
               '{}'::jsonb
        FROM series se, generate_series(1, $1::int) AS n,
             LATERAL (SELECT md5(se.id || '.' || n) || md5(n || '.' || se.id) AS h) AS d""",
        "i",
    ),
]


async def start_postgres(tmp: Path) -> tuple[str, EmbeddedPostgres | None]:
    external = os.environ.get("VNA_BENCH_DATABASE_URL")
    if external:
        return external, None
    server = EmbeddedPostgres(tmp / "pg", database="vna")
    return await asyncio.to_thread(server.start), server


async def fresh_database(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, query = admin_url.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


def timed(label: str, results: dict[str, Any], seconds: float, extra: str = "") -> None:
    results[label] = round(seconds, 2)
    print(f"  {label:<34} {seconds:8.2f} s  {extra}")


async def bench_evaluation(admin_url: str, instances: int) -> dict[str, Any]:
    per_series, series_per_study = 25, 2
    studies = max(instances // (per_series * series_per_study), 1)
    patients = max(studies // 2, 1)
    total = studies * series_per_study * per_series
    url = await fresh_database(admin_url, f"vna_bench_eval_{os.getpid()}")
    results: dict[str, Any] = {"instances": total, "studies": studies, "patients": patients}
    print(f"evaluation over {total:,} instances, {studies:,} studies, {patients:,} patients")
    conn = await asyncpg.connect(url)
    try:
        t0 = time.perf_counter()
        await conn.execute("SET synchronous_commit = off")
        counts = {"p": patients, "s": studies, "n": series_per_study, "i": per_series}
        for statement, takes in GENERATE:
            await conn.execute(statement, *(counts[c] for c in takes))
        await conn.execute("ANALYZE")
        timed("generate rows (not part of the target)", results, time.perf_counter() - t0)
    finally:
        await conn.close()

    db = await Database.connect(url, min_size=2, max_size=6)
    try:
        today = dt.date.today()
        t0 = time.perf_counter()
        computed = await retention.recompute_stale(db, RETENTION_RULES)
        t_ret = time.perf_counter() - t0
        timed("retention: retain-until per study", results, t_ret, f"{computed:,} studies")
        t0 = time.perf_counter()
        review = await retention.create_review(db, RETENTION_RULES, today, "bench")
        t_rev = time.perf_counter() - t0
        timed(
            "retention: review as of today",
            results,
            t_rev,
            f"{len(review.due):,} studies due,"
            f" {sum(i['instances'] for i in review.due):,} instances",
        )
        t0 = time.perf_counter()
        evaluation = await tiering.evaluate(db, TIERING_RULES, today)
        t_tier = time.perf_counter() - t0
        timed(
            "tiering: evaluate and queue moves",
            results,
            t_tier,
            f"{evaluation.studies:,} studies, moves queued {evaluation.queued}",
        )
        async with db.acquire() as conn:
            indefinite = await conn.fetchval(
                "SELECT count(*) FROM study_retention WHERE retain_until IS NULL"
            )
        total_s = t_ret + t_rev + t_tier
        results.update(
            {
                "due_studies": len(review.due),
                "kept_indefinitely": indefinite,
                "tier_moves_queued": evaluation.queued,
                "evaluation_total_s": round(total_s, 2),
                "target_s": 60,
            }
        )
        verdict = "within" if total_s < 60 else "OVER"
        print(f"  {'evaluation total':<34} {total_s:8.2f} s  ({verdict} the 60 s target)")
    finally:
        await db.close()
    return results


async def bench_compression(
    admin_url: str, tmp: Path, spec: CorpusSpec, level: int, workers: int
) -> dict[str, Any]:
    corpus = generate(spec)
    url = await fresh_database(admin_url, f"vna_bench_zstd_{os.getpid()}")
    settings = Settings(
        data_dir=tmp / "data",
        database_url=url,
        compression=CompressionSettings(level=level),
    )
    results: dict[str, Any] = {
        "corpus": spec.name,
        "instances": corpus.instance_count,
        "bytes": corpus.total_bytes,
        "level": level,
        "workers": workers,
    }
    print(
        f"compression of {corpus.instance_count} CT instances"
        f" ({corpus.total_bytes / MB:.1f} MB, {spec.name}) at level {level}, {workers} worker(s)"
    )
    archive = await Archive.open(settings)
    try:
        sender = Sender(source=DEFAULT_SOURCE, protocol="import", actor="bench")
        t0 = time.perf_counter()
        for path in corpus.files:
            copy = archive.incoming / f"{uuid.uuid4().hex}.dcm"
            shutil.copyfile(path, copy)
            await archive.ingester.ingest_file(copy, sender)
        timed("ingest (not part of the figure)", results, time.perf_counter() - t0)
        t0 = time.perf_counter()
        summary = await run_once(archive, workers=workers)
        seconds = time.perf_counter() - t0
        async with archive.db.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE compression = 'zstd') AS compressed,"
                " sum(size)::bigint AS size, sum(stored_size)::bigint AS stored FROM instances"
            )
        saved = 100 * (1 - row["stored"] / row["size"])
        rate = row["size"] / MB / seconds
        timed(
            "compression jobs",
            results,
            seconds,
            f"{summary.done['instance-stored']} jobs, {rate:.1f} MB/s of original bytes",
        )
        print(
            f"  storage saved on the CT corpus: {saved:.1f}%"
            f" ({row['size'] / MB:.1f} MB -> {row['stored'] / MB:.1f} MB,"
            f" {row['compressed']} of {corpus.instance_count} compressed)"
        )
        results.update(
            {
                "mb_per_s": round(rate, 1),
                "saved_percent": round(saved, 1),
                "compressed": row["compressed"],
            }
        )
    finally:
        await archive.close()
    return results


def bench_levels(spec: CorpusSpec, levels: list[int], sample: int = 20) -> list[dict[str, Any]]:
    """zstandard alone, one thread, on a sample of the corpus: ratio and speed per level."""
    files = generate(spec).files[:sample]
    data = [p.read_bytes() for p in files]
    size = sum(len(d) for d in data)
    out = []
    print(f"zstandard alone on {len(data)} files ({size / MB:.1f} MB), one thread:")
    for level in levels:
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        t0 = time.perf_counter()
        packed = [compressor.compress(d) for d in data]
        seconds = time.perf_counter() - t0
        stored = sum(len(p) for p in packed)
        decompressor = zstandard.ZstdDecompressor()
        t1 = time.perf_counter()
        for p in packed:
            decompressor.decompress(p)
        dseconds = time.perf_counter() - t1
        row = {
            "level": level,
            "saved_percent": round(100 * (1 - stored / size), 1),
            "compress_mb_s": round(size / MB / seconds, 1),
            "decompress_mb_s": round(size / MB / dseconds, 1),
        }
        out.append(row)
        print(
            f"  level {level:>2}: saved {row['saved_percent']:5.1f}%,"
            f" compress {row['compress_mb_s']:7.1f} MB/s,"
            f" decompress {row['decompress_mb_s']:7.1f} MB/s"
        )
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vna-bench-lifecycle-"))
    admin_url, server = await start_postgres(tmp)
    report: dict[str, Any] = {
        "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    try:
        if not args.skip_evaluation:
            report["evaluation"] = await bench_evaluation(admin_url, args.instances)
        spec = CorpusSpec(studies=args.ct_studies, series=args.ct_series, slices=args.ct_slices)
        if not args.skip_compression:
            report["compression"] = await bench_compression(
                admin_url, tmp, spec, args.level, args.workers
            )
            report["levels"] = bench_levels(spec, [int(x) for x in args.levels.split(",") if x])
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--ct-studies", type=int, default=1)
    parser.add_argument("--ct-series", type=int, default=1)
    parser.add_argument("--ct-slices", type=int, default=100)
    parser.add_argument("--level", type=int, default=CompressionSettings().level)
    parser.add_argument("--workers", type=int, default=LifecycleSettings().workers)
    parser.add_argument("--levels", default="1,3,9,19")
    parser.add_argument("--skip-evaluation", action="store_true")
    parser.add_argument("--skip-compression", action="store_true")
    args = parser.parse_args(argv)
    report = asyncio.run(main_async(args))
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"lifecycle-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
