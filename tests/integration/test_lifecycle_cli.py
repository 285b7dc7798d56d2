"""The lifecycle commands as a records manager and an administrator use them: ``vna lifecycle
run|status|retry``, ``vna retention review|approve|show``, ``vna hold set|list|release``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.lifecycle_support import ingest, opened
from tests.phantom import dicom_date, smooth_ct_study
from vna.cli import main
from vna.config import Settings

TODAY = dt.date.today()
CONFIG = """
[compression]
level = 3

[[retention_rules]]
name = "adult"
min_age_at_study = 18
retain_years = 10

[[tiering_rules]]
tier = "cold"
min_study_age_days = 36500
"""


@pytest.fixture
def cli(tmp_path: Path, archive_settings: Settings, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "vna.toml"
    config.write_text(CONFIG)
    monkeypatch.setenv("VNA_DATABASE_URL", archive_settings.database_url)
    monkeypatch.setenv("VNA_DATA_DIR", str(archive_settings.data_dir))

    def run(*args: str) -> int:
        return main(["--config", str(config), *args])

    return run


def load_studies(settings: Settings) -> dict[str, str]:
    old = smooth_ct_study(
        patient_id="OLD",
        series=1,
        slices=2,
        size=64,
        study_date=dicom_date(TODAY.replace(year=TODAY.year - 12)),
    )
    held = smooth_ct_study(
        patient_id="HELD",
        series=1,
        slices=1,
        size=64,
        study_date=dicom_date(TODAY.replace(year=TODAY.year - 15)),
    )
    new = smooth_ct_study(
        patient_id="NEW", series=1, slices=1, size=64, study_date=dicom_date(TODAY)
    )

    async def go() -> None:
        async with opened(settings) as archive:
            for s in (old, held, new):
                await ingest(archive, s)

    asyncio.run(go())
    return {
        "old": str(old[0].StudyInstanceUID),
        "held": str(held[0].StudyInstanceUID),
        "new": str(new[0].StudyInstanceUID),
    }


def test_lifecycle_commands(cli, archive_settings: Settings, tmp_path: Path, capsys) -> None:
    uids = load_studies(archive_settings)

    assert cli("lifecycle", "run", "--once") == 0
    out = capsys.readouterr().out
    assert "done 4 jobs (instance-stored 4)" in out and "retention computed" in out

    assert cli("hold", "set", "--patient", "HELD", "--reason", "court order 12/26") == 0
    assert "legal hold 1 set on the patient HELD" in capsys.readouterr().out
    assert cli("hold", "list") == 0
    assert "court order 12/26" in capsys.readouterr().out

    assert cli("retention", "review", "--format", "json") == 0
    review = json.loads(capsys.readouterr().out)
    assert [i["study_uid"] for i in review["items"] if i["state"] == "due"] == [uids["old"]]
    assert [i["study_uid"] for i in review["items"] if i["state"] == "held"] == [uids["held"]]
    assert review["due"]["studies"] == 1 and review["by_rule"][0]["key"] == "adult"

    page = tmp_path / "review.html"
    assert cli("retention", "review", "--format", "html", "--output", str(page)) == 0
    assert f"retention review {review['review'] + 1}: 1 study due" in capsys.readouterr().out
    html = page.read_text()
    assert "<svg" in html and "court order 12/26" in html and "<script" not in html

    assert cli("retention", "review", "--format", "csv") == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("state,study_uid") and len(rows) == 3

    assert cli("retention", "approve", str(review["review"]), "--as", "Jane Roe", "--yes") == 0
    assert "deleted 1 study" in capsys.readouterr().out

    assert cli("retention", "show", str(review["review"])) == 0
    assert "deleted 2 instances" in capsys.readouterr().out

    assert cli("lifecycle", "status", "--format", "json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["retention"]["studies"] == 2
    assert status["compression"]["compressed_instances"] == 2
    assert status["holds"]["patients"] == 1
    assert cli("lifecycle", "status") == 0
    assert "legal holds 1 patient," in capsys.readouterr().out

    assert cli("hold", "release", "1", "--reason", "case closed") == 0
    assert "released" in capsys.readouterr().out
    assert cli("lifecycle", "retry", "--all-dead") == 0
    assert "queued again: 0 jobs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["retention", "approve", "999", "--as", "J", "--yes"], "vna: no retention review 999"),
        (["retention", "review", "--as-of", "31/12/2030"], "vna: --as-of must be a date"),
        (["hold", "release", "42"], "vna: no legal hold 42"),
        (["hold", "set", "--study", "1.2.3", "--reason", "x"], "vna: study 1.2.3 is not in"),
    ],
)
def test_errors_are_one_line(cli, capsys, args: list[str], message: str) -> None:
    assert cli(*args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


def test_the_installed_command(tmp_path: Path, archive_settings: Settings) -> None:
    config = tmp_path / "vna.toml"
    config.write_text(CONFIG + '\n[lifecycle]\nworkers = "many"\n')
    result = subprocess.run(
        [str(Path(sys.executable).parent / "vna"), "--config", str(config), "lifecycle", "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "vna: configuration error: 'lifecycle.workers' must be an integer, got 'many'"
    )
