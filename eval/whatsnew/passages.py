"""Passages: the window of a page around a fact's answer (the gold passage), the chunks our retriever
serves (where distractors and hard negatives come from), and whether a passage states a fact's answer or
may answer its question another way."""

from __future__ import annotations

import logging
import re

import numpy as np

from core.answers import contains_answer
from core.settings import DEFAULT_EMBEDDER, Settings
from eval.whatsnew.facts import Fact
from eval.whatsnew.pages import Page
from eval.whatsnew.text import _sentences

logger = logging.getLogger(__name__)


def may_answer(text: str, fact: Fact) -> bool:
    """Whether a passage states the answer or a short form of it (`core.answers.contains_answer`, the test
    of RL's citation reward and of the eval), or may answer the question another way (it matches all of the
    fact's conflict patterns): such a passage is neither a distractor nor a negative."""
    if contains_answer(text, fact.aliases):
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
