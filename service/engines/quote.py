"""Quote mode: decoding constrained so that the answer is a verbatim span of the passages.

A small reader given passages still invents: it writes a plausible value no passage states, restates the
question, or runs on. In quote mode the model only chooses *which* span to copy; the engine makes sure
it copies one. At every step the next token must continue a span of the quotable texts that the answer so
far matches, token for token as the tokenizer splits those texts; the answer starts at a word (not inside
one) and may end where a word ends. A `whole` text (the abstention sentence) can also be chosen, and then
only word for word to its end. The end-of-turn tokens are allowed exactly where the answer may end.

The constraint is a set of positions: each (text, index) whose prefix the answer ends with. A step keeps
the positions whose next token is the one chosen, so a step costs the number of live positions, and the
answer can never leave the texts. Pleias-RAG trains small models to quote literally; here decoding
enforces it, for any model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.engine import Quote


@dataclass
class _Text:
    ids: list[int]
    starts: list[bool]  # a span may start at this position (a word starts here)
    ends: list[bool]  # a span may end before this position (len(ids)+1 entries: the end is always one)
    whole: bool


def _is_word(piece: str) -> bool:
    return piece[:1].isalnum()


def _text(tokenizer: Any, text: str, whole: bool) -> _Text:
    ids = [int(i) for i in tokenizer.encode(text, add_special_tokens=False)]
    pieces = [str(tokenizer.decode([i])) for i in ids]
    starts, ends = [], []
    for p, piece in enumerate(pieces):
        before = pieces[p - 1] if p else " "
        # A word starts at a piece that opens with a space, or at a word piece after a non-word character.
        boundary = piece[:1].isspace() or (_is_word(piece) and not before[-1:].isalnum())
        starts.append(not whole and _is_word(piece.lstrip()) and (p == 0 or boundary))
        ends.append(not whole and p > 0 and (piece[:1].isspace() or not _is_word(piece)))
    ends.append(True)
    if whole:
        starts = [True] + [False] * (len(ids) - 1) if ids else []
    return _Text(ids, starts, ends, whole)


@dataclass
class QuoteState:
    """One request's constraint: which tokens may come next, advanced by the token that did."""

    texts: list[_Text]
    stop_ids: frozenset[int]
    live: list[tuple[int, int]] = field(default_factory=list)  # (text, index of the next token to match)
    started: bool = False

    @classmethod
    def build(cls, tokenizer: Any, quote: Quote, stop_ids: set[int]) -> QuoteState:
        texts = [_text(tokenizer, t, False) for t in quote.spans if t.strip()]
        texts += [_text(tokenizer, t, True) for t in quote.whole if t.strip()]
        return cls([t for t in texts if t.ids], frozenset(stop_ids))

    def allowed(self) -> list[int]:
        """The token ids the next step may produce."""
        if not self.started:
            return sorted({self.texts[n].ids[p] for n, p in self._starts()})
        out: set[int] = set()
        for n, p in self.live:
            text = self.texts[n]
            if p < len(text.ids):
                out.add(text.ids[p])
            if text.ends[p]:
                out |= self.stop_ids
        return sorted(out) if out else sorted(self.stop_ids)

    def _starts(self) -> list[tuple[int, int]]:
        return [(n, p) for n, t in enumerate(self.texts) for p, ok in enumerate(t.starts) if ok]

    def advance(self, token: int) -> None:
        if not self.started:
            self.started = True
            candidates = self._starts()
        else:
            candidates = self.live
        self.live = [
            (n, p + 1) for n, p in candidates if p < len(self.texts[n].ids) and self.texts[n].ids[p] == token
        ]
