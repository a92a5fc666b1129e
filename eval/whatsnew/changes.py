"""The facts of what changed in a module: additions (functions, classes, parameters), new modules,
removals, deprecations and their replacements, renames, "now supports", speed-ups, library versions, and
sentences about code names asked with the names left out (cloze)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from eval.whatsnew.facts import _PageFacts
from eval.whatsnew.pages import _MODULE_NAME, Para, category
from eval.whatsnew.text import _CALL_OR_DOTTED, _GENERIC, _ID, _last_part

# A whole string that is a code name; an environment variable or an -X option.
_CODE_ID = re.compile(rf"^{_ID}$")
_ENV_OR_OPTION = re.compile(r"^(?:PYTHON[A-Z0-9_]{3,}|-X [a-z_]+)$")
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


def _clause(rest: str, answer: str) -> str:
    """' for computing a sum of products' when `rest` starts with what an addition is for, else ''."""
    rest = re.split(r"\s+\(|;|\.(?:\s|$)", rest.strip(" ,"), maxsplit=1)[0].strip(" ,.")
    if not _CLAUSE.match(rest) or not 3 <= len(rest.split()) <= 18:
        return ""
    if _last_part(answer).lower() in rest.lower():
        return ""  # it would name the answer
    return " " + rest


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


def _first_match(patterns: Iterable[re.Pattern[str]], s: str, anywhere: bool = False) -> re.Match[str] | None:
    for pattern in patterns:
        if m := (pattern.search(s) if anywhere else pattern.match(s)):
            return m
    return None


def _the(subject: str) -> str:
    """'The unicodedata module' -> 'the unicodedata module', to go inside a question."""
    return "the " + subject[4:] if subject.startswith("The ") else subject


class _Changes(_PageFacts):
    """The matchers of a page's changes to modules: each adds the facts one sentence states."""

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
