"""The Storage Commitment request and report data sets (PS3.4 J.3.2, J.3.3), table tests."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from vna.commitment.model import (
    MAX_REFERENCES,
    NO_SUCH_OBJECT,
    PUSH_MODEL,
    WELL_KNOWN_INSTANCE,
    Failure,
    Outcome,
    Reference,
    check_addressing,
    event_information,
    parse_request,
)
from vna.errors import (
    InvalidRequest,
    MissingAttribute,
    NotFound,
    RequestTooLarge,
    UnsupportedAction,
)
from vna.gateway.status import action_failure_status

CT = "1.2.840.10008.5.1.4.1.1.2"


def info(n: int = 1, *, transaction: str | None = "1.2.3.4", uid: str = "1.2.3.5") -> Dataset:
    ds = Dataset()
    if transaction is not None:
        ds.TransactionUID = transaction
    items = []
    for i in range(n):
        item = Dataset()
        item.ReferencedSOPClassUID = CT
        item.ReferencedSOPInstanceUID = f"{uid}.{i}"
        items.append(item)
    ds.ReferencedSOPSequence = Sequence(items)
    return ds


def test_a_request_is_read_in_order() -> None:
    request = parse_request(info(3))
    assert request.transaction_uid == "1.2.3.4"
    assert [r.sop_instance_uid for r in request.references] == [
        "1.2.3.5.0",
        "1.2.3.5.1",
        "1.2.3.5.2",
    ]


@pytest.mark.parametrize(
    ("dataset", "error", "status"),
    [
        (None, MissingAttribute, 0x0115),
        (info(transaction=None), MissingAttribute, 0x0115),
        (info(0), MissingAttribute, 0x0115),
        (info(transaction="x.y"), InvalidRequest, 0x0115),
        (info(uid="1.2.abc"), InvalidRequest, 0x0115),
        (info(MAX_REFERENCES + 1), RequestTooLarge, 0x0213),
    ],
)
def test_bad_requests_and_their_status(
    dataset: Dataset | None, error: type[Exception], status: int
) -> None:
    with pytest.raises(error) as caught:
        parse_request(dataset)
    assert action_failure_status(caught.value) == status


def test_the_limit_itself_is_accepted() -> None:
    assert len(parse_request(info(MAX_REFERENCES)).references) == MAX_REFERENCES


@pytest.mark.parametrize(
    ("action", "sop_class", "instance", "error", "status"),
    [
        (2, PUSH_MODEL, WELL_KNOWN_INSTANCE, UnsupportedAction, 0x0123),
        (1, PUSH_MODEL, "1.2.3", NotFound, 0x0112),
        (1, CT, WELL_KNOWN_INSTANCE, InvalidRequest, 0x0115),
    ],
)
def test_addressing(
    action: int, sop_class: str, instance: str, error: type[Exception], status: int
) -> None:
    check_addressing(1, PUSH_MODEL, WELL_KNOWN_INSTANCE)
    with pytest.raises(error) as caught:
        check_addressing(action, sop_class, instance)
    assert action_failure_status(caught.value) == status


def test_report_all_committed_is_event_1_without_failed_sequence() -> None:
    outcome = Outcome(committed=[Reference(CT, "1.2.1")])
    ds = event_information("1.2.9", outcome)
    assert outcome.event_type == 1
    assert ds.TransactionUID == "1.2.9"
    assert [i.ReferencedSOPInstanceUID for i in ds.ReferencedSOPSequence] == ["1.2.1"]
    assert "FailedSOPSequence" not in ds


def test_report_with_failures_is_event_2_with_reasons() -> None:
    outcome = Outcome(failed=[Failure(Reference(CT, "1.2.2"), NO_SUCH_OBJECT)])
    ds = event_information("1.2.9", outcome)
    assert outcome.event_type == 2
    # Referenced SOP Sequence is 1C: absent when nothing was committed (PS3.4 Table J.3-2).
    assert "ReferencedSOPSequence" not in ds
    [item] = ds.FailedSOPSequence
    assert (item.ReferencedSOPInstanceUID, item.FailureReason) == ("1.2.2", 0x0112)
