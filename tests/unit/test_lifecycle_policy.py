"""Retention policy: table tests of every function, boundaries included, and the conservative
properties (missing facts never bring a deletion forward; adding a rule never shortens)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.policy.retention import (
    NO_RULE,
    StudyFacts,
    add_years,
    age_on,
    applies,
    is_due,
    parse_dicom_date,
    retention,
    rule_fingerprint,
    rules_fingerprint,
)
from vna.config import RetentionRuleSettings

D = dt.date

ADULT = RetentionRuleSettings(name="adult", min_age_at_study=18, retain_years=10)
CHILD = RetentionRuleSettings(
    name="child", max_age_at_study=17, retain_until_age=25, retain_years=10
)
MAMMO = RetentionRuleSettings(name="mammography", modalities=("MG",), retain_years=20)
RULES = (ADULT, CHILD, MAMMO)


STUDY_DATE = D(2014, 3, 10)
BIRTH_DATE = D(1970, 1, 1)
RECEIVED = D(2014, 3, 11)


def facts(
    study: dt.date | None = STUDY_DATE,
    born: dt.date | None = BIRTH_DATE,
    modalities: tuple[str, ...] = ("CT",),
    description: str = "CT CHEST",
    source: str = "HOSP1",
    received: dt.date = RECEIVED,
) -> StudyFacts:
    return StudyFacts(
        study_date=study,
        received_date=received,
        birth_date=born,
        modalities=frozenset(modalities),
        study_description=description,
        source=source,
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240229", D(2024, 2, 29)),
        ("20230229", None),  # not a leap year
        ("19700101", D(1970, 1, 1)),
        (" 19700101 ", D(1970, 1, 1)),
        ("1970.01.01", D(1970, 1, 1)),  # ACR-NEMA form, still met in old data
        ("1970-01-01", D(1970, 1, 1)),
        ("197001", None),  # partial dates cannot place a birthday
        ("2024", None),
        ("", None),
        (None, None),
        ("abcdefgh", None),
        ("20241301", None),
    ],
)
def test_parse_dicom_date(value: str | None, expected: dt.date | None) -> None:
    assert parse_dicom_date(value) == expected


@pytest.mark.parametrize(
    ("day", "years", "expected"),
    [
        (D(2014, 3, 10), 10, D(2024, 3, 10)),
        (D(2020, 2, 29), 4, D(2024, 2, 29)),
        (D(2020, 2, 29), 1, D(2021, 3, 1)),  # later of the two readings
        (D(2020, 2, 29), 10, D(2030, 3, 1)),
        (D(2000, 12, 31), 1, D(2001, 12, 31)),
        (D(2019, 2, 28), 1, D(2020, 2, 28)),
    ],
)
def test_add_years(day: dt.date, years: int, expected: dt.date) -> None:
    assert add_years(day, years) == expected


@pytest.mark.parametrize(
    ("born", "on", "age"),
    [
        (D(2000, 5, 10), D(2018, 5, 9), 17),
        (D(2000, 5, 10), D(2018, 5, 10), 18),  # the birthday itself
        (D(2000, 5, 10), D(2000, 5, 10), 0),
        (D(2000, 2, 29), D(2018, 2, 28), 17),  # leap-day birthday: not yet in a common year
        (D(2000, 2, 29), D(2018, 3, 1), 18),
        (D(2000, 2, 29), D(2016, 2, 29), 16),
        (D(2000, 2, 29), D(2016, 2, 28), 15),
        (D(1999, 12, 31), D(2000, 1, 1), 0),
    ],
)
def test_age_on(born: dt.date, on: dt.date, age: int) -> None:
    assert age_on(born, on) == age


@pytest.mark.parametrize(
    ("retain_until", "as_of", "due"),
    [
        (D(2030, 1, 1), D(2029, 12, 31), False),
        (D(2030, 1, 1), D(2030, 1, 1), False),  # kept through the date itself
        (D(2030, 1, 1), D(2030, 1, 2), True),
        (None, D(2999, 1, 1), False),  # indefinitely
    ],
)
def test_is_due(retain_until: dt.date | None, as_of: dt.date, due: bool) -> None:
    assert is_due(retain_until, as_of) is due


@pytest.mark.parametrize(
    ("case", "f", "rule", "until"),
    [
        ("adult, 10 years", facts(), "adult", D(2024, 3, 10)),
        (
            "exactly 18 on the study date is an adult",
            facts(study=D(2018, 3, 10), born=D(2000, 3, 10)),
            "adult",
            D(2028, 3, 10),
        ),
        (
            "one day short of 18 is a child: until 25",
            facts(study=D(2018, 3, 10), born=D(2000, 3, 11)),
            "child",
            D(2028, 3, 10),  # 10 years after the study is later than the 25th birthday
        ),
        (
            "young child: until age 25 is the later date",
            facts(study=D(2012, 1, 1), born=D(2010, 6, 1)),
            "child",
            D(2035, 6, 1),
        ),
        (
            "child born on 29 February reaches 25 on 1 March",
            facts(study=D(2010, 1, 1), born=D(2008, 2, 29)),
            "child",
            D(2033, 3, 1),
        ),
        (
            "leap-day study: 10 years later is 1 March",
            facts(study=D(2020, 2, 29), born=D(1960, 1, 1)),
            "adult",
            D(2030, 3, 1),
        ),
        (
            "mammography: the longest rule wins",
            facts(modalities=("MG",)),
            "mammography",
            D(2034, 3, 10),
        ),
        (
            "mammography in a multi-modality study",
            facts(modalities=("CT", "MG")),
            "mammography",
            D(2034, 3, 10),
        ),
        (
            "no birth date: the child rule may apply, and cannot be computed: indefinitely",
            facts(born=None),
            "child",
            None,
        ),
        (
            "no study date: the age is unknown, no rule applies for certain: indefinitely",
            facts(study=None, born=D(1970, 1, 1), received=D(2015, 6, 1)),
            "adult",
            None,
        ),
        (
            "mammography without dates: the child rule may apply and needs a birth date",
            facts(study=None, born=None, modalities=("MG",), received=D(2015, 6, 1)),
            "child",
            None,
        ),
    ],
)
def test_retention_decisions(case: str, f: StudyFacts, rule: str, until: dt.date | None) -> None:
    decision = retention(f, RULES)
    assert (decision.rule, decision.retain_until) == (rule, until), case
    assert decision.basis


def test_no_study_date_counts_from_reception() -> None:
    decision = retention(facts(study=None, received=D(2015, 6, 1)), (MAMMO,))
    assert decision == NO_RULE  # CT: the mammography rule does not apply
    mg = facts(study=None, modalities=("MG",), received=D(2015, 6, 1))
    decision = retention(mg, (MAMMO,))
    assert (decision.rule, decision.retain_until) == ("mammography", D(2035, 6, 1))
    assert "received" in decision.basis


def test_no_rule_keeps_indefinitely() -> None:
    assert retention(facts(), (MAMMO,)) == NO_RULE
    assert retention(facts(), ()) == NO_RULE
    assert NO_RULE.retain_until is None


@pytest.mark.parametrize(
    ("rule", "f", "expected"),
    [
        (RetentionRuleSettings(name="r", retain_years=1), facts(), True),
        (RetentionRuleSettings(name="r", retain_years=1, modalities=("MR",)), facts(), False),
        (RetentionRuleSettings(name="r", retain_years=1, sources=("HOSP2",)), facts(), False),
        (RetentionRuleSettings(name="r", retain_years=1, sources=("HOSP1",)), facts(), True),
        (
            RetentionRuleSettings(name="r", retain_years=1, study_description="*chest*"),
            facts(description="CT Chest w/o"),
            True,
        ),
        (
            RetentionRuleSettings(name="r", retain_years=1, study_description="*BREAST*"),
            facts(),
            False,
        ),
        (
            RetentionRuleSettings(name="r", retain_years=1, study_date_to=D(1999, 12, 31)),
            facts(study=D(1999, 12, 31)),
            True,
        ),
        (
            RetentionRuleSettings(name="r", retain_years=1, study_date_to=D(1999, 12, 31)),
            facts(study=D(2000, 1, 1)),
            False,
        ),
        (
            RetentionRuleSettings(name="r", retain_years=1, study_date_from=D(2000, 1, 1)),
            facts(study=D(2000, 1, 1)),
            True,
        ),
        (
            RetentionRuleSettings(name="r", retain_years=1, study_date_from=D(2000, 1, 1)),
            facts(study=None),
            None,  # cannot be evaluated
        ),
        (
            RetentionRuleSettings(name="r", retain_years=1, min_age_at_study=18),
            facts(born=None),
            None,
        ),
        (
            RetentionRuleSettings(name="r", retain_years=1, min_age_at_study=18),
            facts(study=None),
            None,
        ),
        (
            RetentionRuleSettings(
                name="r", retain_years=1, min_age_at_study=18, modalities=("MR",)
            ),
            facts(born=None),
            False,  # what can be evaluated decides
        ),
        (
            RetentionRuleSettings(name="r", retain_years=1, max_age_at_study=17),
            facts(born=D(1996, 3, 10)),  # 18 on the study date
            False,
        ),
        (
            RetentionRuleSettings(name="r", retain_years=1, max_age_at_study=17),
            facts(born=D(1996, 3, 11)),  # 17 on the study date
            True,
        ),
    ],
)
def test_applies(rule: RetentionRuleSettings, f: StudyFacts, expected: bool | None) -> None:
    assert applies(rule, f) is expected


def test_fingerprints_change_with_the_rules_and_not_with_nothing() -> None:
    assert rule_fingerprint(ADULT) == rule_fingerprint(
        RetentionRuleSettings(name="adult", min_age_at_study=18, retain_years=10)
    )
    assert rule_fingerprint(ADULT) != rule_fingerprint(
        RetentionRuleSettings(name="adult", min_age_at_study=18, retain_years=11)
    )
    assert rules_fingerprint(RULES) != rules_fingerprint(RULES[:2])
    assert rules_fingerprint(RULES) == rules_fingerprint(tuple(RULES))


# --- properties -------------------------------------------------------------------------------

dates = st.dates(min_value=D(1900, 1, 1), max_value=D(2100, 12, 31))
rule_strategy = st.builds(
    RetentionRuleSettings,
    name=st.sampled_from(["a", "b", "c", "d"]),
    modalities=st.sampled_from([(), ("CT",), ("MG",), ("CT", "MR")]),
    min_age_at_study=st.one_of(st.none(), st.integers(0, 90)),
    max_age_at_study=st.one_of(st.none(), st.integers(0, 90)),
    study_date_from=st.one_of(st.none(), dates),
    retain_years=st.one_of(st.none(), st.integers(1, 30)),
    retain_until_age=st.one_of(st.none(), st.integers(1, 40)),
).filter(lambda r: r.retain_years is not None or r.retain_until_age is not None)


def _later_or_equal(a: dt.date | None, b: dt.date | None) -> bool:
    """a keeps at least as long as b (None: indefinitely)."""
    return a is None or (b is not None and a >= b)


@given(
    study=dates,
    born=dates,
    delay=st.integers(0, 3000),
    rules=st.lists(rule_strategy, max_size=4),
    modality=st.sampled_from(["CT", "MG", "MR"]),
)
def test_missing_facts_never_bring_a_deletion_forward(
    study: dt.date, born: dt.date, delay: int, rules: list[RetentionRuleSettings], modality: str
) -> None:
    received = study + dt.timedelta(days=delay)  # the archive receives after the acquisition
    known = retention(
        facts(study=study, born=born, modalities=(modality,), received=received), rules
    )
    for missing in (
        facts(study=study, born=None, modalities=(modality,), received=received),
        facts(study=None, born=born, modalities=(modality,), received=received),
        facts(study=None, born=None, modalities=(modality,), received=received),
    ):
        assert _later_or_equal(retention(missing, rules).retain_until, known.retain_until)


@given(
    study=dates,
    born=st.one_of(st.none(), dates),
    rules=st.lists(rule_strategy, max_size=4),
    extra=rule_strategy,
)
def test_adding_a_rule_never_shortens_retention(
    study: dt.date,
    born: dt.date | None,
    rules: list[RetentionRuleSettings],
    extra: RetentionRuleSettings,
) -> None:
    f = facts(study=study, born=born)
    decision = retention(f, rules)
    if decision.retain_until is None:
        # Kept indefinitely because no rule applies, or none applies for certain: a rule that
        # covers the study settles it (by design), so this property is about dated retentions.
        return
    before = decision.retain_until
    assert _later_or_equal(retention(f, [*rules, extra]).retain_until, before)
    assert _later_or_equal(retention(f, [extra, *rules]).retain_until, before)
