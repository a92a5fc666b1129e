"""Reading rows from the pre-cutoff Python "What's New" pages: SFT and RL data for the grounded reader.

    python -m eval whatsnew-rows --pages data/python-docs/whatsnew-pre --out DIR [--seed 0] [--json]

Rule-based, deterministic for a seed, about 15 s on one core for the 22 pages (2.0-3.13). The pages
(`whatsnew-X.Y.md`, front matter with version and date) are split into paragraphs under their headings,
and patterns over that structure give *facts*: a question, the shortest answer the page states, and the
paragraph that states it. The patterns: PEP headings (which PEP, its title, its authors), new modules,
functions, classes and parameters added to a module, sentences about code names asked with the name left
out ("In Python 3.12, which function now supports resource directories?"), removals, deprecations and their
replacements, renames, speed-ups, library versions, contributors and issue numbers, release dates,
editors. Each fact becomes one row; its gold passage is a window of the page around the answer (about
60-150 words) that contains the answer verbatim, the answer is cited with `cite()`, and the prompt is
`grounded_messages()`, the format the model is served with.

DIR gets:

- `sft/reading.jsonl`: one passage or 3-4 (`--multi-share`): the gold passage among chunks of other
  sections and pages that neither state the answer nor may answer the question another way, in random
  order. Distractors hold a value of the asked type where the pages have one (another PEP for a "which
  PEP" question, another issue number, another "Contributed by", another code name; `_TYPED`): measured in
  issue 20, a reader trained with random distractors copied a span of the right type from the wrong
  passage ("PEP 750 [2]"), which a passage with no PEP in it never teaches it not to do. The first
  distractor is the one BM25 ranks highest for the question;
- `sft/distractor.jsonl`: the gold passage and the same kind of statement in a neighbouring version's page
  with another value (an addition to the same module, a library version, a release date), and a question
  that names the version, so that only one passage answers it: its title ("What's New in Python 3.12")
  says which;
- `sft/abstain.jsonl` (`--abstain-share` of all SFT rows): a question with hard negatives, the chunks our
  own retriever ranks highest for it (the indexer's chunker with its default size, and its BM25, over the
  same pages, in memory) that neither state the answer nor may answer it; the answer is `ABSTAIN_ANSWER`;
- `rl/grounded.jsonl`: reading rows of held-out facts (no SFT row asks about them) as the RL rows
  `{prompt, answers, kind, passages, gold_passage}` that `python -m trainer rl --data DIR/rl` reads;
- `manifest.json`: counts per kind, the resolved config, the pages' and files' sha256, what was dropped.

No row may overlap an eval question (`--eval-questions`, and the questions of the synthetic worlds named by
`--worlds`, generated in memory): facts that state an eval question's answer and share a topic word with
it are dropped, and so is every row that shares an n-gram with an eval question and its answer (the test
of `python -m eval contamination`, run on the row as the trainer reads it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.configs import to_jsonable
from core.loaders import SkipFile, load_file
from core.prompts import ABSTAIN_ANSWER, Message, cite, grounded_messages, passage
from core.settings import DEFAULT_EMBEDDER, Settings
from eval.contamination import QuestionGrams, load_questions, row_text, words
from eval.world import WorldConfig, generate_world
from eval.world.config import SIZE_NAMES, Size
from eval.world.writer import remove_outputs

logger = logging.getLogger(__name__)

Row = dict[str, object]

# Bumped whenever the same config would give different rows.
GENERATOR_VERSION = "2"
SFT_KINDS = ("reading", "distractor", "abstain")
# Everything write_rows creates; only these are removed when rows are rewritten in place.
OUTPUTS = ("sft", "rl", "manifest.json")
PAGE_GLOB = "whatsnew-*.md"
CREDIT_KINDS = ("contributor", "issue")


@dataclass
class WhatsNewConfig:
    """Which pages, how many rows of each kind, and what no row may overlap."""

    pages: Path = field(
        default=Path("data/python-docs/whatsnew-pre"),
        metadata={"help": "folder of whatsnew-X.Y.md pages (front matter: version, date)"},
    )
    seed: int = field(default=0, metadata={"help": "seed of every random choice"})
    versions: list[str] = field(
        default_factory=list,
        metadata={
            "help": "only these versions' pages, e.g. 3.11 3.12 (default: all)",
            "nargs": "+",
            "type": str,
        },
    )
    multi_share: float = field(
        default=0.5, metadata={"help": "share of reading and RL rows with 3-4 passages (the rest have one)"}
    )
    abstain_share: float = field(default=0.15, metadata={"help": "abstain rows as a share of all SFT rows"})
    distractor_share: float = field(
        default=0.12, metadata={"help": "distractor rows as a share of all SFT rows, at most"}
    )
    credit_share: float = field(
        default=0.35,
        metadata={"help": "share of the facts that ask for a contributor or an issue number, at most"},
    )
    rl_rows: int = field(
        default=500, metadata={"help": "RL rows, of facts held out of sft/ (at most a fifth of the facts)"}
    )
    limit: int | None = field(
        default=None, metadata={"help": "use at most N facts (quick runs and tests)", "type": int}
    )
    min_words: int = field(
        default=60, metadata={"help": "a passage's words, at least (where the page allows)"}
    )
    max_words: int = field(default=150, metadata={"help": "a passage's words, at most"})
    eval_questions: list[Path] = field(
        default_factory=lambda: [Path("data/python-docs/questions.jsonl")],
        metadata={"help": "eval question files or folders no row may overlap", "nargs": "+", "type": Path},
    )
    worlds: list[str] = field(
        default_factory=lambda: ["nano:0", "tiny:0"],
        metadata={
            "help": "synthetic worlds (SIZE:SEED) whose questions no row may overlap (--worlds alone: none)",
            "nargs": "*",
            "type": str,
        },
    )
    ngram: int = field(default=13, metadata={"help": "n-gram length of the contamination test"})

    def validate(self) -> None:
        for name in ("multi_share", "abstain_share", "distractor_share", "credit_share"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
        if self.abstain_share + self.distractor_share >= 1.0:
            raise ValueError("--abstain-share plus --distractor-share must be below 1")
        if not 20 <= self.min_words <= self.max_words:
            raise ValueError(f"need 20 <= --min-words <= --max-words, got {self.min_words}, {self.max_words}")
        if self.rl_rows < 0:
            raise ValueError(f"--rl-rows must be >= 0, got {self.rl_rows}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.ngram < 1:
            raise ValueError(f"--ngram must be at least 1, got {self.ngram}")
        for spec in self.worlds:
            world_spec(spec)


def world_spec(spec: str) -> tuple[Size, int]:
    size, _, seed = spec.partition(":")
    for name in SIZE_NAMES:
        if size == name and seed.isdigit():
            return name, int(seed)
    raise ValueError(f"--worlds takes SIZE:SEED ({', '.join(SIZE_NAMES)}, and an integer), got {spec!r}")


# -- pages -------------------------------------------------------------------------------------------


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


# -- patterns ----------------------------------------------------------------------------------------

# A code name as the pages write it: `os.path.isjunction()`, `zipfile.Path`, `-X importtime`.
_ID = r"(?:-X [a-z_]+|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?:\(\))?)"
_CODE_ID = re.compile(rf"^{_ID}$")
_ENV_OR_OPTION = re.compile(r"^(?:PYTHON[A-Z0-9_]{3,}|-X [a-z_]+)$")
# Only the ones no English word looks like: dotted, called, an environment variable or an -X option.
_CALL_OR_DOTTED = (
    r"(?:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:\(\))?|[A-Za-z_]\w*\(\)|PYTHON[A-Z0-9_]{3,}|-X [a-z_]+)"
)
_CODE_REF = re.compile(rf"(?<![\w.]){_CALL_OR_DOTTED}")
# "a.f(), a.g() and a.h()": the further items of a list of code names (a plain word may be prose: "and its")
_LIST = rf"(?:(?:,\s*{_CALL_OR_DOTTED})*,?\s+and\s+{_CALL_OR_DOTTED})?"
_LIST_ANY = rf"(?:(?:,\s*{_ID})*,?\s+and\s+{_ID})?"
_KINDS = (
    "environment variable|command-line option|command line option|enum decorator|class attribute|"
    "class method|keyword-only parameter|keyword-only argument|keyword argument|context manager|function|"
    "method|class|constant|attribute|parameter|argument|option|flag|exception|decorator|enum|module|package|"
    "property"
)
_PARAMETER_KINDS = (
    "parameter", "argument", "keyword argument", "keyword-only parameter", "keyword-only argument", "option",
    "flag",
)  # fmt: skip
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
_NEW_MODULE = re.compile(
    r"^(?:New module:\s*)?(?:[Tt]he\s+)?(?:new\s+)?(?P<m>[a-z_][\w.]*)\s+(?:module|package)?\s*"
    r"(?:,\s*(?P<app>[^,]{3,60}),\s*)?"
    r"(?P<rest>(?:provides|adds|brings|implements|offers|contains|supports|allows|is|has|lets|gives|defines|"
    r"exposes|includes|was|makes|can)\b[^()]+?)\.?$"
)
_ADD = re.compile(
    rf"^(?:Add|Added|Adds)\s+(?:(?:a|an|the|two|three)\s+)?(?:new\s+)?(?:(?P<kw1>{_KINDS})s?,?\s+)?"
    rf"(?P<ans>(?P<id>{_ID}){_LIST}),?(?:\s+(?P<kw2>{_KINDS})s?\b)?(?P<rest>.*)$"
)
_REMOVED = (
    re.compile(
        rf"^(?:Remove|Removed)\s+(?:the\s+)?(?:(?:deprecated|undocumented|obsolete)\s+)?"
        rf"(?P<ans>(?P<id>{_ID}){_LIST_ANY})\s+(?P<kw>{_KINDS})s?\b(?P<rest>.*)$"
    ),
    re.compile(
        rf"^(?:The\s+)?(?:(?:deprecated|undocumented)\s+)?(?P<ans>(?P<id>{_ID}){_LIST_ANY})\s+"
        rf"(?P<kw>{_KINDS})s?\s+(?:has|have) been removed(?P<rest>.*)$"
    ),
)
_DEPRECATED = re.compile(
    rf"^(?:Deprecate|Deprecated)\s+(?:the\s+)?(?P<ans>(?P<id>{_ID}){_LIST})\s+(?P<kw>{_KINDS})s?\b(?P<rest>.*)$"
)
_REPLACED = re.compile(
    rf"(?P<old>{_ID}) (?:is|are|has been|have been|was|were|is now|are now) deprecated[^.;]*?"
    rf"(?:in favou?r of|[;,] use) (?:the )?(?:new )?(?P<new>{_ID})"
)
_RENAMED = (
    re.compile(rf"^(?:Rename|Renamed) (?:the )?(?P<old>[^.;()]{{3,60}}?) to (?P<new>{_ID})(?:\s|$|[.,;])"),
    re.compile(rf"(?P<old>{_ID}) (?:has been|was|is) renamed to (?P<new>{_ID})(?:\s|$|[.,;])"),
)
_NOW = re.compile(
    rf"^(?P<subj>(?:The )?{_ID}(?: (?:function|method|class|module|attribute))?) now "
    r"(?P<verb>supports|accepts) (?P<obj>[^.,;:()]{3,60}?)\.?$"
)
_NUM = r"\d+(?:\.\d+)?(?:\s?[–-]\s?\d+(?:\.\d+)?)?(?:x|%| times)"
_FASTER = re.compile(
    rf"^(?P<subj>[A-Za-z_][^;:]{{3,90}}?) (?P<verb>is|are|has become|have become|runs?) (?:now )?"
    rf"(?:about |around |roughly |nearly |up to |approximately |on average )?(?P<num>{_NUM}) faster\b"
)
_SPEED_UP = re.compile(
    rf"^(?:Speed up|Sped up|Speeds up|Optimi[sz]ed?|Improved? the performance of) (?P<subj>[^.;:]{{5,100}}?)"
    rf" by (?:about |around |up to |roughly |approximately )?(?P<num>{_NUM})"
)
_LIBS = "Unicode|SQLite|OpenSSL|Tcl/Tk|Tcl|Tk|zlib|libffi|pip|setuptools|libexpat|expat|libmpdec|bzip2|xz"
_UPDATED = re.compile(
    rf"^(?P<subj>[A-Z][^;:]{{3,60}}?) (?P<verb>has been|have been|was|were|is|are) (?:updated|upgraded) to "
    rf"(?:use )?(?:version )?(?:(?P<lib>{_LIBS}) )?(?:version )?(?P<ver>\d+\.\d+(?:\.\d+)*)"
)
_REQUIRES = re.compile(
    rf"^(?P<subj>[A-Z][^;:]{{3,60}}?) (?:now )?requires? (?:at least )?(?P<lib>{_LIBS}) (?:version )?"
    rf"(?P<ver>\d+\.\d+(?:\.\d+)*)"
)
_CLOZE = re.compile(
    rf"^(?:The\s+)?(?:new\s+)?(?:(?P<ans>(?P<id>{_CALL_OR_DOTTED}){_LIST})(?:\s+(?P<kw>{_KINDS})(?P<pl>e?s)?)?"
    r"|(?P<mod>[a-z_]\w*) (?P<modkw>module|package))\s+"
    r"(?P<pred>(?:now|is|are|has|have|was|were|can|will|no longer|returns|raises|accepts|supports|uses|"
    r"gained|also|should|may|must|became|becomes|got|gets)\b.*)$"
)
# What an addition is for: "for computing a sum of products", "to allow specifying a custom factory".
_CLAUSE = re.compile(
    r"^(?:for|to|that|which|allowing|defining|returning|so that|in order to|when|on|as|with|providing)\b"
)
_KEEP_CASE = {"Python", "CPython", "Unicode", "Windows", "Linux", "macOS", "Mac", "C", "I/O", "Tk", "Tkinter"}
# Words that say nothing about a question's topic (two questions sharing only these are not alike).
_GENERIC = frozenset(
    re.findall(
        r"\w+",
        """which what who when how does did do is are was were the a an of in on to for by from with and or it
        its python pep new module modules function functions added add removed deprecated version versions now
        this that these those be been has have use used instead released contributed""",
    )
)


def _sentences(text: str) -> list[str]:
    return re.split(r"(?<=[.!?])\s+(?=[A-Z(“\"])", text)


def _lower_title(title: str) -> str:
    """'Structural Pattern Matching' -> 'structural pattern matching'; names and acronyms keep their case."""
    out = []
    for w in title.split():
        core = w.strip("“”‘’\"'(),")
        out.append(w if core in _KEEP_CASE or not core.istitle() or not core.isalpha() else w.lower())
    return " ".join(out)


def _clause(rest: str, answer: str) -> str:
    """' for computing a sum of products' when `rest` starts with what an addition is for, else ''."""
    rest = re.split(r"\s+\(|;|\.(?:\s|$)", rest.strip(" ,"), maxsplit=1)[0].strip(" ,.")
    if not _CLAUSE.match(rest) or not 3 <= len(rest.split()) <= 18:
        return ""
    if _last_part(answer).lower() in rest.lower():
        return ""  # it would name the answer
    return " " + rest


def _last_part(ident: str) -> str:
    return ident.removesuffix("()").rsplit(".", 1)[-1]


def _kind_of(ident: str, explicit: str | None, plural: bool) -> str | None:
    """'function' for `x.f()`, 'class' for `x.Cls`, 'constant' for `x.CONST`, None when it cannot tell."""
    kind = explicit
    if kind is None and _ENV_OR_OPTION.match(ident):
        kind = "environment variable" if ident.startswith("PYTHON") else "command-line option"
    if kind is None:
        parts = ident.removesuffix("()").split(".")
        if ident.endswith("()"):
            kind = "method" if len(parts) > 2 and parts[-2][:1].isupper() else "function"
        elif len(parts) == 1:
            return None
        elif parts[-1].isupper() and len(parts[-1]) > 1:
            kind = "constant"
        elif parts[-1][:1].isupper():
            kind = "class"
        else:
            return None
    if plural:
        kind += "es" if kind.endswith(("ss", "sh")) else "s"
    return kind


def _is_code_id(text: str) -> bool:
    """A code name no English word looks like: 'math.sumprod()', 'zipfile.Path', 'loop_factory'."""
    if _ENV_OR_OPTION.match(text):
        return True
    return bool(_CODE_ID.match(text)) and ("." in text or text.endswith("()") or "_" in text)


def _names(raw: str) -> str | None:
    """At most three people's names as the page states them ("A and B"), else None."""
    raw = re.split(r"(?<=\w\w)\.(?:\s|$)", raw, maxsplit=1)[0]  # "Greg V. Wilson. Implemented by ..."
    raw = raw.strip(" ,.;")
    if not raw or len(raw.split()) > 12 or not _NAMES.match(raw):
        return None
    return raw


