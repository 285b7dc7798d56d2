"""Options and wording shared by every command, so that each is spelt one way everywhere:
``--format`` (with ``--json`` as its alias), a patient named ``ID^^^ISSUER``, counted nouns."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from vna.errors import InvalidRequest

#: How a patient is named on the command line: the HL7 v2 CX order (ID, check digit, scheme,
#: assigning authority), which is also how the archive prints identities.
PATIENT_HELP = "patient: ID^^^ISSUER (or ID alone, for no issuer)"


def add_format(
    parser: argparse.ArgumentParser,
    choices: Sequence[str] = ("text", "json"),
    default: str = "",
    explain: str = "",
) -> None:
    """``--format CHOICE`` and ``--json`` (the same as ``--format json``); ``explain`` says
    what the less obvious choices hold."""
    default = default or choices[0]
    parser.add_argument(
        "--format",
        choices=tuple(choices),
        default=default,
        help=f"output format ({default})" + (f"; {explain}" if explain else ""),
    )
    if "json" in choices:
        parser.add_argument(
            "--json",
            dest="format",
            action="store_const",
            const="json",
            help="the same as --format json",
        )


def patient_option(
    value: str, issuer: str | None, option: str = "--patient"
) -> tuple[str, str | None]:
    """PatientID and IssuerOfPatientID from ``--patient ID^^^ISSUER`` or ``--patient ID
    --issuer ISSUER``; the issuer is None when neither names one."""
    patient_id, sep, named = value.partition("^^^")
    patient_id = patient_id.strip()
    if not patient_id:
        raise InvalidRequest(f"{option} {value!r}: not a patient (ID^^^ISSUER or ID)")
    if sep and issuer is not None and issuer.strip() != named.strip():
        raise InvalidRequest(
            f"{option} {value!r} names issuer {named.strip()!r} but --issuer says {issuer!r}"
        )
    if sep:
        return patient_id, named.strip()
    return patient_id, None if issuer is None else issuer.strip()


def plural(count: int, singular: str, plural_form: str = "") -> str:
    """``1 study``, ``2 studies``, ``0 jobs``."""
    consonant_y = singular.endswith("y") and singular[-2:-1] not in ("a", "e", "o", "u")
    many = plural_form or (singular[:-1] + "ies" if consonant_y else singular + "s")
    return f"{count:,} {singular if count == 1 else many}"


def add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--config`` and ``-v`` on the top parser and on every subcommand, so that both
    ``vna --config FILE serve`` and ``vna serve --config FILE`` work.  Below the top, the
    defaults are SUPPRESS: a subcommand that was not given the option leaves the value given
    before it (argparse copies only what the subparser set)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None if top else argparse.SUPPRESS,
        help="TOML configuration file (or VNA_CONFIG)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help="more output: -v progress lines (INFO), -vv debugging",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                add_global_options(child, top=False)
