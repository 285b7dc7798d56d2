"""Side-by-side benchmark: our archive against Orthanc, over the same DICOMweb requests.

For each server in turn (never both at once, so they do not share the CPU): start it on an
empty data directory, then

1. STOW-RS: store the corpus with C parallel clients, B instances per multipart/related request
   (body streamed from the files), and check every response names every instance sent in
   ReferencedSOPSequence with nothing in FailedSOPSequence;
2. QIDO-RS: Q study queries, half by PatientID, half by StudyDate range, one after another,
   each answer checked against the corpus manifest; latency p50/p95;
3. WADO-RS: retrieve every whole study (multipart/related; type="application/dicom") with C
   parallel clients, reading every part and checking part count and byte count; MB/s;
4. STOW-RS with one client: store a second corpus of the same shape (another seed: other
   patients and UIDs, so nothing is a duplicate), after the queries so it cannot change their
   answers;

while a thread samples the memory of the server and of the PostgreSQL serving it.  All of it
is done in R rounds (3 by default), the two sides taking turns to go first, each round on
fresh servers: this shared machine's speed drifts by a fifth and more over minutes, and
alternating rounds put both sides through the same drift.  Prints one table of the medians over
the rounds with the ratio ours/Orthanc for each figure, the STOW-RS ratio of every round, and
writes everything, round by round, to ``bench/results/<timestamp>.json``.

    python bench/ingest.py                       # 4 studies x 2 series x 155 slices, both sides
    python bench/ingest.py --quick --only orthanc
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import DEFAULT_ROOT, Corpus, CorpusSpec, StudyInfo, generate
from servers import BenchError, PartialResult, Server, ServerError, start_orthanc, start_ours

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MB = 1_000_000  # throughput in decimal megabytes per second
DICOM_JSON = "application/dicom+json"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
STUDY_INSTANCE_UID = "0020000D"
_T = TypeVar("_T")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def latency_summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "mean_ms": round(float(np.mean(ms)), 2) if ms else float("nan"),
        "max_ms": round(max(ms), 2) if ms else float("nan"),
    }


# --- STOW-RS ---------------------------------------------------------------------------------


class MultipartRelated:
    """A STOW-RS request body (PS3.18 §10.5): one application/dicom part per file, streamed.

    The length is known up front (part headers + file sizes), so the request carries a
    Content-Length instead of chunked transfer coding, which not every server accepts.
    """

    def __init__(self, files: list[tuple[Path, int]]) -> None:
        self.files = files
        self.boundary = f"bench-{uuid.uuid4().hex}"
        self.content_type = f'multipart/related; type="application/dicom"; boundary={self.boundary}'
        self._heads = [
            (
                f"--{self.boundary}\r\nContent-Type: application/dicom\r\n"
                f"Content-Length: {size}\r\n\r\n"
            ).encode("ascii")
            for _, size in files
        ]
        self._tail = f"--{self.boundary}--\r\n".encode("ascii")
        parts = zip(self._heads, files, strict=True)
        self.length = sum(len(h) + size + 2 for h, (_, size) in parts) + len(self._tail)

    async def stream(self) -> AsyncIterator[bytes]:
        for head, (path, size) in zip(self._heads, self.files, strict=True):
            yield head
            # Read in the loop: the corpus is in the page cache (warm_page_cache), so this is
            # a memory copy, cheaper than a hop to a thread and back for every file.
            data = path.read_bytes()
            if len(data) != size:
                raise BenchError(f"{path} changed size while the benchmark ran")
            yield data
            yield b"\r\n"
        yield self._tail


def _stow_check(status: int, body: bytes, sent: set[str]) -> tuple[int, list[str]]:
    """(instances stored, problems) from one STOW-RS response."""
    if status not in (200, 202, 409):
        return 0, [f"HTTP {status}: {body[:200]!r}"]
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        return 0, [f"HTTP {status} with a body that is not DICOM JSON: {body[:200]!r}"]
    if isinstance(doc, list):  # some servers wrap the response dataset in an array
        doc = doc[0] if doc else {}
    referenced = {
        item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value", [None])[0]
        for item in doc.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
    }
    failed = doc.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
    problems = []
    if failed:
        reasons = sorted({str(f.get(FAILURE_REASON, {}).get("Value", ["?"])[0]) for f in failed})
        problems.append(f"{len(failed)} in FailedSOPSequence (FailureReason {', '.join(reasons)})")
    missing = sent - referenced
    if missing and not failed:
        problems.append(f"{len(missing)} sent but not in ReferencedSOPSequence")
    if status != 200:
        problems.insert(0, f"HTTP {status}")
    return len(sent & referenced), problems


async def stow(
    session: aiohttp.ClientSession, server: Server, corpus: Corpus, clients: int, batch: int
) -> dict[str, Any]:
    sizes = corpus.file_sizes()
    sop_of = corpus.sop_uid_of()
    files = corpus.files
    batches = [files[i : i + batch] for i in range(0, len(files), batch)]
    queue: asyncio.Queue[list[Path]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    latencies: list[float] = []
    problems: list[str] = []
    stored = 0
    url = f"{server.dicomweb}/studies"

    async def client() -> None:
        nonlocal stored
        while not queue.empty():
            paths = queue.get_nowait()
            body = MultipartRelated([(p, sizes[p]) for p in paths])
            headers = {
                "Content-Type": body.content_type,
                "Content-Length": str(body.length),
                "Accept": DICOM_JSON,
            }
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body.stream(), headers=headers) as resp:
                    content = await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                problems.append(f"request failed: {type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - t0)
            ok, issues = _stow_check(status, content, {sop_of[p] for p in paths})
            stored += ok
            problems.extend(issues)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    total_bytes = sum(sizes.values())
    result = {
        "instances_sent": len(files),
        "instances_stored": stored,
        "requests": len(batches),
        "bytes": total_bytes,
        "seconds": round(elapsed, 3),
        "instances_per_s": round(stored / elapsed, 1),
        "mb_per_s": round(total_bytes * stored / len(files) / MB / elapsed, 1),
        "request_latency": latency_summary(latencies),
    }
    if problems or stored != len(files):
        result["problems"] = problems[:20]
        raise PartialResult(
            result,
            f"STOW-RS stored {stored} of {len(files)} instances; first problem: "
            f"{problems[0] if problems else 'none reported'}",
        )
    return result


# --- QIDO-RS ---------------------------------------------------------------------------------


def _qido_plan(corpus: Corpus, count: int, seed: int) -> list[tuple[str, dict[str, str], set[str]]]:
    """(kind, query parameters, expected StudyInstanceUIDs) for ``count`` queries."""
    rng = random.Random(seed)
    by_patient: dict[str, set[str]] = {}
    for s in corpus.studies:
        by_patient.setdefault(s.patient_id, set()).add(s.study_uid)
    patients = sorted(by_patient)
    dates = sorted({dt.date.fromisoformat(_iso(s.study_date)) for s in corpus.studies})
    plan = []
    for i in range(count):
        if i % 2 == 0:
            pid = patients[rng.randrange(len(patients))]
            plan.append(("patient_id", {"PatientID": pid}, by_patient[pid]))
        else:
            start = rng.choice(dates) - dt.timedelta(days=rng.randrange(0, 20))
            end = start + dt.timedelta(days=rng.randrange(0, 90))
            expected = {
                s.study_uid
                for s in corpus.studies
                if start <= dt.date.fromisoformat(_iso(s.study_date)) <= end
            }
            rng_param = f"{start:%Y%m%d}-{end:%Y%m%d}"
            plan.append(("study_date_range", {"StudyDate": rng_param}, expected))
    return plan


def _iso(da: str) -> str:
    return f"{da[:4]}-{da[4:6]}-{da[6:]}"


async def qido(
    session: aiohttp.ClientSession, server: Server, corpus: Corpus, count: int
) -> dict[str, Any]:
    url = f"{server.dicomweb}/studies"
    headers = {"Accept": DICOM_JSON}

    async def query(params: dict[str, str], expected: set[str]) -> float:
        t0 = time.perf_counter()
        async with session.get(url, params=params, headers=headers) as resp:
            body = await resp.read()
            status = resp.status
        elapsed = time.perf_counter() - t0
        if status == 204:
            found: set[str] = set()
        elif status == 200:
            found = {
                d.get(STUDY_INSTANCE_UID, {}).get("Value", [None])[0] for d in json.loads(body)
            }
        else:
            raise BenchError(f"QIDO-RS {params} answered HTTP {status}: {body[:200]!r}")
        if found != expected:
            raise BenchError(
                f"QIDO-RS {params} found {len(found)} studies, expected {len(expected)}"
            )
        return elapsed

    for _, params, expected in _qido_plan(corpus, 10, seed=99):  # warm-up, not timed
        await query(params, expected)
    timings: dict[str, list[float]] = {}
    for kind, params, expected in _qido_plan(corpus, count, seed=7):
        timings.setdefault(kind, []).append(await query(params, expected))
    return {kind: latency_summary(values) for kind, values in timings.items()}


# --- WADO-RS ---------------------------------------------------------------------------------


class MultipartCounter:
    """Streaming multipart/related reader that keeps only counts: parts, bytes, Part 10 magic.

    Delimiters per RFC 2046 §5.1.1: CRLF "--" boundary; the first may open the body directly.
    """

    def __init__(self, boundary: str) -> None:
        self.delimiter = b"\r\n--" + boundary.encode("ascii")
        self.buffer = bytearray(b"\r\n")  # so the opening delimiter matches like the others
        self.state = "preamble"  # preamble | headers | body | done
        self.parts: list[int] = []
        self.part_types: set[str] = set()
        self.not_part10 = 0
        self._head = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        while True:
            if self.state == "done":
                self.buffer.clear()
                return
            if self.state == "headers":
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                for line in bytes(self.buffer[:end]).decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-type":
                        self.part_types.add(value.strip())
                del self.buffer[: end + 4]
                self.state = "body"
                self.parts.append(0)
                self._head.clear()
                continue
            at = self.buffer.find(self.delimiter)
            if at < 0:
                # Keep enough to recognise a delimiter split across chunks.
                keep = len(self.delimiter) + 2
                if len(self.buffer) > keep:
                    self._consume(len(self.buffer) - keep)
                return
            self._consume(at)  # the delimiter now opens the buffer
            after = len(self.delimiter)
            if len(self.buffer) < after + 2:
                return  # need to see whether this is the closing delimiter
            if self.state == "body":
                self._finish_part()
            if self.buffer[after : after + 2] == b"--":
                self.state = "done"
                continue
            eol = self.buffer.find(b"\r\n", after)
            if eol < 0:
                return
            # Headers start right after the delimiter line (transport padding ignored).
            del self.buffer[: eol + 2]
            self.buffer[:0] = b"\r\n"  # an empty header block is "\r\n" straight away
            self.state = "headers"

    def _consume(self, n: int) -> None:
        if self.state == "body" and n:
            self.parts[-1] += n
            if len(self._head) < 132:
                self._head += self.buffer[: min(n, 132 - len(self._head))]
        del self.buffer[:n]

    def _finish_part(self) -> None:
        if bytes(self._head[128:132]) != b"DICM":
            self.not_part10 += 1


def _boundary(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip().strip('"')
    raise BenchError(f"WADO-RS answer has no multipart boundary: Content-Type {content_type!r}")


async def wado(
    session: aiohttp.ClientSession, server: Server, corpus: Corpus, clients: int, rounds: int
) -> dict[str, Any]:
    headers = {"Accept": 'multipart/related; type="application/dicom"'}
    work: asyncio.Queue[StudyInfo] = asyncio.Queue()
    for _ in range(rounds):
        for s in corpus.studies:
            work.put_nowait(s)
    received = 0
    mismatched: list[str] = []
    latencies: list[float] = []

    async def retrieve(study: StudyInfo) -> None:
        nonlocal received
        t0 = time.perf_counter()
        async with session.get(
            f"{server.dicomweb}/studies/{study.study_uid}", headers=headers
        ) as resp:
            if resp.status != 200:
                body = await resp.read()
                raise BenchError(
                    f"WADO-RS study {study.study_uid} answered HTTP {resp.status}: {body[:200]!r}"
                )
            counter = MultipartCounter(_boundary(resp.headers.get("Content-Type", "")))
            async for chunk in resp.content.iter_any():
                counter.feed(chunk)
        latencies.append(time.perf_counter() - t0)
        if counter.state != "done":
            raise BenchError(f"WADO-RS study {study.study_uid}: multipart body ended early")
        if len(counter.parts) != len(study.files):
            raise BenchError(
                f"WADO-RS study {study.study_uid}: {len(counter.parts)} parts, "
                f"expected {len(study.files)}"
            )
        if counter.not_part10:
            raise BenchError(
                f"WADO-RS study {study.study_uid}: {counter.not_part10} parts are not "
                "DICOM Part 10 files (no DICM at offset 128)"
            )
        got = sum(counter.parts)
        received += got
        if got != study.bytes:
            mismatched.append(f"{study.study_uid}: {got} bytes, stored {study.bytes}")

    async def client() -> None:
        while not work.empty():
            await retrieve(work.get_nowait())

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    result: dict[str, Any] = {
        "studies_retrieved": len(latencies),
        "bytes": received,
        "seconds": round(elapsed, 3),
        "mb_per_s": round(received / MB / elapsed, 1),
        "study_latency": latency_summary(latencies),
        # Same bytes out as in: the server returned the stored files unchanged.
        "bytes_identical_in_size": not mismatched,
    }
    if mismatched:
        result["size_differences"] = mismatched[:10]
    return result


# --- one side --------------------------------------------------------------------------------


async def _exercise(
    server: Server,
    corpus: Corpus,
    single: Corpus | None,
    args: argparse.Namespace,
    result: dict[str, Any],
) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=args.request_timeout)
    connector = aiohttp.TCPConnector(limit=max(args.clients, 1))
    # DICOM pixel data gains little from gzip; ask both servers for the bytes as they are.
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, headers={"Accept-Encoding": "identity"}
    ) as session:
        say(
            f"  STOW-RS: {corpus.instance_count} instances, {args.clients} clients, "
            f"{args.batch} per request"
        )
        try:
            result["stow"] = await stow(session, server, corpus, args.clients, args.batch)
        except PartialResult as exc:
            result["stow"] = exc.result
            raise
        say(f"  QIDO-RS: {args.qido} queries")
        result["qido"] = await qido(session, server, corpus, args.qido)
        say(f"  WADO-RS: {len(corpus.studies) * args.wado_rounds} whole-study retrieves")
        result["wado"] = await wado(session, server, corpus, args.clients, args.wado_rounds)
        if single is not None:
            say(f"  STOW-RS: {single.instance_count} other instances, 1 client")
            try:
                result["stow_1"] = await stow(session, server, single, 1, args.batch)
            except PartialResult as exc:
                result["stow_1"] = exc.result
                raise


def run_client(main: Coroutine[Any, Any, _T]) -> _T:
    """Run the load generator on uvloop.  It shares the machine's cores with the server under
    test; the less CPU it takes, the more each figure is the server's own."""
    return uvloop.run(main)