def _first_match(patterns: Iterable[re.Pattern[str]], s: str, anywhere: bool = False) -> re.Match[str] | None:
    for pattern in patterns:
        if m := (pattern.search(s) if anywhere else pattern.match(s)):
            return m
    return None


def _the(subject: str) -> str:
    """'The unicodedata module' -> 'the unicodedata module', to go inside a question."""
    return "the " + subject[4:] if subject.startswith("The ") else subject


# -- facts -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """A question the page answers: `answer` occurs verbatim in paragraph `para` of page `version`."""

    version: str
    kind: str
    question: str
    answer: str
    para: int
    # phrases of the question a passage must contain to answer it (the gold passage must hold them)
    anchors: tuple[str, ...] = ()
    # a passage that matches all of these (case-insensitive regexes) may answer the question another way:
    # it is neither a distractor nor a negative
    conflict: tuple[str, ...] = ()
    # facts with one key ask one question of different versions (distractor rows): `generic` asks it,
    # "{v}" standing for the version
    key: tuple[str, ...] | None = None
    generic: str = ""

    @property
    def aliases(self) -> list[str]:
        """The answer, then the shorter forms of it that the gold passage also states ("634", "batched")."""
        out = [self.answer]
        if m := re.fullmatch(r"PEP (\d+)", self.answer):
            out.append(m[1])
        bare = self.answer.removesuffix("()")
        if "." in bare and " " not in bare and len(_last_part(bare)) >= 4:
            out.append(_last_part(bare))
        return out


