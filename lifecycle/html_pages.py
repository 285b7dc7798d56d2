"""HTML pages of the lifecycle engine (retention reviews, DR drill reports), rendered from the
Jinja2 templates in ``lifecycle/templates``.

Autoescaping is on for every template: patient names, descriptions and UIDs come from DICOM
files and go into the page as text, never as markup.  The web console will render its pages
from the same environment and base template.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

from lifecycle.status import human_bytes


def duration(seconds: float | None) -> str:
    """``0.42 s``, ``3 min 20 s``, ``2 h 05 min``, ``3 d 4 h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds == 0:
        return "0 s"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def templates(package: str) -> jinja2.Environment:
    """The Jinja environment of a package's ``templates`` folder, as every HTML page of the
    archive is rendered (the reports here, the console's pages)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        # DICOM text (names, descriptions) goes into pages as text, never as markup.
        autoescape=True,
        # A misspelt name in a template fails the render instead of printing nothing.
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["human_bytes"] = human_bytes
    env.filters["duration"] = duration
    return env


@cache
def environment() -> jinja2.Environment:
    return templates("lifecycle")


def render_page(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