def _cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    steal = fields[7] if len(fields) > 7 else 0
    return steal, sum(fields[:8])


def run_side(
    name: str,
    start: Callable[[], Server],
    corpus: Corpus,
    single: Corpus | None,
    args: argparse.Namespace,
    workdirs: list[Path],
) -> dict[str, Any]:
    """One side of one round.  The server's data directory is left for the caller to remove
    (``workdirs``) once every round is done: on a filesystem without a journal, ext4 scans past
    recently deleted inodes for every file it creates, so deleting one side's thousands of
    files would tax the side that runs next."""
    result: dict[str, Any] = {}
    say(f"[{name}] starting")
    server: Server | None = None
    try:
        server = start()
        workdirs.append(server.workdir)
        result["startup_seconds"] = round(server.startup_seconds, 2)
        result["server"] = {k: v for k, v in server.info.items() if k != "data_dir"}
        say(f"[{name}] ready in {server.startup_seconds:.1f} s at {server.dicomweb}")
        steal0, total0 = _cpu_ticks()
        run_client(_exercise(server, corpus, single, args, result))
        steal1, total1 = _cpu_ticks()
        if total1 > total0:
            # Time the hypervisor gave these cores to someone else: a slow round shows it.
            result["cpu_steal_percent"] = round(100 * (steal1 - steal0) / (total1 - total0), 1)
    except (ServerError, BenchError) as exc:
        result["error"] = str(exc)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}".rstrip(": ")
    except Exception as exc:  # a harness bug must not hide the other side's figures
        result["error"] = f"unexpected {type(exc).__name__}: {exc}"
        if args.debug:
            traceback.print_exc()
        else:
            result["error"] += " (re-run with --debug for the traceback)"
    finally:
        if server is not None:
            server.stop(keep=True)
            result["memory"] = server.memory_peak().as_dict()
            if args.keep:
                result["workdir"] = str(server.workdir)
    if "error" in result:
        say(f"[{name}] FAILED: {result['error']}")
    else:
        say(f"[{name}] done")
    return result