class _Extractor:
    """Every fact of one page, by pattern."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.v = page.version
        self.facts: list[Fact] = []
        # code name (without "()") -> how many paragraphs of the page name it
        self.refs: Counter[str] = Counter()
        for p in page.paras:
            self.refs.update({m[0].removesuffix("()") for m in _CODE_REF.finditer(p.text)})

    def add(
        self,
        kind: str,
        question: str,
        answer: str,
        para: int,
        *,
        anchors: tuple[str, ...] = (),
        conflict: tuple[str, ...] = (),
        key: tuple[str, ...] | None = None,
        generic: str = "",
    ) -> None:
        answer = answer.strip()
        if not answer or answer not in self.page.paras[para].text or len(answer.split()) > 12:
            return
        if answer.lower() in question.lower():
            return  # the question would give the answer away
        question = " ".join(question.split())
        question = question[0].upper() + question[1:]
        self.facts.append(Fact(self.v, kind, question, answer, para, anchors, conflict, key, generic))

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

    # -- the page's own header ------------------------------------------------------------------------

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

    # -- PEPs ----------------------------------------------------------------------------------------

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

    # -- modules and what changed in them ------------------------------------------------------------

    def new_module(self, i: int, module: str, s: str) -> None:
        m = _NEW_MODULE.match(s)
        if m is None or m["m"] != module:
            return
        rest = m["rest"]
        if module.lower() in rest.lower() or len(rest.split()) > 20:
            return
        package = re.match(rf"^(?:The\s+)?(?:new\s+)?{re.escape(module)}\s+package", s)
        app = f", {m['app']}," if m["app"] else ""
        q = f"Which new {'package' if package else 'module'}{app} in Python {self.v} {rest}?"
        long_words = [w for w in re.findall(r"[a-z]{5,}", rest.lower()) if w not in _GENERIC]
        conflict = (r"\bmodules?\b", *([re.escape(max(long_words, key=len))] if long_words else []))
        self.add("new_module", q, module, i, conflict=conflict)

    def _module(self, p: Para, ident: str) -> str:
        """The module a code name belongs to: the heading it is listed under, else its first part."""
        if category(p.section) == "modules" and _MODULE_NAME.match(p.sub):
            return p.sub
        return ident.split(".")[0] if "." in ident else ""

    def added(self, i: int, p: Para, s: str) -> list[str]:
        """'Add math.sumprod() for computing a sum of products.': what it adds (as a list), and its fact."""
        m = _ADD.match(s)
        if m is None:
            return []
        ident, answer, rest = m["id"], m["ans"], m["rest"]
        plural = answer != ident
        explicit = m["kw2"] or m["kw1"]
        be = "were" if plural else "was"
        if explicit in _PARAMETER_KINDS:
            t = re.match(
                rf"^\s+(?:to|for)\s+(?:the\s+)?(?P<target>{_ID})(?:\s+(?:function|method|class))?", rest
            )
            if t is None or not _is_code_id(t["target"]):
                return []
            target = t["target"]
            clause = _clause(rest[t.end() :], answer)
            q = f"Which {explicit}{'s' if plural else ''} {be} added to {target} in Python {self.v}{clause}?"
            conflict = (
                (re.escape(clause.strip()),) if clause else (re.escape(target), r"\b(?:Add|Added|New)\b")
            )
            self.add("param", q, answer, i, anchors=(target,), conflict=conflict)
            return [answer]
        kind = _kind_of(ident, explicit, plural) if _is_code_id(ident) else None
        module = self._module(p, ident)
        if kind is None or not module or module.lower() == answer.lower():
            return []
        owner = ident.removesuffix("()").rsplit(".", 1)[0] if "." in ident else module
        where = f"the {owner} module" if owner == module or owner.islower() else owner
        clause = _clause(rest, answer)
        q = f"Which {kind} {be} added to {where} in Python {self.v}{clause}?"
        conflict = (
            (re.escape(clause.strip()),)
            if clause
            else (rf"\b{re.escape(module)}\.", r"\b(?:Add|Added|New)\b")
        )
        generic = f"Which {kind} {be} added to {where} in Python {{v}}?"
        self.add(
            "added", q, answer, i, anchors=(module,), conflict=conflict, key=("added", where, kind),
            generic=generic,
        )  # fmt: skip
        return [answer]

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

    def removed(self, i: int, s: str) -> None:
        m = _first_match(_REMOVED, s)
        if m is None:
            return
        ident, answer, kw = m["id"], m["ans"], m["kw"]
        if not _is_code_id(ident) and kw != "module":
            return
        plural = answer != ident
        be = "were" if plural else "was"
        kind = kw + ("s" if plural else "")
        since = re.search(r"deprecated (?:in|since) Python (\d+\.\d+)", s)
        clause = f", deprecated since Python {since[1]}," if since else ""
        owner = (
            ident.removesuffix("()").rsplit(".", 1)[0]
            if "." in ident and kw not in ("module", "package")
            else ""
        )
        where = f" from {owner}" if owner else ""
        generic = f"Which {kind} {be} removed{where} in Python {{v}}?"
        self.add(
            "removed", f"Which {kind}{clause} {be} removed{where} in Python {self.v}?", answer, i,
            anchors=(owner,) if owner else (), conflict=(r"\bremov", rf"\b{kw}"),
            key=("removed", kind, where), generic=generic,
        )  # fmt: skip

    def deprecated(self, i: int, s: str) -> None:
        m = _DEPRECATED.match(s)
        if m is None or (not _is_code_id(m["id"]) and m["kw"] not in ("module", "package")):
            return
        plural = m["ans"] != m["id"]
        kind = m["kw"] + ("s" if plural else "")
        clause = _clause(m["rest"], m["ans"])
        q = f"Which {kind} {'were' if plural else 'was'} deprecated in Python {self.v}{clause}?"
        self.add("deprecated", q, m["ans"], i, conflict=(r"\bdeprecat", rf"\b{m['kw']}"))

    def replaced(self, i: int, s: str) -> None:
        m = _REPLACED.search(s)
        if m is None or not (_is_code_id(m["old"]) and _is_code_id(m["new"])) or m["old"] == m["new"]:
            return
        q = f"In Python {self.v}, what should be used instead of the deprecated {m['old']}?"
        self.add("replacement", q, m["new"], i, anchors=(m["old"],), conflict=(re.escape(m["old"]),))

    def renamed(self, i: int, s: str) -> None:
        m = _first_match(_RENAMED, s, anywhere=True)
        if m is None:
            return
        old, new = m["old"].strip(), m["new"]
        if m.re is _RENAMED[1] and not _is_code_id(old):
            return  # "the next() method has been renamed": the subject is further back
        if len(old.split()) > 8 or not _is_code_id(new) or new in old:
            return
        q = f"In Python {self.v}, what was {old} renamed to?"
        self.add("renamed", q, new, i, anchors=(old,), conflict=(re.escape(old),))

    def now_supports(self, i: int, s: str) -> None:
        m = _NOW.match(s)
        if m is None or not _is_code_id(m["subj"].removeprefix("The ").split(" ")[0]):
            return
        verb = {"supports": "support", "accepts": "accept"}[m["verb"]]
        obj = m["obj"].strip()
        if len(obj.split()) > 6:
            return
        q = f"What does {_the(m['subj'])} now {verb} in Python {self.v}?"
        self.add("supports", q, obj, i, anchors=(m["subj"],), conflict=(re.escape(m["subj"]),))

    def faster(self, i: int, s: str) -> None:
        if m := _FASTER.match(s):
            verb = {"run": "are", "runs": "is", "has become": "is", "have become": "are"}.get(
                m["verb"], m["verb"]
            )
        elif m := _SPEED_UP.match(s):
            verb = ""
        else:
            return
        subj = re.sub(r"\s+\([^()]*\)", "", m["subj"]).strip()
        if len(subj.split()) > 14 or not (re.search(r"\.\w|\(\)", subj) or re.match(r"Python \d", subj)):
            return
        subj = _the(subj)
        where = "" if re.search(r"Python \d", subj) else f" in Python {self.v}"
        q = f"How much faster {verb} {subj}{where}?" if verb else f"By how much was {subj} sped up{where}?"
        bare = subj.removeprefix("the ")
        self.add("faster", q, m["num"], i, anchors=(bare,), conflict=(re.escape(bare),))

    def cloze(self, i: int, s: str) -> None:
        """A sentence about code names, asked with the names left out: "In Python 3.12, which function now
        supports resource directories?" """
        m = _CLOZE.match(s)
        if m is None:
            return
        if m["mod"]:
            ident = answer = m["mod"]
            explicit: str | None = m["modkw"]
        else:
            ident, answer, explicit = m["id"], m["ans"], m["kw"]
        pred = re.split(r"\s+\(|;|:", m["pred"], maxsplit=1)[0].strip(" ,.")
        if not 4 <= len(pred.split()) <= 18 or _last_part(ident).lower() in pred.lower():
            return
        if re.search(r"\b(?:it|its|this|these|they|them)\b", pred):
            return  # refers to a sentence before: not a question on its own
        kind = _kind_of(ident, explicit, answer != ident or bool(m["pl"]))
        if kind is None:
            return
        long_words = sorted(
            {w for w in re.findall(r"[a-z]{5,}", pred.lower()) if w not in _GENERIC},
            key=lambda w: (-len(w), w),
        )
        q = f"In Python {self.v}, which {kind} {pred}?"
        self.add("cloze", q, answer, i, conflict=tuple(long_words[:2]))

    def library_version(self, i: int, s: str) -> None:
        updated = _UPDATED.match(s)
        m = updated or _REQUIRES.match(s)
        if m is None or len(m["subj"].split()) > 8:
            return
        if re.search(r"\b(?:will|would|should|must|may|can|In|future)\b", m["subj"]):
            return  # a plan, not a fact of this version
        subj = _the(m["subj"])
        if updated:
            lib = m["lib"] or next(
                (x for x in _LIBS.split("|") if re.search(rf"\b{re.escape(x)}\b", subj)), None
            )
            if lib is None:
                return
            be = "were" if m["verb"] in ("have been", "were", "are") else "was"
            generic = f"To which {lib} version {be} {subj} updated in Python {{v}}?"
            key: tuple[str, ...] | None = ("updated", lib, subj.lower())
            q = generic.format(v=self.v)
        else:
            lib = m["lib"]
            where = "" if re.search(r"Python \d", subj) else " in Python {v}"
            generic = f"Which minimum {lib} version does {subj} require{where}?"
            key = ("requires", lib, subj.lower()) if where else None
            q = generic.format(v=self.v)
        self.add(
            "library_version", q, m["ver"], i, anchors=(lib,), conflict=(re.escape(lib),), key=key,
            generic=generic,
        )  # fmt: skip


