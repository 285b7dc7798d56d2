"""Web console page latency on a large catalogue (default 100,000 studies).

Generates the catalogue rows directly in PostgreSQL (patients with ~2.5 studies each, one
series of two instances per study: the console's searches cost by studies, and a study page
reads one study), starts ``vna serve`` on that database with an admin token, signs in to the
console as a browser would (session cookie, CSRF token) and times the pages an operator opens:
the studies search by patient ID, name prefix, date range plus modality and accession, a study
page, the patients search and a patient's page, the conflicts and changes lists.  Prints p50
and p95 per page.  The target of issue 22 is p95 under 150 ms.

    .venv/bin/python bench/console.py [--studies 100000] [--requests 100] [--pgdata DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.qido_scale import percentile, warm_page_cache  # noqa: E402
from bench.servers import start_ours  # noqa: E402
from vna.catalog.database import EmbeddedPostgres  # noqa: E402
from vna.catalog.migrate import migrate  # noqa: E402

TOKEN = "vna_bench-console-admin-token-000000000000000000000"
MODALITIES = ("CT", "MR", "CR", "US", "MG")
CHUNK = 5_000

GENERATE = [
    # Patients: ~2.5 studies each, three hospitals' issuers.
    """
    INSERT INTO patients (patient_id, issuer, patient_name, birth_date, sex)
    SELECT 'P' || lpad(g::text, 8, '0'), 'HOSP' || (g % 3 + 1), 'PATIENT^' || g,
           to_char(date '1940-01-01' + (g * 7919 % 29000), 'YYYYMMDD'),
           CASE WHEN g % 2 = 0 THEN 'F' ELSE 'M' END
    FROM generate_series(1, $1::int) g
    """,
    """
    INSERT INTO studies (study_uid, patient_fk, study_date, study_time, accession_number,
                         study_id, study_description, referring_physician, source)
    SELECT '1.2.826.0.1.3680043.10.1.' || g, 1 + (g::bigint * 104729 % $1::int),
           date '2015-01-01' + (g * 7 % 3650), '101500', 'ACC' || lpad(g::text, 9, '0'),
           g::text, 'STUDY ' || (g % 50), 'DOCTOR^' || (g % 300), 'HOSP' || (g % 3 + 1)
    FROM generate_series(1, $2::int) g
    """,
    """
    INSERT INTO series (series_uid, study_fk, modality, series_number, series_description)
    SELECT '1.2.826.0.1.3680043.10.2.' || s.id, s.id,
           (ARRAY['CT', 'MR', 'CR', 'US', 'MG'])[1 + s.id % 5], 1, 'SERIES 1'
    FROM studies s
    WHERE s.id BETWEEN $3::bigint AND $4::bigint
    """,
    """
    INSERT INTO instances (sop_uid, series_fk, sop_class_uid, instance_number, transfer_syntax,
                           rows, columns, has_pixel_data, sha256, received_sha256, size,
                           object_key, stored_size, source, metadata)
    SELECT se.series_uid || '.' || n, se.id, '1.2.840.10008.5.1.4.1.1.2', n,
           '1.2.840.10008.1.2.1', 512, 512, true,
           md5(se.id || '.' || n) || md5(n || '.' || se.id),
           md5(se.id || '.' || n) || md5(n || '.' || se.id), 525000,
           'sha256/00/00/' || md5(se.id || '.' || n) || md5(n || '.' || se.id), 525000, 'HOSP1',
           jsonb_build_object(
             '00080016', jsonb_build_object('vr', 'UI', 'Value',
                                            jsonb_build_array('1.2.840.10008.5.1.4.1.1.2')),
             '00080018', jsonb_build_object('vr', 'UI', 'Value',
                                            jsonb_build_array(se.series_uid || '.' || n)),
             '00200013', jsonb_build_object('vr', 'IS', 'Value', jsonb_build_array(n)))
    FROM series se, generate_series(1, 2) n
    WHERE se.study_fk BETWEEN $3::bigint AND $4::bigint
    """,
]


async def generate(url: str, studies: int) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        if not await conn.fetchval("SELECT count(*) FROM studies"):
            patients = max(1, int(studies / 2.5))
            print(f"generating {patients:,} patients, {studies:,} studies")
            started = time.perf_counter()
            await conn.execute("SET synchronous_commit = off")
            for sql in GENERATE[:2]:
                await conn.execute(
                    sql.replace("$1::int", str(patients)).replace("$2::int", str(studies))
                )
            # Series and instances in slices of studies: one statement for all of them holds
            # more locks (the hierarchy triggers) than the server's lock table takes.
            for low in range(1, studies + 1, CHUNK):
                for sql in GENERATE[2:]:
                    await conn.execute(
                        sql.replace("$3::bigint", str(low)).replace(
                            "$4::bigint", str(low + CHUNK - 1)
                        )
                    )
            await conn.execute("VACUUM ANALYZE")
            print(f"generated in {time.perf_counter() - started:.0f} s")
        counts = {}
        for table in ("patients", "studies", "series", "instances"):
            counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        return counts
    finally:
        await conn.close()


class Console:
    """A signed-in console session over HTTP, as a browser keeps it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        form = self.http.get(f"{base}/ui/signin", timeout=30).text
        self.http.post(
            f"{base}/ui/signin",
            data={"csrf": _csrf(form), "token": TOKEN},
            timeout=30,
        ).raise_for_status()
        self.csrf = _csrf(self.http.get(f"{base}/ui/studies", timeout=30).text)

    def get(self, path: str) -> float:
        started = time.perf_counter()
        resp = self.http.get(self.base + path, timeout=30, allow_redirects=False)
        elapsed = (time.perf_counter() - started) * 1000
        if resp.status_code != 200:
            raise RuntimeError(f"GET {path}: {resp.status_code} {resp.text[:200]}")
        return elapsed

    def post(self, path: str, data: dict[str, str]) -> float:
        started = time.perf_counter()
        resp = self.http.post(
            self.base + path, data={"csrf": self.csrf, **data}, timeout=30, allow_redirects=False
        )
        elapsed = (time.perf_counter() - started) * 1000
        if resp.status_code != 200:
            raise RuntimeError(f"POST {path}: {resp.status_code} {resp.text[:200]}")
        return elapsed


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    if not found:
        raise RuntimeError("no CSRF token in the page")
    return found.group(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--pgdata", type=Path, help="reuse a generated cluster (kept)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="vna-console-"))
    pgdata = args.pgdata or root / "pg"
    pg = EmbeddedPostgres(pgdata, database="vna")
    url = pg.start()
    try:
        counts = asyncio.run(generate(url, args.studies))
        print("catalogue:", ", ".join(f"{v:,} {k}" for k, v in counts.items()))
        warm_page_cache(pgdata)
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        server = start_ours(
            database_url=url, config_toml=f'[admin]\nadmin_token_sha256 = "{digest}"\n'
        )
        try:
            console = Console(server.dicomweb.removesuffix("/dicom-web"))
            rng = random.Random(22)
            n_studies, n_patients = counts["studies"], counts["patients"]

            def study_date() -> dict[str, str]:
                start = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randint(0, 3600))
                end = start + dt.timedelta(days=30)
                return {
                    "date_from": f"{start:%Y-%m-%d}",
                    "date_to": f"{end:%Y-%m-%d}",
                    "modality": rng.choice(MODALITIES),
                }

            pages: dict[str, Callable[[], float]] = {
                "studies (form)": lambda: console.get("/ui/studies"),
                "studies by patient ID": lambda: console.post(
                    "/ui/studies", {"patient_id": f"P{rng.randint(1, n_patients):08d}"}
                ),
                "studies by name prefix": lambda: console.post(
                    "/ui/studies", {"patient_name": f"patient^{rng.randint(1, n_patients)}"}
                ),
                "studies by date + modality": lambda: console.post("/ui/studies", study_date()),
                "studies by accession": lambda: console.post(
                    "/ui/studies", {"accession": f"ACC{rng.randint(1, n_studies):09d}"}
                ),
                "study page": lambda: console.get(
                    f"/ui/studies/1.2.826.0.1.3680043.10.1.{rng.randint(1, n_studies)}"
                ),
                "patients by ID": lambda: console.post(
                    "/ui/patients", {"patient_id": f"P{rng.randint(1, n_patients):08d}"}
                ),
                "patients (all, page 1)": lambda: console.post("/ui/patients", {}),
                "patient page": lambda: console.get(f"/ui/patients/{rng.randint(1, n_patients)}"),
                "conflicts": lambda: console.get("/ui/conflicts"),
                "changes": lambda: console.get("/ui/patients/changes"),
            }
            print(f"\n{'page':<30}{'p50 ms':>10}{'p95 ms':>10}")
            worst = 0.0
            for name, hit in pages.items():
                for _ in range(5):  # warm up caches and the connection pool
                    hit()
                times = [hit() for _ in range(args.requests)]
                p95 = percentile(times, 95)
                worst = max(worst, p95)
                print(f"{name:<30}{percentile(times, 50):>10.1f}{p95:>10.1f}")
            print(f"\nworst p95 {worst:.1f} ms (target < 150 ms)")
        finally:
            server.stop()
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
