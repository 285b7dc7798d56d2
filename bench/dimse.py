"""Side-by-side DIMSE benchmark: our archive against Orthanc, with dcmtk as the client.

For each server in turn (never both at once), on an empty data directory:

1. C-STORE over 1 association: one ``storescu`` process sends corpus A (default 4 studies x
   2 series x 155 CT slices, 1,240 instances);
2. C-STORE over N associations (default 4): N ``storescu`` processes at once, each sending a
   contiguous quarter of corpus B (same shape, other seed: other UIDs, so nothing is a
   duplicate of step 1);
3. C-MOVE of one 500-instance study: corpus C (1 study x 1 series x 500 slices) is stored
   (untimed), then ``movescu`` (study root, STUDY level) asks the server to send it to a
   ``storescp`` on a free port that writes the files to a temporary directory.

Every C-STORE response must be Success (counted from ``storescu -v``); the C-MOVE must end
with status Success and the SCP must hold every instance. Prints instances/s, MB/s and the
ratio ours/Orthanc, and writes everything to ``bench/results/dimse-<timestamp>.json``.

    python bench/dimse.py            # default corpora, both servers
    python bench/dimse.py --quick    # 2 x 2 x 20 corpora, 50-instance C-MOVE
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import DEFAULT_ROOT, Corpus, CorpusSpec, generate
from servers import (
    BenchError,
    PartialResult,
    Server,
    ServerError,
    free_port,
    start_orthanc,
    start_ours,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MB = 1_000_000  # throughput in decimal megabytes per second
STORESCU = shutil.which("storescu") or "/usr/bin/storescu"
STORESCP = shutil.which("storescp") or "/usr/bin/storescp"
MOVESCU = shutil.which("movescu") or "/usr/bin/movescu"
SCU_AET = "BENCHSCU"
SCP_AET = "BENCHSCP"
CORPUS_SEEDS = {"store_1": 1, "store_n": 2, "move": 3}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) if kept else "no output"


# --- C-STORE ---------------------------------------------------------------------------------


def _storescu(host: str, port: int, aec: str, files: list[Path], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [STORESCU, "-v", "-aet", SCU_AET, "-aec", aec, host, str(port), *map(str, files)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def c_store(
    host: str, port: int, aec: str, corpus: Corpus, associations: int, workdir: Path
) -> dict[str, Any]:
    """Send the corpus over ``associations`` concurrent storescu processes; time the lot."""
    files = corpus.files
    size = -(-len(files) // associations)
    chunks = [files[i : i + size] for i in range(0, len(files), size)]
    logs = [workdir / f"storescu-{associations}-{i}.log" for i in range(len(chunks))]
    t0 = time.perf_counter()
    procs = [
        _storescu(host, port, aec, chunk, log) for chunk, log in zip(chunks, logs, strict=True)
    ]
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - t0
    stored = 0
    problems: list[str] = []
    for code, log in zip(codes, logs, strict=True):
        text = log.read_text(errors="replace")
        ok = text.count("Received Store Response (Success)")
        stored += ok
        bad = re.findall(r"Received Store Response \((?!Success)[^)]*\)", text)
        if bad:
            problems.append(f"{len(bad)} responses not Success, e.g. {bad[0]}")
        if code != 0:
            problems.append(f"storescu exit code {code}: {_tail(text)}")
    total = corpus.total_bytes
    result: dict[str, Any] = {
        "associations": len(chunks),
        "instances_sent": len(files),
        "instances_stored": stored,
        "bytes": total,
        "seconds": round(elapsed, 3),
        "instances_per_s": round(stored / elapsed, 1),
        "mb_per_s": round(total * stored / len(files) / MB / elapsed, 1),
    }
    if problems or stored != len(files):
        result["problems"] = problems[:10]
        raise PartialResult(
            result,
            f"C-STORE ({len(chunks)} associations) stored {stored} of {len(files)}; "
            f"first problem: {problems[0] if problems else 'none reported'}",
        )
    return result


# --- C-MOVE ----------------------------------------------------------------------------------


def _wait_listening(proc: subprocess.Popen, port: int, log: Path, timeout: float = 10) -> None:
    """Wait until storescp's port is bound (seen via a failing bind, not a connection, which
    storescp would count as an aborted association)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"storescp exited with {proc.returncode}: {_tail(log.read_text())}")
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)
    raise BenchError(f"storescp did not listen on port {port} within {timeout:.0f} s")