def extract_facts(page: Page) -> list[Fact]:
    """The page's facts, one per question (the first statement of a question wins)."""
    seen: set[str] = set()
    facts: list[Fact] = []
    for f in _Extractor(page).run():
        if f.question.lower() not in seen:
            seen.add(f.question.lower())
            facts.append(f)
    return facts


# -- passages ----------------------------------------------------------------------------------------


def has_phrase(text: str, phrase: str) -> bool:
    """Whether `phrase` occurs in `text`, case-insensitively and not inside a longer word."""
    return re.search(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)", text.lower()) is not None


def answers_in(text: str, fact: Fact) -> bool:
    """Whether a passage states the fact's answer or a short form of it."""
    return any(has_phrase(text, a) for a in fact.aliases)


def may_answer(text: str, fact: Fact) -> bool:
    """Whether a passage states the answer, or may answer the question another way (it matches all of the
    fact's conflict patterns): such a passage is neither a distractor nor a negative."""
    if answers_in(text, fact):
        return True
    return bool(fact.conflict) and all(re.search(p, text, re.IGNORECASE) for p in fact.conflict)


def passage_window(page: Page, fact: Fact, target: int, max_words: int) -> str | None:
    """The page around the fact's paragraph: whole paragraphs, of its own section first, until about
    `target` words (never past `max_words`, never into code); a paragraph longer than `max_words` gives the
    sentences around the answer. None when the window lacks the answer or an anchor of the question."""
    paras = page.paras
    i = fact.para
    if paras[i].words > max_words:
        text = _sentence_window(paras[i].text, fact.answer, target, max_words)
    else:
        lo = hi = i
        total = paras[i].words
        block = (paras[i].section, paras[i].sub)
        for same_block in (True, False):
            grew = True
            while total < target and grew:
                grew = False
                for j in (lo - 1, hi + 1):  # the paragraph before first: a heading says what follows
                    if total >= target or not 0 <= j < len(paras) or paras[j].code:
                        continue
                    if total + paras[j].words > max_words:
                        continue
                    if same_block and (paras[j].section, paras[j].sub) != block:
                        continue
                    lo, hi = min(lo, j), max(hi, j)
                    total += paras[j].words
                    grew = True
        text = " ".join(p.text for p in paras[lo : hi + 1])
    if fact.answer not in text or not all(a in text for a in fact.anchors):
        return None
    return text


