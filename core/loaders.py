"""The one document reader, shared by the indexer and the trainer (pretraining corpus, CPT documents,
replay, the evaluator's passages): one file in, zero or more `SourceDocument`s out, or a `SkipFile` with
the reason; `read_files` walks folders and skips a bad file with its reason.

Supported (`SUPPORTED_SUFFIXES`, the one list): .md .markdown .txt .rst (optional YAML front matter,
`split_front_matter`), .html .htm (text only: markup, scripts and styles dropped), .pdf (pypdf), .jsonl
(one document per line: `text`, optional `id`, `title`, `date`, `source`). Every document gets a date:
front matter / jsonl field / HTML or PDF metadata, else the file's modification time.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.schemas import SourceDocument

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".rst"}
HTML_SUFFIXES = {".html", ".htm"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".jsonl"}

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


class SkipFile(Exception):
    """The file cannot be indexed; the message is the one-line reason shown to the user."""


def parse_date(value: object) -> dt.date | None:
    """A date from a date, datetime or ISO-like string (`2025-10-07`, `...T12:00:00Z`, PDF `D:2025...`)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        return None
    s = value.strip().removeprefix("D:")
    m = re.match(r"(\d{4})-?(\d{2})-?(\d{2})", s)
    if not m:
        return None
    try:
        return dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def _mtime_date(path: Path) -> dt.date:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date()


def decode_text(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise SkipFile("binary content (NUL bytes) in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SkipFile(f"not valid UTF-8 at byte {e.start}") from None


def _first_heading(text: str) -> str | None:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip() or None
        if line:
            return line[:120]
    return None


def _make_doc(
    path: Path, text: str, title: object, date: object, source: object, fragment: str | None = None
) -> SourceDocument:
    text = text.strip()
    uri = f"{path}#{fragment}" if fragment is not None else str(path)
    return SourceDocument(
        uri=uri,
        path=str(path),
        source=str(source) if source else uri,
        title=str(title).strip() if title else (_first_heading(text) or path.stem),
        date=parse_date(date) or _mtime_date(path),
        text=text,
    )


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(metadata, body) of a text with YAML front matter between `---` lines at its very top; ({}, text)
    when it has none (or its YAML is not a mapping). Invalid YAML raises `SkipFile`."""
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, text
    try:
        loaded = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        raise SkipFile(f"invalid YAML front matter: {str(e).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        return {}, text
    return loaded, text[m.end() :]


def load_text(path: Path, data: bytes) -> list[SourceDocument]:
    meta, text = split_front_matter(decode_text(data))
    return [_make_doc(path, text, meta.get("title"), meta.get("date"), meta.get("source"))]


def load_html(path: Path, data: bytes) -> list[SourceDocument]:
    from bs4 import BeautifulSoup

    if b"\x00" in data[:8192]:
        raise SkipFile("binary content (NUL bytes) in an HTML file")
    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else None
    date = None
    for key, value in (("name", "date"), ("property", "article:published_time"), ("name", "dcterms.date")):
        meta = soup.find("meta", attrs={key: value})
        if meta is not None and meta.get("content"):
            date = str(meta["content"])
            break
    if date is None and (t := soup.find("time")) is not None and t.get("datetime"):
        date = str(t["datetime"])
    if soup.head:
        soup.head.decompose()
    body = soup.body or soup
    text = body.get_text("\n")
    # Collapse the whitespace HTML layout leaves behind, keeping paragraph breaks.
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return [_make_doc(path, text, title, date, None)]


def load_pdf(path: Path, data: bytes) -> list[SourceDocument]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        meta = reader.metadata
    except (PdfReadError, ValueError, KeyError, TypeError) as e:
        raise SkipFile(f"unreadable PDF: {e}") from None
    title = meta.title if meta and meta.title else None
    date = (meta.get("/CreationDate") if meta else None) or None
    return [_make_doc(path, "\n\n".join(pages), title, date, None)]


def load_jsonl(path: Path, data: bytes) -> list[SourceDocument]:
    """Each line one document. Bad lines are logged and skipped; the rest of the file still counts."""
    text = decode_text(data)
    docs: list[SourceDocument] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            log.warning("skip %s:%d: invalid JSON (%s)", path, lineno, e.msg)
            continue
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            log.warning("skip %s:%d: no non-empty 'text' field", path, lineno)
            continue
        fragment = str(row["id"]) if row.get("id") is not None else f"L{lineno}"
        docs.append(
            _make_doc(path, row["text"], row.get("title"), row.get("date"), row.get("source"), fragment)
        )
    if not docs:
        raise SkipFile("no valid documents in the jsonl file")
    uris = [d.uri for d in docs]
    if len(set(uris)) != len(uris):
        dup = next(u for u in uris if uris.count(u) > 1)
        raise SkipFile(f"duplicate id in jsonl: {dup.rsplit('#', 1)[1]!r}")
    return docs


LOADERS: dict[str, Callable[[Path, bytes], list[SourceDocument]]] = {
    **dict.fromkeys(TEXT_SUFFIXES, load_text),
    **dict.fromkeys(HTML_SUFFIXES, load_html),
    ".pdf": load_pdf,
    ".jsonl": load_jsonl,
}


def load_file(path: Path, data: bytes) -> list[SourceDocument]:
    """Parse one file's bytes. Raises `SkipFile` with the reason when nothing can be indexed."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise SkipFile(f"unsupported file type {path.suffix or '(none)'!r}")
    if not data.strip():
        raise SkipFile("empty file")
    docs = [d for d in loader(path, data) if d.text]
    if not docs:
        raise SkipFile("no text after extraction")
    return docs


def iter_files(root: Path) -> list[Path]:
    """Every regular file under root (or root itself), sorted, skipping hidden files and folders."""
    if root.is_file():
        return [root]
    files = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        files.append(p)
    return sorted(files)


@dataclass(frozen=True)
class FileRead:
    """One file's documents, or none and the reason it was skipped."""

    path: Path
    documents: list[SourceDocument]
    skipped: str | None = None


def read_files(paths: Iterable[Path], *, warn: bool = True) -> Iterator[FileRead]:
    """Each file under `paths` (a folder walked by `iter_files`, or a file), loaded by `load_file`, in
    order. A file that cannot be read comes back with the reason (and, with `warn`, a warning in the log:
    a caller that reports the skips itself passes False); a path that does not exist is a ValueError."""
    for root in map(Path, paths):
        if not root.exists():
            raise ValueError(f"{root} does not exist")
        for f in iter_files(root):
            try:
                docs = load_file(f, f.read_bytes())
            except (SkipFile, OSError) as e:
                if warn:
                    log.warning("skip %s: %s", f, e)
                yield FileRead(f, [], str(e))
            else:
                yield FileRead(f, docs)
