"""Every fact of a page: its header (release date, editor), its PEP sections (number, title, authors),
who contributed each change and the issue it cites, and the changes to modules (`changes`)."""

from __future__ import annotations

import re

from eval.whatsnew.changes import _Changes
from eval.whatsnew.facts import Fact
from eval.whatsnew.pages import _MODULE_NAME, Page, Para, category
from eval.whatsnew.text import _CODE_REF, _sentences

_ISSUE = re.compile(r"\b(?:gh|bpo)-\d+\b|\bissue #?\d+\b")
_NAME = r"[A-ZÀ-Ž][\w.'’-]*(?:\s+(?:van|de|von|der|da|d’|[A-ZÀ-Ž][\w.'’-]*))*"
_NAME_LIST = rf"{_NAME}(?:(?:,\s*|\s+and\s+|\s*&\s*){_NAME}){{0,2}}"
_NAMES = re.compile(rf"^{_NAME_LIST}$")
_CONTRIB = re.compile(
    r"\((?:Contributed|Implemented|Patch|Written) by (?P<names>[A-Z][^()]*?)"
    r"(?:\s+in\s+(?:gh|bpo|issue)[^()]*)?\.?\)"
)
_PEP_HEADING = re.compile(r"^PEP (?P<n>\d+)\s*(?P<sep>[:,–—]| -)\s*(?P<t>.+?)\.?$")
_WRITTEN = re.compile(rf"PEP written(?P<and> and implemented)? by (?P<names>{_NAME_LIST})")
_IMPLEMENTED = re.compile(rf"[;,] implemented by (?P<names>{_NAME_LIST})")
_RELEASED = re.compile(
    r"(?:Python (?P<v>\d+\.\d+) was released|version (?P<v2>\d+\.\d+), was released)\s+on "
    r"(?P<d>[A-Z][a-z]+ \d{1,2}, \d{4})"
)
_KEEP_CASE = {"Python", "CPython", "Unicode", "Windows", "Linux", "macOS", "Mac", "C", "I/O", "Tk", "Tkinter"}


def _lower_title(title: str) -> str:
    """'Structural Pattern Matching' -> 'structural pattern matching'; names and acronyms keep their case."""
    out = []
    for w in title.split():
        core = w.strip("“”‘’\"'(),")
        out.append(w if core in _KEEP_CASE or not core.istitle() or not core.isalpha() else w.lower())
    return " ".join(out)


def _names(raw: str) -> str | None:
    """At most three people's names as the page states them ("A and B"), else None."""
    raw = re.split(r"(?<=\w\w)\.(?:\s|$)", raw, maxsplit=1)[0]  # "Greg V. Wilson. Implemented by ..."
    raw = raw.strip(" ,.;")
    if not raw or len(raw.split()) > 12 or not _NAMES.match(raw):
        return None
    return raw