def c_move(
    host: str, port: int, aec: str, study_uid: str, corpus: Corpus, scp_port: int, workdir: Path
) -> dict[str, Any]:
    received_dir = workdir / "received"
    received_dir.mkdir()
    scp_log = workdir / "storescp.log"
    with scp_log.open("wb") as out:
        scp = subprocess.Popen(
            [STORESCP, "-aet", SCP_AET, "-od", str(received_dir), str(scp_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_listening(scp, scp_port, scp_log)
        cmd = [
            MOVESCU,
            "-v",
            "-S",
            "-aet",
            SCU_AET,
            "-aec",
            aec,
            "-aem",
            SCP_AET,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid}",
            host,
            str(port),
        ]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        elapsed = time.perf_counter() - t0
        # storescp writes each file before acknowledging it, so all are on disk now.
    finally:
        scp.terminate()
        scp.wait(10)
    output = done.stdout + done.stderr
    (workdir / "movescu.log").write_text(output)
    files = [p for p in received_dir.iterdir() if p.is_file()]
    received = len(files)
    received_bytes = sum(p.stat().st_size for p in files)
    shutil.rmtree(received_dir, ignore_errors=True)
    statuses = re.findall(r"Received Final Move Response \(([^)]*)\)", output)
    result: dict[str, Any] = {
        "instances_expected": corpus.instance_count,
        "instances_received": received,
        "bytes_received": received_bytes,
        # storescp writes its own File Meta Information, so sizes differ by a few bytes.
        "bytes_stored": corpus.total_bytes,
        "seconds": round(elapsed, 3),
        "instances_per_s": round(received / elapsed, 1),
        "mb_per_s": round(received_bytes / MB / elapsed, 1),
        "final_status": statuses[-1] if statuses else None,
    }
    if done.returncode != 0 or received != corpus.instance_count or statuses[-1:] != ["Success"]:
        raise PartialResult(
            result,
            f"C-MOVE: movescu exit {done.returncode}, final status "
            f"{result['final_status']}, storescp received {received} of "
            f"{corpus.instance_count}; movescu said: {_tail(output)}",
        )
    return result


# --- one side --------------------------------------------------------------------------------


def run_side(
    name: str,
    start: Callable[[], Server],
    aec: str,
    port_key: str,
    corpora: dict[str, Corpus],
    scp_port: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    say(f"[{name}] starting")
    server: Server | None = None
    workdir = Path(tempfile.mkdtemp(prefix=f"vna-bench-dimse-{name}-"))
    try:
        server = start()
        port = int(server.info[port_key])
        result["startup_seconds"] = round(server.startup_seconds, 2)
        result["server"] = {k: v for k, v in server.info.items() if k != "data_dir"}
        result["server"]["ae_title"] = aec
        say(f"[{name}] ready in {server.startup_seconds:.1f} s, DIMSE {aec}@127.0.0.1:{port}")
        for key, associations in (("store_1", 1), ("store_n", args.associations)):
            corpus = corpora[key]
            say(f"  C-STORE: {corpus.instance_count} instances, {associations} association(s)")
            try:
                result[key] = c_store("127.0.0.1", port, aec, corpus, associations, workdir)
            except PartialResult as exc:
                result[key] = exc.result
                raise
        move = corpora["move"]
        say(f"  C-STORE (untimed for the table): {move.instance_count}-instance study")
        result["move_setup"] = c_store("127.0.0.1", port, aec, move, 1, workdir)
        say(f"  C-MOVE: {move.instance_count} instances to {SCP_AET}@127.0.0.1:{scp_port}")
        try:
            result["move"] = c_move(
                "127.0.0.1", port, aec, move.studies[0].study_uid, move, scp_port, workdir
            )
        except PartialResult as exc:
            result["move"] = exc.result
            raise
    except (ServerError, BenchError) as exc:
        result["error"] = str(exc)
    except (OSError, subprocess.SubprocessError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a harness bug must not hide the other side's figures
        result["error"] = f"unexpected {type(exc).__name__}: {exc}"
        if args.debug:
            traceback.print_exc()
        else:
            result["error"] += " (re-run with --debug for the traceback)"
    finally:
        if server is not None:
            server.stop(keep=args.keep)
            result["memory"] = server.memory_peak().as_dict()
            if args.keep:
                result["workdir"] = str(server.workdir)
        if args.keep:
            result["client_logs"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"[{name}] FAILED: {result['error']}" if "error" in result else f"[{name}] done")
    return result


# --- report ----------------------------------------------------------------------------------


def rows(associations: int) -> list[tuple[str, tuple[str, ...], str]]:
    n = f"{associations} assocs"
    return [
        ("C-STORE 1 assoc instances/s", ("store_1", "instances_per_s"), "higher"),
        ("C-STORE 1 assoc MB/s", ("store_1", "mb_per_s"), "higher"),
        (f"C-STORE {n} instances/s", ("store_n", "instances_per_s"), "higher"),
        (f"C-STORE {n} MB/s", ("store_n", "mb_per_s"), "higher"),
        ("C-MOVE study instances/s", ("move", "instances_per_s"), "higher"),
        ("C-MOVE study MB/s", ("move", "mb_per_s"), "higher"),
        ("C-MOVE study s", ("move", "seconds"), "lower"),
        ("start-up s", ("startup_seconds",), "lower"),
        ("peak RSS server MB", ("memory", "peak_rss_server_mb"), "lower"),
        ("peak PSS server+PostgreSQL MB", ("memory", "peak_pss_total_mb"), "lower"),
    ]


def _dig(d: dict[str, Any], path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d if isinstance(d, (int, float)) else None


def ratios(results: dict[str, dict[str, Any]], associations: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for label, path, _ in rows(associations):
        a, b = _dig(results.get("ours", {}), path), _dig(results.get("orthanc", {}), path)
        out[label] = round(a / b, 2) if a is not None and b else None
    return out


def table(results: dict[str, dict[str, Any]], associations: int) -> str:
    def fmt(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.2f}".rstrip("0").rstrip(".")

    r = ratios(results, associations)
    lines = [f"{'':32}{'ours':>12}{'orthanc':>12}{'ours/orthanc':>14}  better"]
    for label, path, better in rows(associations):
        a, b = _dig(results.get("ours", {}), path), _dig(results.get("orthanc", {}), path)
        ratio = r[label]
        lines.append(
            f"{label:32}{fmt(a):>12}{fmt(b):>12}"
            f"{(f'{ratio:.2f}x' if ratio is not None else '-'):>14}  {better}"
        )
    for side in ("ours", "orthanc"):
        res = results.get(side, {})
        if "error" in res:
            lines.append(f"{side}: FAILED: {res['error']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="C-STORE and C-MOVE the same CT corpora on our archive and on Orthanc.",
    )
    p.add_argument("--studies", type=int, default=4)
    p.add_argument("--series", type=int, default=2, help="series per study")
    p.add_argument("--slices", type=int, default=155, help="slices (instances) per series")
    p.add_argument("--associations", type=int, default=4, help="concurrent C-STORE associations")
    p.add_argument("--move-slices", type=int, default=500, help="instances in the C-MOVE study")
    p.add_argument("--only", choices=("ours", "orthanc"), help="run one side only")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 2 x 2 x 20 corpora, 50-instance C-MOVE"
    )
    p.add_argument("--orthanc-index-connections", type=int, default=5)
    p.add_argument("--log-level", default="WARNING", help="VNA_LOG_LEVEL for our server")
    p.add_argument("--start-timeout", type=float, default=180)
    p.add_argument("--corpus-root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep", action="store_true", help="keep data directories and client logs")
    p.add_argument("--debug", action="store_true", help="tracebacks for unexpected errors")
    args = p.parse_args(argv)
    if args.quick:
        args.studies, args.series, args.slices, args.move_slices = 2, 2, 20, 50
    for name in ("studies", "series", "slices", "associations", "move_slices"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [b for b in (STORESCU, STORESCP, MOVESCU) if not Path(b).exists()]
    if missing:
        say(f"dcmtk tools missing ({', '.join(missing)}): apt-get install dcmtk")
        return 1
    shape = (args.studies, args.series, args.slices)
    corpora = {
        "store_1": generate(CorpusSpec(*shape, seed=CORPUS_SEEDS["store_1"]), args.corpus_root),
        "store_n": generate(CorpusSpec(*shape, seed=CORPUS_SEEDS["store_n"]), args.corpus_root),
        "move": generate(
            CorpusSpec(1, 1, args.move_slices, seed=CORPUS_SEEDS["move"]), args.corpus_root
        ),
    }
    for key, corpus in corpora.items():
        say(
            f"corpus {key}: {corpus.directory.name}, {corpus.instance_count} instances, "
            f"{corpus.total_bytes / MB:.1f} MB"
        )
        for path in corpus.files:  # warm the page cache: no side pays for a cold read
            path.read_bytes()

    scp_port = free_port()
    toml = (
        f'[[destinations]]\nname = "bench"\nae_title = "{SCP_AET}"\n'
        f'host = "127.0.0.1"\nport = {scp_port}\n'
    )
    sides: dict[str, tuple[Callable[[], Server], str, str]] = {
        "ours": (
            lambda: start_ours(args.start_timeout, args.log_level, config_toml=toml),
            "VNA",
            "dimse_port",
        ),
        "orthanc": (
            lambda: start_orthanc(
                args.start_timeout,
                args.orthanc_index_connections,
                modalities={"bench": (SCP_AET, "127.0.0.1", scp_port)},
            ),
            "ORTHANC",
            "dicom_port",
        ),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, (start, aec, port_key) in sides.items():
        if args.only in (None, name):
            results[name] = run_side(name, start, aec, port_key, corpora, scp_port, args)

    versions = {}
    for tool in (STORESCU, MOVESCU):
        with_version = subprocess.run([tool, "--version"], capture_output=True, text=True)
        versions[Path(tool).name] = with_version.stdout.splitlines()[0].strip(" $")
    report = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "clients": versions,
        "parameters": {
            "corpora": {
                key: {
                    "name": c.directory.name,
                    "instances": c.instance_count,
                    "bytes": c.total_bytes,
                }
                for key, c in corpora.items()
            },
            "associations": args.associations,
            "move_slices": args.move_slices,
            "orthanc_index_connections": args.orthanc_index_connections,
            "our_log_level": args.log_level,
        },
        "results": results,
        "ratios_ours_over_orthanc": ratios(results, args.associations) if len(results) == 2 else {},
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"dimse-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")

    c1, move = corpora["store_1"], corpora["move"]
    print()
    print(
        f"C-STORE {c1.instance_count} instances ({c1.total_bytes / MB:.0f} MB) per run, "
        f"1 and {args.associations} associations (storescu); C-MOVE of a "
        f"{move.instance_count}-instance study ({move.total_bytes / MB:.0f} MB) to storescp"
    )
    print(table(results, args.associations))
    print(f"\nresults: {out}")
    return 0 if results and all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("interrupted; servers stopped")
        sys.exit(130)
