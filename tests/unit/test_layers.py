"""The layers of the code base and the one direction of imports between them.

Every import counts, including those inside functions: an import deferred into a function to
dodge a cycle is still a cycle for whoever reads the code.  ARCHITECTURE.md draws the same
picture in words; when a new package is added, it is placed in ``LAYERS`` here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_PACKAGES = ("vna", "lifecycle")

# Highest first.  A package may import from its own layer and from the layers below it, never
# from a layer above.  Packages named together in one ``independent`` group may not import
# each other either (the two protocol families and the lifecycle engine stand side by side).
LAYERS: list[tuple[str, frozenset[str]]] = [
    ("command line", frozenset({"vna.cli"})),
    ("servers", frozenset({"vna.server", "vna.supervisor", "vna.server_lock"})),
    ("adapters and workers", frozenset({"vna.gateway", "vna.ui", "lifecycle"})),
    ("engine", frozenset({"vna.admin", "vna.security", "vna.commitment"})),
    ("wiring", frozenset({"vna.archive"})),
    (
        "services",
        frozenset(
            {
                "vna.ingest",
                "vna.retrieve",
                "vna.rendering",
                "vna.recovery",
                "vna.handoff",
                "vna.transcoding",
            }
        ),
    ),
    ("settings", frozenset({"vna.config", "vna.metrics"})),
    ("catalogue and storage", frozenset({"vna.catalog", "vna.storage"})),
    ("dicom", frozenset({"vna.dicom"})),
    ("foundation", frozenset({"vna.errors", "vna.tiers"})),
]
INDEPENDENT: list[frozenset[str]] = [frozenset({"vna.gateway", "lifecycle"})]

# Pure rule modules: facts in, decisions out.  They may read settings types but never reach
# the network, the catalogue or the object store, so table tests cover them completely.
PURE_MODULES = (
    "lifecycle.policy",
    "vna.ingest.decision",
    "vna.dicom.normalise",
    "vna.security.oidc_roles",
)
IO_IMPORTS = (
    "asyncio",
    "asyncpg",
    "aiohttp",
    "aiobotocore",
    "boto3",
    "botocore",
    "pynetdicom",
    "socket",
    "subprocess",
    "vna.archive",
    "vna.catalog",
    "vna.storage.filesystem",
    "vna.storage.s3",
    "lifecycle.queue",
)


@dataclass(frozen=True)
class Violation:
    importer: str
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.importer} imports {self.imported}: {self.why}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Every module named by an import statement anywhere in the file (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from vna import config`` imports the module vna.config, not just the package.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for top in TOP_PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            module = module_name(path, root)
            graph[module] = imports_of(path, module)
    return graph


def package_of(module: str, packages: Iterable[str]) -> str | None:
    """The longest declared package that contains ``module``."""
    best = None
    for package in packages:
        if (module == package or module.startswith(package + ".")) and (
            best is None or len(package) > len(best)
        ):
            best = package
    return best


def layer_violations(
    graph: Mapping[str, set[str]],
    layers: list[tuple[str, frozenset[str]]] = LAYERS,
    independent: list[frozenset[str]] = INDEPENDENT,
) -> list[Violation]:
    rank = {package: index for index, (_, members) in enumerate(layers) for package in members}
    names = {package: name for name, members in layers for package in members}
    found = []
    for importer, imported_modules in graph.items():
        if importer in TOP_PACKAGES and importer not in rank:
            continue  # the bare ``vna`` package: nothing but a namespace
        source = package_of(importer, rank)
        if source is None:
            found.append(Violation(importer, "-", "module belongs to no layer in LAYERS"))
            continue
        seen: set[str] = set()
        for imported in sorted(imported_modules):
            if imported.split(".")[0] not in TOP_PACKAGES:
                continue
            target = package_of(imported, rank)
            if target is None or target == source or target in seen:
                continue
            seen.add(target)  # one line per imported package, not per imported name
            if rank[target] < rank[source]:
                found.append(
                    Violation(
                        importer,
                        imported,
                        f"{names[source]} ({source}) may not import {names[target]} ({target})",
                    )
                )
            elif any(source in group and target in group for group in independent):
                found.append(
                    Violation(importer, imported, f"{source} and {target} are independent")
                )
    return found


def package_cycles(graph: Mapping[str, set[str]], packages: Iterable[str]) -> list[list[str]]:
    """Strongly connected groups of more than one package (Tarjan's algorithm)."""
    packages = list(packages)
    edges: dict[str, set[str]] = {package: set() for package in packages}
    for importer, imported_modules in graph.items():
        source = package_of(importer, packages)
        for imported in imported_modules:
            target = package_of(imported, packages)
            if source and target and target != source:
                edges[source].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for package in sorted(edges):
        if package not in index:
            visit(package)
    return cycles


def subpackages(graph: Mapping[str, set[str]]) -> set[str]:
    """Every package one level below a top package (vna.gateway, lifecycle.policy, ...)."""
    return {".".join(module.split(".")[:2]) for module in graph}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_every_import_follows_the_layers(graph: dict[str, set[str]]) -> None:
    violations = layer_violations(graph)
    assert not violations, "imports against the layers:\n" + "\n".join(map(str, violations))


def test_no_import_cycle_between_packages(graph: dict[str, set[str]]) -> None:
    cycles = package_cycles(graph, subpackages(graph))
    assert not cycles, f"import cycles between packages: {cycles}"


def test_pure_rule_modules_import_no_io(graph: dict[str, set[str]]) -> None:
    offenders = [
        f"{module} imports {imported}"
        for module, imported_modules in graph.items()
        if package_of(module, PURE_MODULES)
        for imported in imported_modules
        if package_of(imported, IO_IMPORTS)
    ]
    assert not offenders, "pure rule modules doing I/O:\n" + "\n".join(offenders)


def test_command_modules_live_in_the_command_line_package(graph: dict[str, set[str]]) -> None:
    # A command module beside the core it drives is how recovery -> archive -> recovery began.
    stray = [m for m in graph if m.rsplit(".", 1)[-1].endswith("commands") and m != "vna.cli"]
    stray = [m for m in stray if not package_of(m, ["vna.cli"])]
    assert not stray, f"command modules outside vna/cli: {stray}"


def test_a_reversed_arrow_is_caught(graph: dict[str, set[str]]) -> None:
    # The checks above must be able to fail: reverse one real arrow (the gateway's status
    # table reads the error family; let the error family reach up into the gateway) and both
    # the layer and the cycle checks object.
    assert "vna.errors" in graph["vna.gateway.status"]
    reversed_graph = {module: set(imported) for module, imported in graph.items()}
    reversed_graph["vna.errors"].add("vna.gateway.status")
    violations = layer_violations(reversed_graph)
    assert [str(v) for v in violations if v.importer == "vna.errors"] == [
        "vna.errors imports vna.gateway.status: foundation (vna.errors) "
        "may not import adapters and workers (vna.gateway)"
    ]
    assert any(
        {"vna.gateway", "vna.errors"} <= set(cycle)
        for cycle in package_cycles(reversed_graph, subpackages(reversed_graph))
    )


def test_independent_siblings_and_unplaced_packages_are_caught() -> None:
    graph = {
        "vna.gateway.web": {"lifecycle.queue"},
        "vna.newthing": {"vna.errors"},
        "lifecycle.queue": {"vna.catalog"},
    }
    assert [str(v) for v in layer_violations(graph)] == [
        "vna.gateway.web imports lifecycle.queue: vna.gateway and lifecycle are independent",
        "vna.newthing imports -: module belongs to no layer in LAYERS",
    ]


def test_relative_and_function_level_imports_are_seen(tmp_path: Path) -> None:
    package = tmp_path / "vna" / "storage"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text(
        "from . import errors\nfrom ..gateway import web\n\ndef later():\n    import vna.archive\n"
    )
    found = imports_of(package / "base.py", "vna.storage.base")
    assert {"vna.storage.errors", "vna.gateway.web", "vna.archive"} <= found
