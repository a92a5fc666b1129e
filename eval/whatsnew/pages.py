"""The "What's New" pages: `whatsnew-X.Y.md` files (front matter with version and date) read into
paragraphs, each with the top-level section and the sub-section (a module, a PEP) it falls under."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from core.loaders import SkipFile, load_file
from core.prompts import passage

PAGE_GLOB = "whatsnew-*.md"


@dataclass(frozen=True)
class Para:
    """A paragraph of a page, whitespace folded, with the headings above it."""

    text: str
    section: str  # the top-level heading above it ("Improved Modules")
    sub: str  # the heading under that ("asyncio", "PEP 634: Structural Pattern Matching"); "" when none
    heading: bool
    code: bool

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass
class Page:
    version: str
    date: dt.date
    name: str
    sha256: str
    text: str  # the body, front matter removed
    paras: list[Para]
    title: str = ""

    def shown(self, text: str) -> str:
        """A passage of this page as the served reader sees it: the page's title and date, then the text."""
        return passage(text, self.title, self.date)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


# The pages' top-level headings (everything else that looks like a heading is a sub-heading).
_TOP = re.compile(
    r"^(?:Summary\b|Introduction$|New Features|Other |Optimi[sz]ations?$|Build\b|C API|Changes in |"
    r"API and Feature Removals|New and Improved Modules|New, Improved|New Modules|New modules|"
    r"Improved Modules|Improved modules|Deprecated$|Deprecated Python|Deprecations$|Removed$|Removed |"
    r"Removals$|Pending [Rr]emoval|Acknowledgements|Porting to|Port-Specific|CPython bytecode|"
    r"Notable changes|Documentation Changes|Interpreter Changes|Unsupported Operating|Demos and Tools|"
    r"Windows-only|New Keywords|New Development|Minor Language|Changes to Built-in|Other Changes)"
)
_MODULE_NAME = re.compile(r"^[a-z_]\w*(?:\.[A-Za-z_]\w*)*$")
_PACKAGE_HEADING = re.compile(r"^The (?P<m>[a-z_][\w.]*) (?:package|module)$")
_CODE_START = (
    ">>>",
    "import ",
    "from ",
    "def ",
    "class ",
    "@",
    "#",
    "$ ",
    "%",
    "{",
    "[",
    "...",
    "if ",
    "for ",
)


def _is_code(raw: str) -> bool:
    if any(line.startswith(("    ", "\t")) for line in raw.splitlines()) or raw.startswith(_CODE_START):
        return True
    letters = sum(c.isalpha() or c.isspace() for c in raw)
    return letters < 0.75 * len(raw)


def _is_heading(text: str, raw: str) -> bool:
    return (
        "\n" not in raw.strip()
        and len(text) <= 80
        and len(text.split()) <= 12
        and text[-1] not in ".,;:!?"
        and not text.startswith("(")
        and text != "See also"
        and (text[0].isupper() or bool(_MODULE_NAME.match(text)))
    )


def category(section: str) -> str:
    """What a top-level section lists: modules, new_modules, removed, deprecated, optimizations, other."""
    s = section.lower()
    if "pending" in s or "deprecat" in s:
        return "deprecated"
    if "remov" in s:
        return "removed"
    if "optimi" in s:
        return "optimizations"
    if s.startswith("new modules"):
        return "new_modules"
    if "module" in s:
        return "modules"
    return "other"


def parse_page(text: str) -> list[Para]:
    """Paragraphs (blank-line separated), each with the section and sub-section it falls under."""
    paras: list[Para] = []
    section, sub = "", ""
    for raw in re.split(r"\n[ \t]*\n", text):
        if not raw.strip():
            continue
        folded = " ".join(raw.split())
        code = _is_code(raw)
        heading = not code and _is_heading(folded, raw)
        if heading:
            if _TOP.match(folded):
                section, sub = folded, ""
            elif category(section) in ("modules", "new_modules") and (m := _PACKAGE_HEADING.match(folded)):
                sub = m["m"]
            else:
                sub = folded
        paras.append(Para(folded, section, sub, heading, code))
    return paras


def load_pages(folder: Path, versions: Iterable[str] = ()) -> list[Page]:
    """The pages under `folder` (only `versions`, if given), oldest first."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--pages {folder}: no such directory (expected whatsnew-X.Y.md pages)")
    wanted = set(versions)
    pages: list[Page] = []
    for path in sorted(folder.glob(PAGE_GLOB)):
        m = re.fullmatch(r"whatsnew-(\d+\.\d+)", path.stem)
        if m is None:
            raise ValueError(f"{path}: a page's name is whatsnew-X.Y.md")
        if wanted and m[1] not in wanted:
            continue
        data = path.read_bytes()
        try:
            docs = load_file(path, data)
        except SkipFile as e:
            raise ValueError(f"{path}: {e}") from None
        doc = docs[0]
        digest = hashlib.sha256(data).hexdigest()
        pages.append(Page(m[1], doc.date, path.name, digest, doc.text, parse_page(doc.text), doc.title))
    if not pages:
        which = f" of versions {', '.join(sorted(wanted))}" if wanted else ""
        raise ValueError(f"--pages {folder}: no {PAGE_GLOB} pages{which}")
    missing = wanted - {p.version for p in pages}
    if missing:
        raise ValueError(f"--pages {folder}: no page for versions {', '.join(sorted(missing))}")
    return sorted(pages, key=lambda p: version_key(p.version))