class _Extractor(_Changes):
    """Every fact of one page, by pattern."""

    def run(self) -> list[Fact]:
        paras = self.page.paras
        self.intro()
        for i, p in enumerate(paras):
            if p.code:
                continue
            if p.heading:
                self.pep_heading(i, p)
                continue
            if p.sub.startswith("PEP ") or p.text.startswith("PEP "):
                self.pep_people(i, p)
            cat = category(p.section)
            if cat == "new_modules" and _MODULE_NAME.match(p.sub) and paras[i - 1].text == p.sub:
                self.new_module(i, p.sub, _sentences(p.text)[0])
            added: list[str] = []
            for s in _sentences(p.text):
                added += self.added(i, p, s)
                if cat == "removed":
                    self.removed(i, s)
                if cat == "deprecated":
                    self.deprecated(i, s)
                self.replaced(i, s)
                self.renamed(i, s)
                self.now_supports(i, s)
                self.faster(i, s)
                self.library_version(i, s)
                self.cloze(i, s)
                if m := re.match(r"^(?:A |The )?new (?P<m>[a-z_][\w.]*) module", s):
                    self.new_module(i, m["m"], s)
            self.credits(i, p, self.subject(p, added))
        return self.facts

    # -- the page's own header -------------------------------------------------------------------------------

    def intro(self) -> None:
        paras = self.page.paras
        for i, p in enumerate(paras[:40]):
            if (m := _RELEASED.search(p.text)) and (m["v"] or m["v2"]) == self.v:
                generic = "When was Python {v} released?"
                self.add(
                    "released", generic.format(v=self.v), m["d"], i, conflict=(r"released\s+on",),
                    key=("released",), generic=generic,
                )  # fmt: skip
                break
        for i, p in enumerate(paras[:12]):
            if p.text not in ("Editor:", "Editors:", "Author:") or i + 1 == len(paras):
                continue
            raw = paras[i + 1].text
            name = _names(re.split(r"\s*[<(]", raw)[0]) if raw.count("<") + raw.count("(") <= 1 else None
            if name:
                verb = "wrote" if p.text == "Author:" else "edited"
                generic = f"Who {verb} the “What’s New in Python {{v}}” document?"
                self.add(
                    "editor", generic.format(v=self.v), name, i + 1, conflict=(r"\b(?:Editors?|Author):",),
                    key=("editor", verb), generic=generic,
                )  # fmt: skip
            break

    # -- PEPs ------------------------------------------------------------------------------------------------

    def pep_heading(self, i: int, p: Para) -> None:
        m = _PEP_HEADING.match(p.text)
        if not m:
            return
        n, title = m["n"], m["t"].strip()
        pep = f"PEP {n}"
        if "release schedule" in title.lower():
            if self.v in title:
                generic = "Which PEP describes the Python {v} release schedule?"
                self.add(
                    "schedule", generic.format(v=self.v), pep, i, conflict=(r"[Rr]elease [Ss]chedule",),
                    key=("schedule",), generic=generic,
                )  # fmt: skip
            return
        if not 2 <= len(title.split()) <= 14:
            return
        topic = _lower_title(title)
        conflict = (re.escape(title.split(":")[0].lower()), r"\bPEP \d+")
        if m["sep"] == ":":  # a section's heading; "PEP 634, ...": an item of a summary list
            templates = ("Which PEP introduced {t} in Python {v}?", "In Python {v}, which PEP covers {t}?")
            self.add("pep", templates[int(n) % 2].format(t=topic, v=self.v), pep, i, conflict=conflict)
            if len(title.split()) <= 8:
                q = f"What is the title of {pep}, described in the Python {self.v} release notes?"
                self.add("pep_title", q, title, i, anchors=(pep,), conflict=(rf"\bPEP {n}\b",))
        else:
            q = f"Which PEP is titled “{title}” in the Python {self.v} release notes?"
            self.add("pep", q, pep, i, conflict=conflict)

    def pep_people(self, i: int, p: Para) -> None:
        heading = _PEP_HEADING.match(p.sub) or _PEP_HEADING.match(p.text.split(" PEP written")[0])
        if heading is None:
            return
        pep = f"PEP {heading['n']}"
        conflict = (rf"\bPEP {heading['n']}\b",)
        if (m := _WRITTEN.search(p.text)) and (names := _names(m["names"])):
            verb = "wrote and implemented" if m["and"] else "wrote"
            q = f"Who {verb} {pep}, described in the Python {self.v} release notes?"
            self.add("pep_author", q, names, i, anchors=(pep,), conflict=conflict)
        if (m := _IMPLEMENTED.search(p.text)) and (names := _names(m["names"])):
            q = f"Who implemented {pep} for Python {self.v}?"
            self.add("pep_author", q, names, i, anchors=(pep,), conflict=conflict)

    # -- who contributed a change, and its issue -------------------------------------------------------------

    def subject(self, p: Para, added: list[str]) -> str | None:
        """What a paragraph is about: the name it adds, else the first code name of its first sentence,
        if no other paragraph of the page names it (so that a question about it has one answer)."""
        if len(added) == 1:
            candidates = added
        else:
            first = _CONTRIB.sub("", _sentences(p.text)[0])
            candidates = [m[0] for m in _CODE_REF.finditer(first)][:1]
        for c in candidates:
            if self.refs[c.removesuffix("()")] == 1 and len(c) >= 4:
                return c
        return None

    def credits(self, i: int, p: Para, subject: str | None) -> None:
        """Who contributed the paragraph's change, and the issue it cites."""
        if subject is None:
            return
        conflict = (re.escape(subject),)
        found = list(_CONTRIB.finditer(p.text))
        if len(found) == 1 and (names := _names(found[0]["names"])):
            if re.match(rf"^(?:Add|Added|Adds)\s+(?:the\s+|a\s+|new\s+)*{re.escape(subject)}", p.text):
                q = f"Who added {subject} in Python {self.v}?"
            else:
                q = f"Who contributed the change to {subject} in Python {self.v}?"
            self.add("contributor", q, names, i, anchors=(subject,), conflict=conflict)
        issues = sorted(set(_ISSUE.findall(p.text)))
        if len(issues) == 1:
            q = f"Which issue is cited for the change to {subject} in Python {self.v}?"
            self.add("issue", q, issues[0], i, anchors=(subject,), conflict=conflict)


def extract_facts(page: Page) -> list[Fact]:
    """The page's facts, one per question (the first statement of a question wins)."""
    seen: set[str] = set()
    facts: list[Fact] = []
    for f in _Extractor(page).run():
        if f.question.lower() not in seen:
            seen.add(f.question.lower())
            facts.append(f)
    return facts