def _sentence_window(text: str, answer: str, target: int, max_words: int) -> str:
    sentences = _sentences(text)
    lo = hi = next((k for k, s in enumerate(sentences) if answer in s), 0)
    total = len(sentences[lo].split())
    while total < target:
        fits = [
            j
            for j in (lo - 1, hi + 1)
            if 0 <= j < len(sentences) and total + len(sentences[j].split()) <= max_words
        ]
        if not fits:
            break
        lo, hi = min(lo, fits[0]), max(hi, fits[0])
        total += len(sentences[fits[0]].split())
    return " ".join(sentences[lo : hi + 1])


class ChunkIndex:
    """The pages as our retriever serves them: the indexer's chunker (its default chunk size and overlap)
    and its BM25 over the chunks, in memory. Distractor passages and hard negatives are drawn from here."""

    def __init__(self, pages: list[Page]) -> None:
        from indexer.embedding import Chunker, Embedder
        from indexer.stores import LexicalStore, lexical_tokens

        fields = Settings.model_fields
        size, overlap = fields["chunk_tokens"].default, fields["chunk_overlap"].default
        chunker = Chunker(Embedder(DEFAULT_EMBEDDER), size, overlap)  # only its tokenizer is loaded
        spans = [(page, " ".join(span.text.split())) for page in pages for span in chunker.split(page.text)]
        self.texts = [text for _, text in spans]
        self.shown = [page.shown(text) for page, text in spans]
        self.store = LexicalStore.build(np.arange(len(self.texts)), [lexical_tokens(t) for t in self.texts])
        logger.info(
            "%d chunks of %d tokens (overlap %d) from %d pages", len(self.texts), size, overlap, len(pages)
        )

    def search(self, query: str, k: int) -> list[int]:
        return [i for i, _ in self.store.search(query, k)]


