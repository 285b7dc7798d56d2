"""Imports flow one way (design.md, issue 16 steps 3 and 4): the command line is the top layer
and nothing imports it; the DICOM layer knows nothing of settings or storage; the tier names are
a leaf.  Read from the source with ``ast``, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("vna", "lifecycle")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str | None = None) -> set[str]:
    """Every module ``path`` (the module named ``module``) imports, anywhere in it: top level
    or inside functions, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    name = module or _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_nothing_imports_the_command_line() -> None:
    offenders = [
        f"{_module_name(p)} imports {name}"
        for p in _sources()
        if not _under(_module_name(p), "vna.cli")
        for name in sorted(imports_of(p))
        if _under(name, "vna.cli")
    ]
    assert offenders == []


def test_command_modules_live_in_the_cli_package() -> None:
    stray = [
        str(p.relative_to(ROOT))
        for p in _sources()
        if p.stem.endswith("commands") and not _under(_module_name(p), "vna.cli")
    ]
    assert stray == []


@pytest.mark.parametrize("forbidden", ["vna.config", "vna.storage"])
def test_dicom_layer_does_not_depend_on_settings_or_storage(forbidden: str) -> None:
    offenders = [
        f"{_module_name(p)} imports {name}"
        for p in sorted((ROOT / "vna" / "dicom").rglob("*.py"))
        for name in sorted(imports_of(p))
        if _under(name, forbidden)
    ]
    assert offenders == []


def test_tiers_is_a_leaf() -> None:
    assert imports_of(ROOT / "vna" / "tiers.py") == set()


def test_the_checker_sees_a_reversed_arrow(tmp_path: Path) -> None:
    """The checks above can fail: lazy and relative imports are found."""
    module = tmp_path / "normalise.py"
    module.write_text("def f():\n    from vna.cli import main\n    from ..config import X\n")
    found = imports_of(module, "vna.dicom.normalise")
    assert "vna.cli" in found
    assert "vna.config" in found
