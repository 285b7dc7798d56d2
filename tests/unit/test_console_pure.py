"""The web console's pure parts: the session cookie's attributes over HTTP and HTTPS, the
pager, and the QIDO-RS parameters a study search form becomes."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from vna.dicom.qido_params import parse_qido
from vna.ui.app import _cookie
from vna.ui.core import Pager
from vna.ui.pages.studies import qido_params


def _request(secure: bool) -> web.Request:
    request = make_mocked_request("POST", "/ui/signin")
    # As aiohttp sees a request that came over TLS (or through a proxy it was told of).
    return request.clone(scheme="https") if secure else request


def test_the_session_cookie_is_secure_over_https_only() -> None:
    for secure in (False, True):
        response = web.Response()
        _cookie(response, _request(secure), "vna_console", "value", max_age=600)
        morsel = response.cookies["vna_console"]
        assert morsel["httponly"] is True
        assert morsel["samesite"] == "Strict"
        assert morsel["path"] == "/ui/"
        assert str(morsel["max-age"]) == "600"
        assert bool(morsel["secure"]) is secure


def test_pager_pages_without_counting() -> None:
    pager = Pager.of({"page": "3"}, 10)
    assert (pager.offset, pager.fetch) == (20, 11)
    rows, cut = pager.cut(list(range(11)))
    assert rows == list(range(10)) and cut.has_next
    rows, cut = pager.cut(list(range(4)))
    assert rows == list(range(4)) and not cut.has_next
    assert cut.links([("state", "open"), ("page", "3")]) == {
        "prev": "state=open&page=2",
        "next": None,
    }
    assert Pager.of({"page": "x"}, 10).number == 1
    assert Pager.of({"page": "-4"}, 10).number == 1


def test_the_study_search_form_becomes_a_qido_query() -> None:
    form = {
        "patient_name": "doe",
        "patient_id": "P1",
        "issuer": "HOSP1",
        "accession": "A1",
        "date_from": "2024-01-01",
        "date_to": "2024-12-31",
        "modality": "ct",
    }
    params = dict(qido_params(form, Pager(2, 25)))
    assert params["PatientName"] == "doe*"
    assert params["StudyDate"] == "20240101-20241231"
    assert params["ModalitiesInStudy"] == "CT"
    assert (params["limit"], params["offset"]) == ("25", "25")
    parse_qido("study", qido_params(form, Pager(1, 25)))  # a valid query
    assert dict(qido_params({"patient_name": "D?E*"}, Pager(1, 5)))["PatientName"] == "D?E*"
    assert dict(qido_params({"date_from": "2024-01-01"}, Pager(1, 5)))["StudyDate"] == "20240101-"