# --- report ----------------------------------------------------------------------------------

#: (label, path into a side's result, which direction is better)
ROWS: list[tuple[str, tuple[str, ...], str]] = [
    ("STOW-RS instances/s", ("stow", "instances_per_s"), "higher"),
    ("STOW-RS MB/s", ("stow", "mb_per_s"), "higher"),
    ("STOW-RS 1 client instances/s", ("stow_1", "instances_per_s"), "higher"),
    ("STOW-RS request p50 ms", ("stow", "request_latency", "p50_ms"), "lower"),
    ("STOW-RS request p95 ms", ("stow", "request_latency", "p95_ms"), "lower"),
    ("QIDO PatientID p50 ms", ("qido", "patient_id", "p50_ms"), "lower"),
    ("QIDO PatientID p95 ms", ("qido", "patient_id", "p95_ms"), "lower"),
    ("QIDO StudyDate range p50 ms", ("qido", "study_date_range", "p50_ms"), "lower"),
    ("QIDO StudyDate range p95 ms", ("qido", "study_date_range", "p95_ms"), "lower"),
    ("WADO-RS study MB/s", ("wado", "mb_per_s"), "higher"),
    ("WADO-RS study p50 ms", ("wado", "study_latency", "p50_ms"), "lower"),
    ("start-up s", ("startup_seconds",), "lower"),
    ("peak RSS server MB", ("memory", "peak_rss_server_mb"), "lower"),
    ("peak RSS server+PostgreSQL MB", ("memory", "peak_rss_total_mb"), "lower"),
    ("peak PSS server+PostgreSQL MB", ("memory", "peak_pss_total_mb"), "lower"),
]


