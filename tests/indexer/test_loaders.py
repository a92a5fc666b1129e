from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from core.loaders import FileRead, SkipFile, iter_files, load_file, parse_date, read_files, split_front_matter


def make_pdf(text: str, title: str = "A PDF", creation: str = "D:20251007120000Z") -> bytes:
    """A minimal valid one-page PDF with one line of Helvetica text and an info dictionary."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) /CreationDate ({creation}) >>".encode(),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def load(path: Path, content: bytes | str):  # type: ignore[no-untyped-def]
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(data)
    return load_file(path, data)


def test_markdown_front_matter_gives_title_date_source(tmp_path: Path) -> None:
    [doc] = load(
        tmp_path / "a.md",
        '---\ntitle: "Kelvor moves HQ"\ndate: 2025-03-14\nsource: post-0007\n---\nKelvor moved to Arden.\n',
    )
    assert (doc.title, doc.date, doc.source) == ("Kelvor moves HQ", dt.date(2025, 3, 14), "post-0007")
    assert doc.text == "Kelvor moved to Arden."
    assert doc.uri == doc.path == str(tmp_path / "a.md")


def test_plain_text_falls_back_to_first_line_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Release notes\n\nSomething happened.")
    stamp = dt.datetime(2024, 5, 6, 12, tzinfo=dt.UTC).timestamp()
    os.utime(path, (stamp, stamp))
    [doc] = load_file(path, path.read_bytes())
    assert doc.title == "Release notes"
    assert doc.date == dt.date(2024, 5, 6)
    assert doc.source == str(path)


def test_html_drops_markup_scripts_and_styles(tmp_path: Path) -> None:
    html = """<html><head><title>Launch day</title><meta name="date" content="2026-01-02">
    <style>body { color: red }</style><script>var secret = "tracking";</script></head>
    <body><h1>Orvo launches</h1><p>The <b>Orvo 3</b> ships today.</p>
    <script>alert('x')</script></body></html>"""
    [doc] = load(tmp_path / "page.html", html)
    assert doc.title == "Launch day"
    assert doc.date == dt.date(2026, 1, 2)
    assert "Orvo 3" in doc.text and "Orvo launches" in doc.text
    for leaked in ("color", "tracking", "alert", "<b>", "Launch day"):
        assert leaked not in doc.text


def test_pdf_text_title_and_creation_date(tmp_path: Path) -> None:
    [doc] = load(tmp_path / "r.pdf", make_pdf("Quarterly revenue rose", title="Q3 report"))
    assert "Quarterly revenue rose" in doc.text
    assert doc.title == "Q3 report"
    assert doc.date == dt.date(2025, 10, 7)


def test_jsonl_one_document_per_line_and_bad_lines_skipped(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    lines = [
        json.dumps({"id": "n1", "text": "First.", "title": "One", "date": "2025-01-01", "source": "wire/1"}),
        "{not json",
        json.dumps({"title": "no text"}),
        json.dumps({"text": "Second without id."}),
    ]
    docs = load(tmp_path / "news.jsonl", "\n".join(lines) + "\n")
    assert [d.uri.rsplit("#", 1)[1] for d in docs] == ["n1", "L4"]
    assert docs[0].source == "wire/1" and docs[0].date == dt.date(2025, 1, 1)
    assert docs[1].title == "Second without id."
    assert "invalid JSON" in caplog.text and "no non-empty 'text'" in caplog.text


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.md", b"   \n", "empty file"),
        ("blob.txt", b"abc\x00\x01\x02def", "binary"),
        ("latin1.txt", "café".encode("latin-1"), "not valid UTF-8"),
        ("image.png", b"\x89PNG\r\n", "unsupported file type '.png'"),
        ("broken.pdf", b"%PDF-1.4 garbage", "PDF"),
        ("bad.jsonl", b"{oops\n", "no valid documents"),
        ("dup.jsonl", b'{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', "duplicate id"),
        ("fm.md", b"---\ntitle: [unclosed\n---\nbody", "invalid YAML front matter"),
        ("only-front-matter.md", b"---\ntitle: x\n---\n", "no text"),
    ],
)
def test_bad_files_raise_skip_with_reason(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    with pytest.raises(SkipFile, match=reason):
        load(tmp_path / name, content)


def test_parse_date_formats() -> None:
    assert parse_date("2025-10-07") == dt.date(2025, 10, 7)
    assert parse_date("2025-10-07T12:00:00Z") == dt.date(2025, 10, 7)
    assert parse_date("D:20251007120000Z") == dt.date(2025, 10, 7)
    assert parse_date(dt.datetime(2020, 1, 2, 3, 4)) == dt.date(2020, 1, 2)
    assert parse_date("2025-13-40") is None
    assert parse_date("soon") is None


def test_iter_files_sorted_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("b")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text("a")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("x")
    (tmp_path / ".hidden.md").write_text("x")
    assert [p.relative_to(tmp_path).as_posix() for p in iter_files(tmp_path)] == ["b.md", "sub/a.md"]
    assert iter_files(tmp_path / "b.md") == [tmp_path / "b.md"]


def test_split_front_matter() -> None:
    meta, body = split_front_matter('---\ntitle: "T"\nsource: pre-0001\n---\nBody.\n')
    assert meta == {"title": "T", "source": "pre-0001"} and body == "Body.\n"
    assert split_front_matter("No front matter.\n---\n") == ({}, "No front matter.\n---\n")
    assert split_front_matter("---\n- a list\n---\nBody") == ({}, "---\n- a list\n---\nBody")
    with pytest.raises(SkipFile, match="invalid YAML front matter"):
        split_front_matter("---\ntitle: [unclosed\n---\nbody")


def test_read_files_walks_folders_and_skips_a_bad_file_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a.md").write_text("---\ntitle: A\nsource: s-a\n---\nAlpha.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.rst").write_text("Beta\n====\n\nBeta text.\n")
    (tmp_path / "bad.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / ".hidden.md").write_text("hidden")
    single = tmp_path.parent / f"{tmp_path.name}-single.txt"
    single.write_text("Gamma.")
    reads = list(read_files([tmp_path, single]))
    assert [r.path for r in reads] == [
        tmp_path / "a.md",
        tmp_path / "bad.txt",
        tmp_path / "sub" / "b.rst",
        single,
    ]
    assert [[d.text for d in r.documents] for r in reads] == [
        ["Alpha."],
        [],
        ["Beta\n====\n\nBeta text."],
        ["Gamma."],
    ]
    assert reads[0].documents[0].source == "s-a" and reads[0].skipped is None
    assert reads[1] == FileRead(tmp_path / "bad.txt", [], "not valid UTF-8 at byte 3")
    assert "skip " in caplog.text and "bad.txt" in caplog.text
    caplog.clear()
    assert list(read_files([tmp_path], warn=False))[1] == reads[1]  # the caller reports the skip itself
    assert "skip " not in caplog.text
    with pytest.raises(ValueError, match="does not exist"):
        list(read_files([tmp_path / "missing"]))
