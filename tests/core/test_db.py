"""One schema: every table of the one database on one metadata, created by one create-all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import inspect

from core.db import Base, get_db_engine
from core.feedback import read_feedback
from core.registry import register_checkpoint
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"documents", "chunks", "index_state", "checkpoints", "feedback"}


def test_one_metadata_holds_every_table() -> None:
    assert set(Base.metadata.tables) == TABLES


def test_no_other_declarative_base() -> None:
    """`core.db.Base` is the only `DeclarativeBase` in the packages: no table lives on a metadata of
    its own (that a create-all would miss)."""
    found = []
    for package in ("core", "indexer", "trainer", "service", "eval"):
        for src in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(src.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name | ast.Attribute) and ast.unparse(b).endswith("DeclarativeBase")
                    for b in node.bases
                ):
                    found.append(f"{src.relative_to(ROOT)}:{node.name}")
    assert found == ["core/db.py:Base"]


def test_whichever_part_comes_first_creates_every_table(settings: Settings) -> None:
    url = settings.resolved_database_url
    assert read_feedback(url) == []  # reading a database that does not exist creates nothing
    assert not settings.resolved_home.joinpath("keepcurrent.db").exists()
    register_checkpoint(url, tag="t", phase="base", path="/x/t")  # the trainer, first
    assert set(inspect(get_db_engine(url)).get_table_names()) == TABLES


@pytest.mark.integration
def test_every_table_on_postgres(postgres_url: str) -> None:
    assert set(inspect(get_db_engine(postgres_url)).get_table_names()) >= TABLES
    assert read_feedback(postgres_url, kind="no-such-kind") == []
