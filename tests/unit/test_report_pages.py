"""The HTML pages of the lifecycle engine (Jinja2 templates): DICOM text is escaped, the
review's study table fits a laptop screen (long UIDs wrap) and the pages print."""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser
from typing import Any

from lifecycle.dr.drill import DrillRead, DrillResult
from lifecycle.dr.report import render_drill_html
from lifecycle.report import render_html
from lifecycle.retention import Review

LONG_UID = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678"


def _item(n: int, **changes: Any) -> dict[str, Any]:
    return {
        "review_fk": 1,
        "study_fk": n,
        "study_uid": f"{LONG_UID[:-2]}{n:02d}",
        "patient_id": f"P{n:05d}",
        "issuer": "HOSP1",
        "patient_name": "DOE^JANE<script>alert(1)</script>",
        "accession_number": f"ACC{n}",
        "study_date": dt.date(2012, 5, n),
        "study_description": "CT chest & abdomen",
        "modalities": ["CT"],
        "source": "HOSP1",
        "rule": "adult",
        "rule_fingerprint": "f1",
        "retain_until": dt.date(2022, 5, n),
        "basis": "10 years after the study date",
        "instances": 120,
        "max_instance_id": n,
        "bytes": 64_000_000,
        "stored_bytes": 30_000_000,
        "hold": None,
        "state": "due",
        "outcome": None,
        **changes,
    }


REVIEW = Review(
    id=4,
    as_of=dt.date(2026, 1, 1),
    created_at=dt.datetime(2026, 1, 1, 9, 30),
    created_by="records",
    rules_fingerprint="abc",
    state="open",
    items=[_item(1), _item(2), _item(3, state="held", hold="hold 1 on the patient: court order")],
)


class _Cells(HTMLParser):
    """Texts and the classes of the elements enclosing them."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.found: list[tuple[str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in ("br", "col", "meta"):
            self.stack.append(dict(attrs).get("class") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("br", "col", "meta") and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.found.append((data, " ".join(self.stack)))


def _parse(page: str) -> _Cells:
    cells = _Cells()
    cells.feed(page)
    return cells


def _style(page: str) -> str:
    match = re.search(r"<style>(.*?)</style>", page, re.S)
    assert match
    return re.sub(r"\s+", " ", match.group(1))


def test_review_escapes_dicom_text() -> None:
    page = render_html(REVIEW)
    cells = _parse(page)
    assert "script" not in cells.tags
    assert any("DOE^JANE<script>alert(1)</script>" in text for text, _ in cells.found)
    assert "CT chest &amp; abdomen" in page


def test_review_table_fits_a_laptop_screen_and_uids_wrap() -> None:
    page = render_html(REVIEW)
    style = _style(page)
    # The table takes the page's width, not the width of its longest unbroken text...
    assert re.search(r"table\.items \{ width: 100%; table-layout: fixed; \}", style)
    # ...and a 64-character UID breaks inside its cell.
    assert ".uid { overflow-wrap: anywhere; word-break: break-all; }" in style
    uids = [
        (text, classes) for text, classes in _parse(page).found if text.startswith(LONG_UID[:20])
    ]
    assert len(uids) == 3
    assert all("uid" in classes.split() for _, classes in uids)


def test_pages_have_a_print_stylesheet() -> None:
    review = _style(render_html(REVIEW))
    assert "@media print" in review
    assert "@page { size: A4 landscape;" in review
    assert "tr { break-inside: avoid; }" in review
    assert "thead { display: table-header-group; }" in review  # headers repeat on each page
    assert "@media print" in _style(render_drill_html(_drill()))


def _drill() -> DrillResult:
    return DrillResult(
        store="dr",
        storage_url="file:///dr",
        tracking="archive",
        mode="full",
        started_at="2026-01-01T10:00:00+00:00",
        actor="tester",
        checked=2,
        verified=1,
        defects=[
            DrillRead(LONG_UID, "1.2", "1.2.3", "k", "2026-01-01T09:00:00+00:00", 10, "corrupt",
                      "defect", "read 3 bytes <not the image>"),
        ],
        id=5,
    )  # fmt: skip


def test_drill_page_names_each_defect() -> None:
    page = render_drill_html(_drill())
    cells = _parse(page)
    assert any(text.startswith("FAILED: 1 instance(s)") for text, _ in cells.found)
    assert any(
        text == LONG_UID and {"defect", "uid"} <= set(classes.split())
        for text, classes in cells.found
    )
    assert "read 3 bytes &lt;not the image&gt;" in page