# -- contamination -----------------------------------------------------------------------------------


def _topic(text: str) -> set[str]:
    return {w for w in words(text) if w not in _GENERIC and not w.isdigit() and len(w) > 2}


class EvalGuard:
    """What overlaps an eval question: a row sharing an n-gram with one (question and answer, the test of
    `eval.contamination`), and a fact that states an eval answer, as its answer or in its question ("What is
    the title of PEP 634?" is the eval question "Which PEP specifies structural pattern matching?" turned
    round), while sharing a topic word with that eval question."""

    def __init__(self, questions: list[dict[str, object]], n: int) -> None:
        self.questions = len(questions)
        self.grams = QuestionGrams(questions, n)
        self.topics: dict[tuple[str, ...], list[set[str]]] = {}  # an answer's words -> its questions' topics
        for q in questions:
            answers = q.get("answers")
            for a in answers if isinstance(answers, list) else []:
                if key := tuple(words(str(a))):
                    self.topics.setdefault(key, []).append(_topic(str(q["question"])))
        self.longest = max(map(len, self.topics), default=0)

    def states_eval_answer(self, fact: Fact) -> bool:
        toks = words(f"{fact.question} {fact.answer}")
        topic = _topic(f"{fact.question} {fact.answer}")
        return any(
            topic & other
            for i in range(len(toks))
            for size in range(1, self.longest + 1)
            for other in self.topics.get(tuple(toks[i : i + size]), ())
        )

    def overlaps(self, row: Row) -> bool:
        return next(self.grams.matches(words(row_text(row))), None) is not None


def eval_questions(cfg: WhatsNewConfig) -> list[dict[str, object]]:
    """The question rows no training row may overlap: the files, then each world's questions."""
    questions = load_questions(cfg.eval_questions) if cfg.eval_questions else []
    for spec in cfg.worlds:
        size, seed = world_spec(spec)
        questions += [q.to_row() for q in generate_world(WorldConfig(seed=seed, size=size)).questions]
    return questions


# -- rows --------------------------------------------------------------------------------------------


def _sft(messages: list[Message], answer: str, kind: str) -> Row:
    return {"messages": [*messages, {"role": "assistant", "content": answer}], "kind": kind}


def _question(row: Row) -> str:
    messages = row["messages"]
    assert isinstance(messages, list)
    return str(messages[1]["content"]).rsplit("\n\nQuestion: ", 1)[1]


def _interleave(a: list[int], b: list[int]) -> list[int]:
    return [x[k] for k in range(max(len(a), len(b))) for x in (a, b) if k < len(x)]


