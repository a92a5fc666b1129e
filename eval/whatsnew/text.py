"""The pages' text as the fact patterns see it: how a code name is written, how a paragraph splits into
sentences, and the words that name no topic."""

from __future__ import annotations

import re

# A code name as the pages write it: `os.path.isjunction()`, `zipfile.Path`, `-X importtime`.
_ID = r"(?:-X [a-z_]+|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?:\(\))?)"
# Only the ones no English word looks like: dotted, called, an environment variable or an -X option.
_CALL_OR_DOTTED = (
    r"(?:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:\(\))?|[A-Za-z_]\w*\(\)|PYTHON[A-Z0-9_]{3,}|-X [a-z_]+)"
)
_CODE_REF = re.compile(rf"(?<![\w.]){_CALL_OR_DOTTED}")

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


def _last_part(ident: str) -> str:
    return ident.removesuffix("()").rsplit(".", 1)[-1]
