"""The rules of docs/architecture.md that a machine can check: the import direction (with `ast`) and the
size of a module."""

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
    assert not bad, "imports against the direction of docs/architecture.md:\n" + "\n".join(sorted(bad))


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import service.app\nfrom eval import world\nfrom . import sibling\n")
    assert imported_packages(bad) == {"service", "eval"}


# Modules longer than this are hard to read whole; a longer one is either split or listed below with why.
MAX_LINES = 400
SIZE_CHECKED = ("core", "indexer", "trainer", "service", "eval", "bench", "scripts")
# path -> why it is longer than MAX_LINES (one line). Remove an entry when its module is split.
LONG_MODULES: dict[str, str] = {
    "eval/world/training.py": "one builder of every training-row kind (SFT, RL, preferences) over the same "
    "train-pool state",
    "eval/world/build.py": "one builder: five entity kinds, their facts and the post-cutoff changes",
    "eval/runner.py": "the run: planning, asking with resume, scoring, costs and the summary record",
    "indexer/pipeline.py": "ingest, delete and their commit protocol: crash safety read in one place",
    "service/engines/embedded.py": "continuous batching: admission, KV-cache splicing, decoding, stops",
    "trainer/__main__.py": "the CLI: a parser and a command function for each of 13 subcommands",
    "trainer/loop.py": "the training loop with DDP, document-attention packing, MFU and resume",
}


def test_modules_stay_short() -> None:
    lengths = {
        src.relative_to(ROOT).as_posix(): len(src.read_text().splitlines())
        for package in SIZE_CHECKED
        if (ROOT / package).is_dir()
        for src in sorted((ROOT / package).rglob("*.py"))
    }
    assert lengths, "no sources found"
    too_long = {
        f"{path}: {n} lines" for path, n in lengths.items() if n > MAX_LINES and path not in LONG_MODULES
    }
    assert not too_long, (
        f"modules over {MAX_LINES} lines (split them, or add them to LONG_MODULES with a reason):\n"
        + "\n".join(sorted(too_long))
    )
    stale = {path for path in LONG_MODULES if lengths.get(path, 0) <= MAX_LINES}
    assert not stale, "LONG_MODULES entries gone or now short enough, remove them:\n" + "\n".join(
        sorted(stale)
    )
    assert all(reason.strip() and "\n" not in reason for reason in LONG_MODULES.values())


# The names of answer matching: defined once, in core/answers.py (a reward and the report it is judged by
# must count the same answer the same way).
ANSWER_MATCHING = {
    "normalise", "normalize", "exact_match", "contains_answer", "is_abstention", "strip_citations"
}  # fmt: skip


def answer_matching_defined(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.name.lstrip("_")
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name.lstrip("_") in ANSWER_MATCHING
    }


def test_answer_matching_is_defined_only_in_core_answers() -> None:
    found = {
        f"{src.relative_to(ROOT)} defines {name}"
        for package in (*PACKAGES, "bench", "scripts")
        for src in sorted((ROOT / package).rglob("*.py"))
        if src != ROOT / "core/answers.py"
        for name in answer_matching_defined(src)
    }
    assert not found, "answer matching outside core/answers.py:\n" + "\n".join(sorted(found))
    assert answer_matching_defined(ROOT / "core/answers.py") >= ANSWER_MATCHING - {"normalize"}