def _dig(d: dict[str, Any], path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d if isinstance(d, (int, float)) else None


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for label, path, _ in ROWS:
        a, b = _dig(results.get("ours", {}), path), _dig(results.get("orthanc", {}), path)
        out[label] = round(a / b, 2) if a is not None and b else None
    return out


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's figures over its rounds: the median of each, the highest of each memory
    peak.  A round that failed makes the side failed, naming the round."""
    for i, r in enumerate(rounds, 1):
        if "error" in r:
            return {**r, "error": f"round {i}: {r['error']}" if len(rounds) > 1 else r["error"]}
    figures = _merge([{k: v for k, v in r.items() if k != "server"} for r in rounds], peak=False)
    if "server" in rounds[0]:
        figures["server"] = rounds[0]["server"]  # the first round's ports, not their median
    return figures


def _merge(values: list[Any], peak: bool) -> Any:
    first = values[0]
    if isinstance(first, dict):
        return {
            key: _merge(
                [v[key] for v in values if isinstance(v, dict) and key in v],
                peak or key == "memory",
            )
            for key in first
        }
    if isinstance(first, bool) or not all(isinstance(v, (int, float)) for v in values):
        return first
    merged = max(values) if peak else statistics.median(values)
    return round(merged, 3) if isinstance(merged, float) else merged


def stow_ratios(rounds: list[dict[str, dict[str, Any]]]) -> list[float | None]:
    """ours/Orthanc STOW-RS instances/s of each round, the two sides measured minutes apart."""
    path = ("stow", "instances_per_s")
    out: list[float | None] = []
    for r in rounds:
        a, b = _dig(r.get("ours", {}), path), _dig(r.get("orthanc", {}), path)
        out.append(round(a / b, 2) if a is not None and b else None)
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    def fmt(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.2f}".rstrip("0").rstrip(".")

    r = ratios(results)
    lines = [f"{'':32}{'ours':>12}{'orthanc':>12}{'ours/orthanc':>14}  better"]
    for label, path, better in ROWS:
        a, b = _dig(results.get("ours", {}), path), _dig(results.get("orthanc", {}), path)
        ratio = r[label]
        lines.append(
            f"{label:32}{fmt(a):>12}{fmt(b):>12}"
            f"{(f'{ratio:.2f}x' if ratio is not None else '-'):>14}  {better}"
        )
    for side in ("ours", "orthanc"):
        res = results.get(side)
        if res is None:
            continue
        if "error" in res:
            lines.append(f"{side}: FAILED: {res['error']}")
        wado_res = res.get("wado", {})
        if wado_res and not wado_res.get("bytes_identical_in_size", True):
            lines.append(
                f"{side}: WADO-RS returned files of other sizes than stored: "
                f"{wado_res.get('size_differences', [])[:2]}"
            )
    return "\n".join(lines)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warm_page_cache(corpus: Corpus) -> None:
    """Read the corpus once so neither side pays for the first cold read from disk."""
    for path in corpus.files:
        path.read_bytes()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Store, query and retrieve the same CT corpus on our archive and on Orthanc.",
    )
    p.add_argument("--studies", type=int, default=4)
    p.add_argument("--series", type=int, default=2, help="series per study")
    p.add_argument("--slices", type=int, default=155, help="slices (instances) per series")
    p.add_argument("--clients", type=int, default=4, help="parallel STOW-RS / WADO-RS clients")
    p.add_argument("--batch", type=int, help="instances per STOW-RS request (20; --quick: 10)")
    p.add_argument("--qido", type=int, default=200, help="QIDO-RS queries (half of each kind)")
    p.add_argument("--wado-rounds", type=int, default=1, help="times each study is retrieved")
    p.add_argument("--only", choices=("ours", "orthanc"), help="run one side only")
    p.add_argument(
        "--rounds",
        type=int,
        help="rounds on fresh servers, the sides taking turns to go first (3; --quick: 1)",
    )
    p.add_argument(
        "--no-single-client", action="store_true", help="skip the one-client STOW-RS run"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 studies x 2 series x 20 slices, 10 per request, 40 queries",
    )
    p.add_argument(
        "--orthanc-index-connections",
        type=int,
        default=5,
        help="Orthanc PostgreSQL IndexConnectionsCount (plugin default is 1)",
    )
    p.add_argument("--log-level", default="WARNING", help="VNA_LOG_LEVEL for our server")
    p.add_argument("--start-timeout", type=float, default=180)
    p.add_argument("--request-timeout", type=float, default=600)
    p.add_argument("--corpus-root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep", action="store_true", help="keep the servers' data directories")
    p.add_argument("--debug", action="store_true", help="tracebacks for unexpected errors")
    args = p.parse_args(argv)
    if args.quick:
        args.studies, args.series, args.slices, args.qido = 2, 2, 20, 40
    if args.batch is None:
        args.batch = 10 if args.quick else 20
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    for name in (
        "studies",
        "series",
        "slices",
        "clients",
        "batch",
        "qido",
        "wado_rounds",
        "rounds",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = CorpusSpec(args.studies, args.series, args.slices)
    corpus = generate(spec, args.corpus_root)
    say(
        f"corpus {corpus.directory.name}: {corpus.instance_count} instances, "
        f"{corpus.total_bytes / MB:.1f} MB, {len(corpus.studies)} studies"
    )
    single = None
    if args.clients != 1 and not args.no_single_client:
        single = generate(
            CorpusSpec(args.studies, args.series, args.slices, seed=spec.seed + 1),
            args.corpus_root,
        )
        warm_page_cache(single)

    sides: dict[str, Callable[[], Server]] = {
        "ours": lambda: start_ours(args.start_timeout, args.log_level),
        "orthanc": lambda: start_orthanc(args.start_timeout, args.orthanc_index_connections),
    }
    names = [name for name in sides if args.only in (None, name)]
    rounds: list[dict[str, dict[str, Any]]] = []
    workdirs: list[Path] = []
    try:
        for i in range(args.rounds):
            if args.rounds > 1:
                say(f"round {i + 1} of {args.rounds}")
            order = names if i % 2 == 0 else names[::-1]
            rounds.append(
                {
                    name: run_side(name, sides[name], corpus, single, args, workdirs)
                    for name in order
                }
            )
    finally:
        if not args.keep:
            for workdir in workdirs:
                shutil.rmtree(workdir, ignore_errors=True)
    results = {name: combine([r[name] for r in rounds]) for name in names}
    by_round = stow_ratios(rounds) if len(names) == 2 else []

    report = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "parameters": {
            "studies": args.studies,
            "series": args.series,
            "slices": args.slices,
            "instances": corpus.instance_count,
            "corpus_bytes": corpus.total_bytes,
            "clients": args.clients,
            "batch": args.batch,
            "qido_queries": args.qido,
            "wado_rounds": args.wado_rounds,
            "orthanc_index_connections": args.orthanc_index_connections,
            "rounds": args.rounds,
            "our_log_level": args.log_level,
        },
        "results": results,
        "ratios_ours_over_orthanc": ratios(results) if len(results) == 2 else {},
        "stow_ratio_by_round": by_round,
        "rounds": rounds,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")

    print()
    print(
        f"{corpus.instance_count} instances ({corpus.total_bytes / MB:.0f} MB), "
        f"{args.clients} clients, {args.batch} per STOW-RS request"
    )
    print(table(results))
    if len(rounds) > 1:
        print(f"(medians of {len(rounds)} rounds, the sides taking turns to go first)")
        if by_round:
            shown = " ".join(f"{r:.2f}x" if r is not None else "-" for r in by_round)
            print(f"STOW-RS ours/orthanc by round: {shown}")
    steal = [
        f"{name} {'/'.join(str(r[name].get('cpu_steal_percent', '-')) for r in rounds)}"
        for name in names
    ]
    print(f"CPU steal % during each side's rounds: {', '.join(steal)}")
    print(f"\nresults: {out}")
    return 0 if results and all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("interrupted; servers stopped")
        sys.exit(130)
