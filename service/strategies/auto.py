"""auto: route each question to the cheapest strategy that can answer it (Self-Route, Li et al. EMNLP 2024).

The policy, in the order auto tries the routes of `KC_AUTO_ROUTES` (default `rag,long_context`):

1. **Retrieve** (rag's own `prepare`: hybrid search and the relevance gate). No token is spent; the
   passages are what every later route is checked against.
2. **closed_book** (opt-in, needs `KC_AUTO_CUTOFF`) and **cpt** (opt-in): the question alone, the cheapest
   prompt. Tried only when the gate found relevant passages and a signal says the model may know the
   answer: for closed_book, the question names no date on or after the chat model's cutoff and every
   retrieved passage is dated before it (a question about something newer cannot be closed book); for
   cpt, the CPT checkpoint's lineage lists every retrieved passage's document among those it was trained
   on. Its answer must then pass rag's support check against the retrieved passages (`Rag.finish`), else
   auto goes on.
3. **rag**: the passages and the model. Its answer stands when the model answers and the support check
   holds it up.
4. **long_context**, when the passages do not suffice: the model said "The documents do not say." or the
   support check replaced its answer (with `KC_AUTO_FALLBACK_ON_GATE=true`, as in Self-Route, also when
   the gate found no relevant passage; by default that refusal is final, see below). The prompt holds
   the whole corpus when it fits the fallback's window (long context is affordable), else the documents
   of the best `KC_AUTO_LC_K` passages, best first, whole when short, else each retrieved passage with
   `KC_AUTO_LC_MARGIN_CHARS` of its document on either side; `KC_AUTO_LC_MAX_PROMPT_TOKENS` caps it.
   Its answer is held to the same support check against what the prompt showed, so that auto abstains
   when neither the passages nor the documents support an answer.
5. **abstain** when no route is left.

Every answer carries `route` (`chosen`, `tried` with each step's outcome, reason and tokens, `reason`),
known before the first token: rag's answer (and a question-only route's) is generated and checked before
it is shown, then replayed; only the long-context fallback streams as it is generated. The cost of an
answer is every try's tokens: the fallback's usage includes the failed first try. With greedy decoding
(the default) the route is a function of the question, the model and the index. With `KC_RAG_GATES=false`
there is no support check: only the model's own abstention moves auto on.

auto composes the other strategies (their `prepare` and `finish`, rag's retrieval and check, long_context's
packing through its `documents` hook); it holds no prompt, retrieval or check of its own.

Measured with SmolLM2-135M-Instruct as it ships (docs/eval.md#auto-and-the-oracle-router): falling back
on the gate's refusal as Self-Route would turned right abstentions into wrong answers its check let
through (hence the default: that refusal is final); no fallback turned a wrong rag answer right; and
closed_book first only added wrong answers. Both stay settings, for a reader that abstains by itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from core.engine import Chunk, Completion, Generation, SamplingParams, complete
from core.loaders import read_files
from core.prompts import Message
from core.schemas import SearchHit
from service.api_schemas import Route, RouteStep, RouteStrategy, StrategyName
from service.documents import Document
from service.engines import find_card
from service.errors import BadRequest
from service.strategies.base import Finished, Finisher, Prepared, Spent, StrategyContext, with_history
from service.strategies.closed_book import ClosedBook
from service.strategies.cpt import ContinuedPretraining
from service.strategies.long_context import LongContext
from service.strategies.rag import Rag

# --- signals ------------------------------------------------------------------------------------------

_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december"]  # fmt: skip
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MONTH_YEAR = re.compile(rf"\b({'|'.join(_MONTHS)})\s+(?:\d{{1,2}},?\s+)?(\d{{4}})\b", re.IGNORECASE)
_YEAR = re.compile(r"(?<![\d.,])(1[89]\d\d|2[01]\d\d)(?!\d|[.,]\d)")


def latest_date_named(text: str) -> dt.date | None:
    """The latest day a text's date words can mean: "2025-03-14" that day, "March 2025" or "March 14, 2025"
    the month's last day, a bare year ("in 2025") its last day; None when it names no date."""
    days: list[dt.date] = []
    for y, m, d in _ISO_DATE.findall(text):
        try:
            days.append(dt.date(int(y), int(m), int(d)))
        except ValueError:
            continue
    for month, y in _MONTH_YEAR.findall(text):
        m = _MONTHS.index(month.lower()) + 1
        days.append(dt.date(int(y) + m // 12, m % 12 + 1, 1) - dt.timedelta(days=1))
    rest = _MONTH_YEAR.sub(" ", _ISO_DATE.sub(" ", text))  # the years no day or month narrowed
    days += [dt.date(int(y), 12, 31) for y in _YEAR.findall(rest)]
    return max(days, default=None)


def training_sources(path: str | Path) -> frozenset[str]:
    """The sources of the new documents a CPT checkpoint was trained on (`config.cpt.docs` of its
    lineage.json, read with the indexer's loaders); a chat-vector merge answers for its CPT parent. Empty
    when the lineage cannot be read or its folders are gone."""
    current = Path(path)
    for _ in range(3):  # merged -> cpt
        try:
            lineage = json.loads((current / "lineage.json").read_text())
        except (OSError, ValueError):
            return frozenset()
        if lineage.get("phase") == "merged" and lineage.get("parent"):
            current = Path(lineage["parent"])
            continue
        docs = ((lineage.get("config") or {}).get("cpt") or {}).get("docs") or []
        paths = [Path(d) for d in docs if Path(d).exists()]
        return frozenset(doc.source for read in read_files(paths, warn=False) for doc in read.documents)
    return frozenset()


def excerpt(doc: Document, hits: list[SearchHit], margin: int) -> Document:
    """The document as the fallback shows it: whole when its retrieved passages and `margin` characters
    on either side cover it, else those stretches joined by " … " (each cut at a space)."""
    text = doc.text
    spans = []
    for h in hits:
        at = text.find(h.text)  # the stored offsets may drift where the chunker dropped whitespace
        start = at if at >= 0 else h.start
        spans.append((max(0, start - margin), min(len(text), start + len(h.text) + margin)))
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    if merged == [(0, len(text))]:
        return doc

    def cut(a: int, b: int) -> str:
        if a > 0 and (space := text.find(" ", a, b)) >= 0:
            a = space
        if b < len(text) and (space := text.rfind(" ", a, b)) > a:
            b = space
        return text[a:b].strip()

    return dataclasses.replace(doc, text=" … ".join(cut(a, b) for a, b in merged))


# --- the pieces a route is made of -----------------------------------------------------------------------


class Replay:
    """A generation that already ran (auto checked it before showing it), streamed again as one chunk."""

    def __init__(self, done: Completion) -> None:
        self.done = done

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        d = self.done
        yield Chunk(d.text, d.finish_reason, d.prompt_tokens, d.completion_tokens)

    async def aclose(self) -> None:
        return None


class Checked:
    """A route's answer held to rag's support check against `shown`: the passages (or the documents'
    full texts) behind its prompt. Citations point into the route's own sources where it has them."""

    def __init__(self, rag: Rag, shown: Prepared) -> None:
        self.rag = rag
        self.shown = shown

    def finish(self, prepared: Prepared, text: str) -> Finished:
        done = self.rag.finish(self.shown, text)
        by_n = {c.n: c for c in prepared.sources}
        return dataclasses.replace(done, citations=[by_n.get(c.n, c) for c in done.citations])


class Pinned(LongContext):
    """long_context over given documents in the given order (the fallback: the retrieval's documents)."""

    def __init__(self, ctx: StrategyContext, docs: list[Document]) -> None:
        super().__init__(ctx)
        self.docs = docs

    def documents(self, question: str, version: int) -> Iterator[Document]:
        return iter(self.docs)


@dataclass
class Routed:
    """What auto decided before the first token: the prompt and generation of the chosen route (a replay,
    the live fallback, or none: abstain), what finishes its answer, the route so far and what the routes
    before it spent."""

    finisher: Finisher
    prepared: Prepared
    generation: Generation | None
    route: Route
    spent: Spent
    live: RouteStrategy | None = None  # the fallback still to generate: its step is added by `final_route`

    def final_route(self, done: Finished, last: Chunk) -> Route:
        if self.live is None:
            return self.route
        step = RouteStep(
            strategy=self.live, outcome="insufficient" if done.abstained else "answered",
            reason=done.abstain_reason or "the documents support the answer",
            prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens,
        )  # fmt: skip
        return self.route.model_copy(update={"tried": [*self.route.tried, step]})


# --- the policy --------------------------------------------------------------------------------------------


class Auto:
    name: StrategyName = "auto"

    def __init__(
        self, ctx: StrategyContext, *, rag: Rag, long_context: LongContext, closed_book: ClosedBook,
        cpt: ContinuedPretraining,
    ) -> None:  # fmt: skip
        self.ctx = ctx
        self.rag, self.closed_book, self.cpt = rag, closed_book, cpt
        cap = ctx.settings.auto_lc_max_prompt_tokens
        self.lc_ctx = ctx
        if cap is not None:  # the fallback's own budget: the same packing under a lower prompt limit
            limit = min(cap, ctx.settings.max_prompt_tokens)
            self.lc_ctx = dataclasses.replace(
                ctx, settings=ctx.settings.model_copy(update={"max_prompt_tokens": limit})
            )
        self.corpus = long_context if cap is None else LongContext(self.lc_ctx)
        self._trained_on: dict[str, frozenset[str]] = {}

    async def route(
        self, question: str, *, model: str | None, k: int | None, max_tokens: int,
        params: SamplingParams | None = None, history: list[Message] | None = None,
    ) -> Routed:  # fmt: skip
        """Try the routes in order until one's answer holds up; the last one, the fallback, is returned
        before it generates, so that its tokens stream."""
        settings = self.ctx.settings
        params = params or SamplingParams(max_tokens=max_tokens)
        steps: list[RouteStep] = []
        spent = Spent()
        rag_p = dataclasses.replace(
            await self.rag.prepare(question, model=model, k=k, max_tokens=max_tokens), strategy="auto"
        )
        spent.retrieve_ms += rag_p.retrieve_ms
        check = Checked(self.rag, rag_p)
        for name in ("closed_book", "cpt"):
            if name not in settings.auto_routes:
                continue
            blocked = await self._blocked(name, question, rag_p)
            if blocked is not None:
                steps.append(RouteStep(strategy=name, outcome="skipped", reason=blocked))
                continue
            one = self.closed_book if name == "closed_book" else self.cpt
            p = await one.prepare(question, model=model, k=None, max_tokens=max_tokens)
            done, out = await self._generate(p, check, params, history, spent)
            steps.append(self._step(name, done, out, "the retrieved passages back its answer"))
            if not done.abstained:
                why = {"closed_book": "the chat model's own answer", "cpt": "the CPT model's answer"}[name]
                return self._replayed(
                    check, p, out, steps, spent, f"{why} is backed by the retrieved passages"
                )
            spent.add(out)

        if rag_p.abstain_reason is None:
            done, out = await self._generate(rag_p, self.rag, params, history, spent)
            steps.append(self._step("rag", done, out, "the passages support the answer"))
            if not done.abstained:
                return self._replayed(self.rag, rag_p, out, steps, spent, "the passages support the answer")
            spent.add(out)
            why = done.abstain_reason or "the passages do not suffice"
        else:
            why = rag_p.abstain_reason
            steps.append(RouteStep(strategy="rag", outcome="insufficient", reason=why))
            if not settings.auto_fallback_on_gate:
                return self._abstain(rag_p, steps, spent, f"{why} (KC_AUTO_FALLBACK_ON_GATE=false)")
        if "long_context" not in settings.auto_routes:
            return self._abstain(rag_p, steps, spent, why)

        try:
            fallback = await self._fallback(question, model=model, max_tokens=max_tokens)
        except BadRequest as e:
            if e.code != "context_length_exceeded":
                raise
            fallback = e.message  # the question and max_tokens leave no room for documents
        if isinstance(fallback, str):
            steps.append(RouteStep(strategy="long_context", outcome="skipped", reason=fallback))
            return self._abstain(rag_p, steps, spent, fallback)
        lc_p, shown, what = fallback
        spent.retrieve_ms += lc_p.retrieve_ms
        generation = await self.ctx.engine.submit(
            lc_p.model, with_history(lc_p.messages, history), lc_p.sampling(params)
        )
        route = Route(
            chosen="long_context", tried=steps,
            reason=f"the passages did not suffice ({why}): long context over {what}",
        )  # fmt: skip
        return Routed(
            Checked(self.rag, shown), dataclasses.replace(lc_p, strategy="auto"), generation, route, spent,
            live="long_context",
        )  # fmt: skip

    async def _blocked(self, name: str, question: str, rag_p: Prepared) -> str | None:
        """Why a question-only route cannot be tried for this question, or None."""
        if rag_p.abstain_reason is not None:
            return f"no relevant passage to check its answer against ({rag_p.abstain_reason})"
        if name == "closed_book":
            cutoff = self.ctx.settings.auto_cutoff
            assert cutoff is not None  # the settings refuse closed_book without it
            named = latest_date_named(question)
            if named is not None and named >= cutoff:
                return f"the question names {named}, on or after the model's cutoff {cutoff}"
            newer = sorted({c.date for c in rag_p.sources if c.date >= cutoff})
            if newer:
                return f"a retrieved passage is dated {newer[-1]}, on or after the model's cutoff {cutoff}"
            return None
        if self.ctx.cpt_model is None:
            return "no CPT checkpoint is served"
        path = find_card(self.ctx.engine.models(), self.ctx.cpt_model).path
        if path is None:
            return "the CPT checkpoint's lineage is not readable here"
        if path not in self._trained_on:
            self._trained_on[path] = await asyncio.to_thread(training_sources, path)
        missing = sorted({c.source for c in rag_p.sources} - self._trained_on[path])
        if missing:
            return f"the CPT checkpoint was not trained on {missing[0]} (its lineage's documents)"
        return None

    async def _generate(
        self, p: Prepared, check: Finisher, params: SamplingParams, history: list[Message] | None,
        spent: Spent,
    ) -> tuple[Finished, Completion]:  # fmt: skip
        """Generate a route's whole answer, unseen, and check it."""
        t0 = time.perf_counter()
        out = await complete(self.ctx.engine, p.model, with_history(p.messages, history), p.sampling(params))
        spent.generate_ms += (time.perf_counter() - t0) * 1000
        return check.finish(p, out.text), out

    @staticmethod
    def _step(name: RouteStrategy, done: Finished, out: Completion, ok: str) -> RouteStep:
        return RouteStep(
            strategy=name, outcome="insufficient" if done.abstained else "answered",
            reason=done.abstain_reason or ok, prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens,
        )  # fmt: skip

    @staticmethod
    def _replayed(
        finisher: Finisher, p: Prepared, out: Completion, steps: list[RouteStep], spent: Spent, reason: str
    ) -> Routed:
        chosen = steps[-1].strategy
        route = Route(chosen=chosen, tried=steps, reason=reason)
        return Routed(finisher, dataclasses.replace(p, strategy="auto"), Replay(out), route, spent)

    def _abstain(self, rag_p: Prepared, steps: list[RouteStep], spent: Spent, reason: str) -> Routed:
        route = Route(chosen="abstain", tried=steps, reason=f"nothing supports an answer: {reason}")
        return Routed(self.rag, dataclasses.replace(rag_p, abstain_reason=reason), None, route, spent)

    async def _fallback(
        self, question: str, *, model: str | None, max_tokens: int
    ) -> tuple[Prepared, Prepared, str] | str:
        """The long-context prompt, the same numbered documents with their full texts (for the check) and
        what they are; or why there is no such prompt."""
        corpus = await self.corpus.prepare(question, model=model, k=None, max_tokens=max_tokens)
        cov = corpus.coverage
        if corpus.abstain_reason is not None or cov is None:
            return corpus.abstain_reason or "no document to read"
        version = corpus.index_version or 0
        if cov.documents_packed == cov.documents_total:
            wanted = {c.doc_id for c in corpus.sources}
            every = await asyncio.to_thread(self._documents, wanted, version)
            return corpus, self._shown(corpus, every), f"the whole corpus ({cov.documents_total} documents)"
        found = await asyncio.to_thread(self.rag.retrieve, question, self.ctx.settings.auto_lc_k)
        by_doc: dict[str, list[SearchHit]] = {}
        for h in found.hits:
            by_doc.setdefault(h.doc_id, []).append(h)
        whole = await asyncio.to_thread(self._documents, set(by_doc), found.version)
        margin = self.ctx.settings.auto_lc_margin_chars
        docs = [excerpt(whole[d], hits, margin) for d, hits in by_doc.items() if d in whole]
        if not docs:
            return "retrieval found no document"
        lc = await Pinned(self.lc_ctx, docs).prepare(question, model=model, k=None, max_tokens=max_tokens)
        if lc.abstain_reason is not None:
            return lc.abstain_reason
        what = f"the documents of the {len(found.hits)} best passages ({len(docs)} documents)"
        return lc, self._shown(lc, {d.doc_id: d for d in docs}), what

    def _documents(self, wanted: set[str], version: int) -> dict[str, Document]:
        """The documents with these ids (one pass over the store, which caches its pages per version)."""
        found: dict[str, Document] = {}
        for doc in self.ctx.documents.newest_first(version):
            if doc.doc_id in wanted:
                found[doc.doc_id] = doc
                if len(found) == len(wanted):
                    break
        return found

    @staticmethod
    def _shown(p: Prepared, docs: dict[str, Document]) -> Prepared:
        """`p`'s numbered sources with the full text of what the prompt showed, for rag's support check."""
        sources = [c.model_copy(update={"text": docs[c.doc_id].text}) if c.doc_id in docs else c
                   for c in p.sources]  # fmt: skip
        return dataclasses.replace(p, strategy="rag", sources=sources)
