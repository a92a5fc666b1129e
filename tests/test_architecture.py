"""The import direction of DESIGN.md, checked over the sources with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "indexer", "trainer", "service", "eval")
# package -> the packages of ours it may import
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "indexer": {"core"},
    "trainer": {"core"},
    "service": {"core", "indexer"},
    "eval": {"core", "indexer", "service"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_go_one_way(package: str) -> None:
    sources = sorted((ROOT / package).rglob("*.py"))
    assert sources, f"package {package}/ has no sources"
    bad = {
        f"{src.relative_to(ROOT)} imports {other}"
        for src in sources
        for other in imported_packages(src) - ALLOWED[package] - {package}
    }
    assert not bad, "imports against DESIGN.md's direction:\n" + "\n".join(sorted(bad))


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import service.app\nfrom eval import world\nfrom . import sibling\n")
    assert imported_packages(bad) == {"service", "eval"}