class _Rows:
    """The rows of facts; every choice is drawn from one seeded generator, in a fixed order."""

    def __init__(self, cfg: WhatsNewConfig, pages: list[Page], index: ChunkIndex, rng: random.Random) -> None:
        self.cfg = cfg
        self.pages = {p.version: p for p in pages}
        self.order = [p.version for p in pages]
        self.index = index
        self.rng = rng

    def window(self, fact: Fact) -> str | None:
        target = self.rng.randint(self.cfg.min_words, (self.cfg.min_words + self.cfg.max_words) // 2)
        return passage_window(self.pages[fact.version], fact, target, self.cfg.max_words)

    def n_passages(self) -> int:
        return self.rng.choice((3, 4)) if self.rng.random() < self.cfg.multi_share else 1

    def distractors(self, fact: Fact, gold: str, n: int) -> list[str]:
        """`n` chunks (shown as passages) that neither state the answer nor may answer the question another
        way, holding a value of the asked type where enough chunks do: the first is the one BM25 ranks
        highest for the question, the others are drawn at random."""
        chosen: list[int] = []
        typed = _typed(fact)

        def fits(i: int, any_type: bool = False) -> bool:
            text = self.index.texts[i]
            overlaps_gold = gold[:80] in text or text[:80] in gold
            of_type = any_type or typed is None or typed.search(text) is not None
            return i not in chosen and of_type and not overlaps_gold and not may_answer(text, fact)

        ranked = self.index.search(fact.question, 20)
        hard = next((i for i in ranked if fits(i)), next((i for i in ranked if fits(i, True)), None))
        if hard is not None and n > 0:
            chosen.append(hard)
        for any_type in (False, True):
            for _ in range(40 * n):
                if len(chosen) >= n:
                    break
                i = self.rng.randrange(len(self.index.texts))
                if fits(i, any_type):
                    chosen.append(i)
        return [self.index.shown[i] for i in chosen]

    def grounded(self, fact: Fact) -> tuple[list[Message], list[str], int] | None:
        """The prompt, its passages and the gold passage's 1-based number; None when no window fits."""
        gold = self.window(fact)
        if gold is None:
            return None
        assert fact.answer in gold, (fact, gold)
        n = self.n_passages()
        passages = self.distractors(fact, gold, n - 1) if n > 1 else []
        at = self.rng.randrange(len(passages) + 1)
        passages.insert(at, self.pages[fact.version].shown(gold))
        return grounded_messages(fact.question, passages), passages, at + 1

    def reading(self, fact: Fact) -> Row | None:
        made = self.grounded(fact)
        if made is None:
            return None
        messages, _, gold = made
        return _sft(messages, cite(fact.answer, gold), "reading")

    def rl(self, fact: Fact) -> Row | None:
        made = self.grounded(fact)
        if made is None:
            return None
        messages, passages, gold = made
        return {"prompt": messages, "answers": fact.aliases, "kind": "grounded", "passages": passages,
                "gold_passage": gold}  # fmt: skip

    def abstain(self, fact: Fact) -> Row | None:
        """The question with the chunks BM25 ranks highest for it that cannot answer it."""
        n = self.n_passages()
        # As asked, the question ranks its version's page high (its "Python 3.12"); without the version,
        # the chunks about its subject in other pages: the negatives alternate between the two rankings.
        bare = re.sub(r"\s*\b(?:in|In|for) Python \d+\.\d+,?", "", fact.question)
        ranked = _interleave(self.index.search(fact.question, 30), self.index.search(bare, 30))
        texts = {self.index.texts[i]: self.index.shown[i] for i in ranked}
        negatives = [shown for t, shown in texts.items() if not may_answer(t, fact)][:n]
        if not negatives:
            return None
        self.rng.shuffle(negatives)
        return _sft(grounded_messages(fact.question, negatives), ABSTAIN_ANSWER, "abstain")

    def distractor(self, fact: Fact, others: list[Fact], count: int) -> list[Row]:
        """Up to `count` rows, each pairing the fact's passage with the same statement in another version's
        page (nearest version first) that gives another value, both passages dated."""
        at = self.order.index(fact.version)
        near = sorted(others, key=lambda g: (abs(self.order.index(g.version) - at), version_key(g.version)))
        gold = self.window(fact)
        rows: list[Row] = []
        for other in near:
            if gold is None or len(rows) == count:
                break
            text = self.window(other)
            if (
                other.answer == fact.answer
                or text is None
                or answers_in(text, fact)
                or answers_in(gold, other)
            ):
                continue
            mine = self.pages[fact.version].shown(gold)
            passages = [mine, self.pages[other.version].shown(text)]
            self.rng.shuffle(passages)
            question = fact.generic.format(v=fact.version)
            answer = cite(fact.answer, passages.index(mine) + 1)
            rows.append(_sft(grounded_messages(question, passages), answer, "distractor"))
        return rows


@dataclass
class Generated:
    sft: dict[str, list[Row]]
    rl: list[Row]
    facts: dict[str, int]  # kind -> facts used
    dropped: dict[str, object]
    pages: dict[str, str]  # file name -> sha256
    chunks: int


# Facts whose answers have a type a passage can hold another value of: (kinds, what such a value looks
# like in a passage). Code names: the pages' own markup of identifiers.
_CREDIT = re.compile(r"\b(?:[Cc]ontributed|[Ww]ritten|[Ii]mplemented|[Pp]atch(?:ed)?|[Aa]dded) by [A-Z]")
_TYPED: tuple[tuple[frozenset[str], re.Pattern[str]], ...] = (
    (frozenset({"pep"}), re.compile(r"\bPEP \d+")),
    (frozenset({"issue"}), re.compile(r"\b(?:gh|bpo)-\d+")),
    (frozenset({"contributor", "pep_author", "editor"}), _CREDIT),
    (frozenset({"library_version", "faster"}), re.compile(r"\b\d+\.\d+(?:\.\d+)?\b|\b\d+(?:\.\d+)?(?:x|%)")),
    (
        frozenset({"added", "cloze", "param", "new_module", "removed", "renamed", "replacement", "supports",
                   "deprecated"}),
        _CODE_REF,
    ),
)  # fmt: skip


def _typed(fact: Fact) -> re.Pattern[str] | None:
    """What a passage holding another answer of the fact's type contains, if the type is known."""
    return next((pattern for kinds, pattern in _TYPED if fact.kind in kinds), None)


def _cap_credits(facts: list[Fact], share: float, rng: random.Random) -> list[Fact]:
    """At most `share` of the facts ask for a contributor or an issue (the pages cite one per paragraph)."""
    credits = [k for k, f in enumerate(facts) if f.kind in CREDIT_KINDS]
    keep = min(len(credits), int((len(facts) - len(credits)) * share / (1 - share)))
    dropped = set(credits) - set(rng.sample(credits, keep))
    return [f for k, f in enumerate(facts) if k not in dropped]


def generate(cfg: WhatsNewConfig) -> Generated:
    cfg.validate()
    rng = random.Random(f"keepcurrent-whatsnew:{cfg.seed}")
    pages = load_pages(cfg.pages, cfg.versions)
    guard = EvalGuard(eval_questions(cfg), cfg.ngram)

    found = [f for p in pages for f in extract_facts(p)]
    facts = _cap_credits(found, cfg.credit_share, rng)
    over_cap = len(found) - len(facts)
    topical = [f for f in facts if guard.states_eval_answer(f)]
    facts = [f for f in facts if not guard.states_eval_answer(f)]
    rng.shuffle(facts)
    facts = facts[: cfg.limit]
    n_rl = min(cfg.rl_rows, len(facts) // 5)
    held, train = facts[:n_rl], facts[n_rl:]
    asked = {f.question for f in held}  # two facts may share a question ("Which method was added to ...?")
    train = [f for f in train if f.question not in asked]

    index = ChunkIndex(pages)
    make = _Rows(cfg, pages, index, rng)
    overlapping = dict.fromkeys((*SFT_KINDS, "rl"), 0)
    no_passage = 0

    def kept(rows: Iterable[Row | None], kind: str) -> list[Row]:
        nonlocal no_passage
        out: list[Row] = []
        for row in rows:
            if row is None:
                no_passage += 1
            elif guard.overlaps(row):
                overlapping[kind] += 1
            else:
                out.append(row)
        return out

    reading = kept((make.reading(f) for f in train), "reading")
    rl = kept((make.rl(f) for f in held), "rl")

    # distractor rows: facts asking one question of different versions, where each page states one answer
    by_key: dict[tuple[str, ...], dict[str, list[Fact]]] = {}
    for f in train:
        if f.key is not None:
            by_key.setdefault(f.key, {}).setdefault(f.version, []).append(f)
    distractor: list[Row] = []
    for key in sorted(by_key):
        unique = [
            fs[0] for v, fs in sorted(by_key[key].items(), key=lambda vf: version_key(vf[0])) if len(fs) == 1
        ]
        for f in unique:
            distractor += kept(make.distractor(f, [g for g in unique if g is not f], 2), "distractor")
    # a distractor row asks the generic form of its question, which may be a held-out fact's question
    distractor = [r for r in distractor if _question(r) not in asked]
    rng.shuffle(distractor)
    s, a = cfg.distractor_share, cfg.abstain_share
    distractor = distractor[: int(s * len(reading) / (1 - a - s))]  # then distractor / all SFT <= s

    n_abstain = round(a * (len(reading) + len(distractor)) / (1 - a))
    abstain: list[Row] = []
    for f in rng.sample(train, len(train)):
        if len(abstain) == n_abstain:
            break
        abstain += kept([make.abstain(f)], "abstain")

    for rows in (reading, abstain, rl):
        rng.shuffle(rows)
    used = Counter(f.kind for f in facts)
    return Generated(
        sft={"reading": reading, "distractor": distractor, "abstain": abstain},
        rl=rl,
        facts=dict(sorted(used.items())),
        dropped={
            "eval_questions": guard.questions,
            "credit_cap": over_cap,
            # by kind only: the manifest is read with the rows, and a dropped question in it would leak
            "states_eval_answer": dict(sorted(Counter(f.kind for f in topical).items())),
            "ngram_overlap": overlapping,
            "no_passage": no_passage,
        },
        pages={p.name: p.sha256 for p in pages},
        chunks=len(index.texts),
    )


# -- writing -----------------------------------------------------------------------------------------


def check_out_dir(out: Path) -> None:
    """Refuse a file, or a folder holding anything but rows written by this command (before any work)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a directory (it is created if missing)")
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = (
                json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("generator")
                == "whatsnew-rows"
            )
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(
                f"--out {out} is not empty and holds no manifest.json of `python -m eval whatsnew-rows`; "
                "pass a new or empty directory"
            )


def prepare_out_dir(out: Path) -> None:
    """Create `out`, or clear the rows written there before."""
    check_out_dir(out)
    remove_outputs(out, OUTPUTS)
    out.mkdir(parents=True, exist_ok=True)


def write_rows(gen: Generated, cfg: WhatsNewConfig, out: Path) -> dict[str, object]:
    """The files under `out`, and their manifest (returned). Byte-identical for the same config."""
    prepare_out_dir(out)
    files: dict[str, str] = {}
    for rel, rows in (*((f"sft/{k}.jsonl", gen.sft[k]) for k in SFT_KINDS), ("rl/grounded.jsonl", gen.rl)):
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        files[rel] = hashlib.sha256(data).hexdigest()
    sft_total = sum(len(rows) for rows in gen.sft.values())
    manifest: dict[str, object] = {
        "generator": "whatsnew-rows",
        "generator_version": GENERATOR_VERSION,
        "seed": cfg.seed,
        "config": to_jsonable(cfg),
        "counts": {
            "sft": {k: len(gen.sft[k]) for k in SFT_KINDS},
            "sft_total": sft_total,
            "abstain_share": round(len(gen.sft["abstain"]) / sft_total, 4) if sft_total else 0.0,
            "rl": {"grounded": len(gen.rl)},
            "facts": gen.facts,
            "chunks": gen.chunks,
        },
        "dropped": gen.dropped,
        "pages": gen.pages,
        "files": files,
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (out / "manifest.json").write_text(text, encoding="utf-8")
    logger.info("wrote %d SFT rows and %d RL rows to %s", sft_total, len(gen.rl), out)
    return manifest


def run(cfg: WhatsNewConfig, out: Path) -> dict[str, object]:
    """Generate and write; the manifest with `out` and the seconds it took."""
    started = time.perf_counter()
    check_out_dir(out)
    manifest = write_rows(generate(cfg), cfg, out)
    return {"out": str(out), **manifest, "seconds": round(time.perf_counter() - started, 2)}


def format_summary(summary: dict[str, object]) -> str:
    counts, dropped, config = summary["counts"], summary["dropped"], summary["config"]
    assert isinstance(counts, dict) and isinstance(dropped, dict) and isinstance(config, dict)

    def listed(values: dict[str, object]) -> str:
        return ", ".join(f"{k} {v}" for k, v in values.items())

    stated = sum(dropped["states_eval_answer"].values())
    return "\n".join(
        [
            f"whatsnew rows, seed {summary['seed']}, {len(counts['facts'])} kinds of facts from "
            f"{len(summary['pages'])} pages -> {summary['out']}",  # type: ignore[arg-type]
            f"  sft          {listed(counts['sft'])} ({counts['sft_total']} rows, abstain share "
            f"{counts['abstain_share']})",
            f"  rl           grounded {counts['rl']['grounded']}",
            f"  facts        {listed(counts['facts'])}",
            f"  dropped      {stated} facts stating a topical eval answer; rows sharing a "
            f"{config['ngram']}-gram with one of {dropped['eval_questions']} eval questions: "
            f"{listed(dropped['ngram_overlap'])}; "
            f"{dropped['credit_cap']} credit facts over the cap; {dropped['no_passage']} without a passage",
            f"  seconds      {summary['seconds']}",
        ]
    )
