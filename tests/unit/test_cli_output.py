"""What the command line shows, without an archive: help for every argument, one spelling of
each option everywhere, counted nouns, an audit table that cuts nothing."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterator

import pytest

from vna.cli import build_parser
from vna.cli.options import patient_option, plural
from vna.cli.security import _print_audit
from vna.errors import InvalidRequest


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, (*path, name))


ALL = list(commands(build_parser()))


def test_every_argument_has_help() -> None:
    missing = [
        f"vna {' '.join(path)} {action.dest}"
        for path, parser in ALL
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
        and action.help != argparse.SUPPRESS
        and not action.help
    ]
    assert missing == []


def test_every_subcommand_has_help() -> None:
    missing = [
        f"vna {' '.join(path)} {choice.dest}"
        for path, parser in ALL
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action._choices_actions
        if not choice.help
    ]
    assert missing == []


def _takes_format(parser: argparse.ArgumentParser) -> argparse.Action | None:
    return next((a for a in parser._actions if "--format" in a.option_strings), None)


def test_json_is_spelt_format_everywhere_with_json_as_its_alias() -> None:
    with_json = [
        path
        for path, parser in ALL
        if (action := _takes_format(parser)) and "json" in (action.choices or ())
    ]
    assert ("patients", "list") in with_json and ("dr", "status") in with_json
    assert len(with_json) >= 15
    for path, parser in ALL:
        if path in with_json:
            (alias,) = [a for a in parser._actions if "--json" in a.option_strings]
            assert (alias.dest, alias.const) == ("format", "json"), path
    for argv in (["patients", "list", "--json"], ["dr", "status", "--json"], ["audit", "--json"]):
        assert build_parser().parse_args(argv).format == "json"
    # No command has a --json of its own any more (every one is the alias of --format).
    for path, parser in ALL:
        if any("--json" in a.option_strings for a in parser._actions):
            assert _takes_format(parser) is not None, path


def test_global_options_after_the_subcommand() -> None:
    args = build_parser().parse_args(["retention", "show", "3", "--config", "x.toml", "-v"])
    assert (args.config, args.verbose, args.review_id) == ("x.toml", 1, 3)
    args = build_parser().parse_args(["--config", "y.toml", "-vv", "dr", "status"])
    assert (args.config, args.verbose) == ("y.toml", 2)


@pytest.mark.parametrize(
    ("value", "issuer", "expected"),
    [
        ("P1^^^HOSP1", None, ("P1", "HOSP1")),
        ("P1", "HOSP1", ("P1", "HOSP1")),
        ("P1", None, ("P1", None)),
        ("P1^^^", None, ("P1", "")),  # explicitly no issuer
        ("P1^^^HOSP1", "HOSP1", ("P1", "HOSP1")),
        (" P1 ^^^ HOSP1 ", None, ("P1", "HOSP1")),
    ],
)
def test_a_patient_is_named_either_way(
    value: str, issuer: str | None, expected: tuple[str, str | None]
) -> None:
    assert patient_option(value, issuer) == expected


def test_a_patient_named_two_ways_that_disagree_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="names issuer 'HOSP1' but --issuer says 'HOSP2'"):
        patient_option("P1^^^HOSP1", "HOSP2")
    with pytest.raises(InvalidRequest, match="not a patient"):
        patient_option("^^^HOSP1", None)


@pytest.mark.parametrize(
    ("count", "noun", "expected"),
    [
        (1, "study", "1 study"),
        (0, "study", "0 studies"),
        (2, "study", "2 studies"),
        (1, "job", "1 job"),
        (3, "job", "3 jobs"),
        (1, "day", "1 day"),
        (2, "day", "2 days"),
        (1234, "instance", "1,234 instances"),
    ],
)
def test_plural(count: int, noun: str, expected: str) -> None:
    assert plural(count, noun) == expected


def test_the_audit_table_cuts_no_action_and_no_uid(capsys: pytest.CaptureFixture[str]) -> None:
    uid = "1.2.826.0.1.3680043.8.498.10932473299478524853196731905419286512"
    at = dt.datetime(2025, 3, 4, 10, 30, tzinfo=dt.UTC)
    row = {
        "at": at,
        "actor": "user:records-manager-on-call",
        "origin": "2001:db8::1234:5678",
        "action": "retention-approve",
        "outcome": "success",
        "patient_id": "P00001",
        "issuer": "HOSPITAL-ONE",
        "study_uid": uid,
        "detail": {"reason": "review 3"},
        "patient_ids": [],
        "study_uids": [],
    }
    short = {**row, "actor": "SCU", "action": "store", "study_uid": None, "study_uids": ["a", "b"]}
    _print_audit([row, short], "table", "VNA")
    header, first, second = capsys.readouterr().out.splitlines()
    for value in (
        "retention-approve",
        uid,
        "user:records-manager-on-call",
        "P00001^^^HOSPITAL-ONE",
    ):
        assert value in first
    assert "…" not in first
    assert "2 studies" in second
    # Aligned: each column starts where its heading does.
    for heading, value in (("action", "retention-approve"), ("study", uid)):
        assert first.index(value) == header.index(heading)
    assert second.index("2 studies") == header.index("study")
