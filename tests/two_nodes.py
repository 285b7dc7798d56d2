"""Two archive nodes on one catalogue: two ``vna serve`` processes (each a supervisor and its
workers) sharing one PostgreSQL database and one data directory (so one object store), each
with its own ``node_name`` and ports, as a deployment runs them behind a load balancer.

A minimal harness for the change feed's two-node test; the lifecycle workers are off in both
(``in_serve = false``) unless the caller's TOML turns them on.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from tests.acceptance.conftest import ArchiveProcess

ADMIN_TOKEN = "t-admin-two-nodes"
#: Source name -> its STOW-RS token.
SOURCE_TOKENS = {"H1": "t-h1-two-nodes", "H2": "t-h2-two-nodes"}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Node(ArchiveProcess):
    def __init__(self, data_dir: Path, config: Path, name: str) -> None:
        super().__init__(data_dir, config)
        self.name = name
        # Its own log: both nodes share the data directory the base class names it after.
        self.log_path = config.with_name(f"{name}-server.log")


def node_config(path: Path, database_url: str, node_name: str, extra_toml: str = "") -> Path:
    sources = "\n".join(
        f'[[sources]]\nname = "{name}"\nissuer_of_patient_id = "HOSP-{name}"\n'
        f'token_sha256 = "{_sha(token)}"\n'
        for name, token in SOURCE_TOKENS.items()
    )
    path.write_text(
        f'database_url = "{database_url}"\n'
        f'node_name = "{node_name}"\n'
        f"{extra_toml}\n"
        "[lifecycle]\nin_serve = false\n\n"
        f'[admin]\nadmin_token_sha256 = "{_sha(ADMIN_TOKEN)}"\n\n'
        f"{sources}"
    )
    return path


@contextlib.contextmanager
def two_nodes(root: Path, database_url: str, extra_toml: str = "") -> Iterator[list[Node]]:
    """Start node-a and node-b on ``database_url`` and ``root/data``; stop both at the end.
    ``extra_toml`` goes at the top level of both configurations (before any table)."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    nodes = [
        Node(data_dir, node_config(root / f"{n}.toml", database_url, n, extra_toml), n)
        for n in ("node-a", "node-b")
    ]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.shutdown()
