"""The lifecycle engine: retention, legal holds, compression and tiering.

Workers (``lifecycle.worker``) pull jobs from the catalogue's ``jobs`` table; each decision is a
pure function of facts, rules and a date (``lifecycle.policy``), tested with tables; the rest
loads facts, calls the policy, applies the result and records it.  This package imports
``vna``; nothing in ``vna`` imports it (the command line only, lazily).
"""

from pathlib import Path

from vna.catalog.queries import load_directory

# The engine's named SQL blocks join the catalogue's (one namespace, loaded once).
load_directory(Path(__file__).parent / "sql")
