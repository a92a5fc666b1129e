"""`strategy: "auto"` (service/strategies/auto.py): each route taken on hand-made documents, the route
streamed first, counted in /metrics, deterministic, and bad settings refused at start-up.

The model is a stand-in behind the vllm engine's HTTP API (httpx.MockTransport, as in
tests/service/test_vllm_engine.py) that reads like a perfect grounded reader: it answers a question it
knows with the span its passages hold, cited, and abstains when they do not hold it; closed book it says
what its `memory` holds. The index, the retrieval, the gate, the packing and the support check are real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent / "service"))
from gateway_support import build_nano_checkpoint, make_app

from core.engine import ModelCard
from core.prompts import ABSTAIN_ANSWER
from core.schemas import SearchHit
from service.api_schemas import Answer
from service.documents import Document
from service.engines.vllm import VLLMEngine
from service.served_models import ModelSpec
from service.settings import ServiceSettings
from service.strategies import Strategies
from service.strategies.auto import excerpt, latest_date_named, training_sources

URL = "http://reader.test:8001/v1"
CHAT, CPT = "keepcurrent", "keepcurrent-cpt"

FILLER = (
    "The fair showed old looms, river boats, brass bells, painted carts, woven baskets and clay pots from "
    "the valley towns, and the bands played until late at night by the water."
)
DOCS = {
    "kelvor.md": ("Kelvor Dynamics holds its annual meeting", "2025-03-14", "news-kelvor",
                  "Kelvor Dynamics, the robot maker from Korme, held its annual meeting on March 14, 2025. "
                  "The shareholders heard about the results of the year, the new factory and the late radio. "
                  "Late in the evening the board voted on its last item of business. Orvan Teel was named "
                  "to run the company, replacing Sta Ind, who retires after twelve years."),
    "nikrai.md": ("Nikrai census revised", "2025-02-01", "news-nikrai",
                  "The population of Nikrai was revised to 745,000 on February 1, 2025."),
    "vashti.md": ("Vashti census", "2019-06-01", "old-vashti",
                  "The population of Vashti was 512,000 at the census of June 2019."),
    **{f"fair-{i}.md": (f"Dapaik Fair day {i}", f"2025-0{i}-1{i}", f"news-fair-{i}", f"On day {i}: {FILLER}")
       for i in range(1, 5)},
}  # fmt: skip
MEETING = "What did Kelvor Dynamics decide at its annual meeting in Korme?"
NIKRAI = "What was the population of Nikrai revised to?"
VASHTI = "What was the population of Vashti at the census?"
UNKNOWN = "Where was Krorn Sasben born?"
SPANS = {MEETING: "Orvan Teel", NIKRAI: "745,000", VASHTI: "512,000"}


class Reader:
    """vLLM's API (/v1/models, /tokenize, streamed /v1/chat/completions) over a scripted reader; a token
    is a word. Records every generation as (model, "passages" or "closed", answer)."""

    def __init__(self, window: int = 300, memory: dict[tuple[str, str], str] | None = None,
                 guess: str | None = None) -> None:  # fmt: skip
        self.window = window
        self.memory = memory or {}
        self.guess = guess  # what it says when its passages lack the answer (None: it abstains)
        self.calls: list[tuple[str, str, str]] = []

    @staticmethod
    def count(body: dict[str, Any]) -> int:
        texts = [m["content"] for m in body["messages"]] if "messages" in body else [body.get("prompt", "")]
        return sum(len(t.split()) + 3 for t in texts)

    def answer(self, model: str, user: str) -> tuple[str, str]:
        question = user.rsplit("Question: ", 1)[-1]
        passages = re.findall(r"^\[(\d+)\] (.*)$", user, re.MULTILINE)
        if not passages:
            return "closed", self.memory.get((model, user), "I am not sure.")
        span = SPANS.get(question)
        n = next((n for n, text in passages if span and span in text), None)
        return "passages", f"{span} [{n}]" if n else (self.guess or ABSTAIN_ANSWER)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            data = [{"id": m, "object": "model", "max_model_len": self.window} for m in (CHAT, CPT)]
            return httpx.Response(200, json={"object": "list", "data": data})
        body = json.loads(request.content)
        n = self.count(body)
        if request.url.path == "/tokenize":
            return httpx.Response(200, json={"count": n, "max_model_len": self.window, "tokens": [7] * n})
        kind, text = self.answer(body["model"], body["messages"][-1]["content"])
        self.calls.append((body["model"], kind, text))
        head = {"id": "c", "object": "chat.completion.chunk", "model": body["model"]}
        events = [
            {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}]},
            {**head, "choices": [], "usage": {"prompt_tokens": n, "completion_tokens": len(text.split())}},
        ]  # fmt: skip
        stream = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, content=stream.encode(), headers={"content-type": "text/event-stream"})


class ServedFrom(VLLMEngine):
    """The vllm engine with each model's checkpoint directory known (the embedded engine's cards have it)."""

    def __init__(self, reader: Reader, paths: dict[str, Path]) -> None:
        specs = [ModelSpec(CHAT, "chat", url=URL), ModelSpec(CPT, "cpt", url=URL)]
        super().__init__(specs, transport=httpx.MockTransport(reader))
        self.paths = paths

    def models(self) -> list[ModelCard]:
        found = {n: str(p) for n, p in self.paths.items()}
        return [dataclasses.replace(c, path=found.get(c.name)) for c in super().models()]


def write_corpus(folder: Path, docs: dict[str, tuple[str, str, str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (title, date, source, body) in docs.items():
        (folder / name).write_text(f'---\ntitle: "{title}"\ndate: {date}\nsource: {source}\n---\n{body}\n')
    return folder


@pytest.fixture
def indexed(kc_home: Path, tmp_path: Path, embedder: Any) -> ServiceSettings:
    """KC_HOME holding DOCS in small chunks; rag shows one passage (so that one can lack the answer)."""
    from indexer.pipeline import Index

    settings = ServiceSettings(home=kc_home, chunk_tokens=24, chunk_overlap=4, rag_k=1, auto_lc_k=2)
    Index(settings, embedder=embedder).ingest(write_corpus(tmp_path / "docs", DOCS), progress=False)
    return settings


def ask(settings: ServiceSettings, reader: Reader, embedder: Any, *questions: str,
        paths: dict[str, Path] | None = None, **update: Any) -> list[Answer]:  # fmt: skip
    """auto's answers to the questions, in turn, from one gateway's strategies."""
    from indexer.retriever import IndexRetriever
    from service.app import strategy_context

    async def run() -> list[Answer]:
        engine = ServedFrom(reader, paths or {})
        await engine.start()
        try:
            s = settings.model_copy(update=update)
            strategies = Strategies(strategy_context(s, engine, IndexRetriever(s, embedder=embedder)))
            return [await strategies.answer("auto", q, max_tokens=16) for q in questions]
        finally:
            await engine.aclose()

    return asyncio.run(run())


def path_of(a: Answer) -> list[tuple[str, str]]:
    assert a.route is not None and a.strategy == "auto"
    return [(step.strategy, step.outcome) for step in a.route.tried]


def assert_cost_is_every_try(a: Answer) -> None:
    assert a.route is not None
    assert a.usage.prompt_tokens == sum(s.prompt_tokens for s in a.route.tried)
    assert a.usage.completion_tokens == sum(s.completion_tokens for s in a.route.tried)


# --- the three routes of Self-Route's rule -----------------------------------------------------------------


def test_answerable_from_the_passages_takes_rag(indexed: ServiceSettings, embedder: Any) -> None:
    reader = Reader()
    (a,) = ask(indexed, reader, embedder, NIKRAI)
    assert a.route is not None and a.route.chosen == "rag" and path_of(a) == [("rag", "answered")]
    assert a.text == "745,000 [1]" and not a.abstained and [c.source for c in a.citations] == ["news-nikrai"]
    assert reader.calls == [(CHAT, "passages", "745,000 [1]")]  # generated once, replayed
    assert a.usage.prompt_tokens > 0 and a.sources[0].chunk_id is not None
    assert_cost_is_every_try(a)


def test_insufficient_passages_fall_back_to_the_document_when_it_fits(
    indexed: ServiceSettings, embedder: Any
) -> None:
    reader = Reader(window=300)  # the document fits beside the question; the seven documents do not
    (a,) = ask(indexed, reader, embedder, MEETING)
    assert a.route is not None and a.route.chosen == "long_context"
    assert path_of(a) == [("rag", "insufficient"), ("long_context", "answered")]
    assert "the model said the passages do not say" in a.route.reason
    assert "documents of the 2 best passages" in a.route.reason
    assert a.text == "Orvan Teel [1]" and not a.abstained and a.citations[0].source == "news-kelvor"
    assert a.sources[0].chunk_id is None and a.coverage is not None and a.coverage.documents_total == 7
    assert [kind for _, kind, _ in reader.calls] == ["passages", "passages"]
    assert_cost_is_every_try(a)  # the failed rag try is paid for
    assert a.usage.prompt_tokens > a.route.tried[-1].prompt_tokens


def test_the_whole_corpus_is_read_when_it_fits_the_window(indexed: ServiceSettings, embedder: Any) -> None:
    (a,) = ask(indexed, Reader(window=4000), embedder, MEETING)
    assert (
        a.route is not None
        and a.route.chosen == "long_context"
        and "the whole corpus (7 documents)" in (a.route.reason)
    )
    assert a.coverage is not None and a.coverage.documents_packed == 7
    assert a.text.startswith("Orvan Teel [") and a.citations[0].source == "news-kelvor"


def test_nothing_supports_an_answer_abstains(indexed: ServiceSettings, embedder: Any) -> None:
    # The gate finds nobody named Krorn Sasben: its verdict is final, nothing generated, nothing spent.
    quiet = Reader()
    (c,) = ask(indexed, quiet, embedder, UNKNOWN)
    assert c.abstained and c.text == ABSTAIN_ANSWER and c.route is not None and c.route.chosen == "abstain"
    assert path_of(c) == [("rag", "insufficient")] and "KC_AUTO_FALLBACK_ON_GATE" in c.route.reason
    assert "krorn sasben" in c.route.tried[0].reason and "krorn sasben" in (c.abstain_reason or "")
    assert quiet.calls == [] and c.usage.total_tokens == 0
    # Self-Route's fallback on the gate's refusal: the documents retrieval points to do not say either.
    reader = Reader()
    (a,) = ask(indexed, reader, embedder, UNKNOWN, auto_fallback_on_gate=True)
    assert a.abstained and a.text == ABSTAIN_ANSWER
    assert path_of(a) == [("rag", "insufficient"), ("long_context", "insufficient")]
    assert [kind for _, kind, _ in reader.calls] == ["passages"]
    # A reader that guesses instead: the support check holds the guess to the documents and abstains.
    (b,) = ask(indexed, Reader(guess="Tavro Vell [1]"), embedder, UNKNOWN, auto_fallback_on_gate=True)
    assert (
        b.abstained and b.model_text == "Tavro Vell [1]" and "KC_RAG_MIN_SUPPORT" in (b.abstain_reason or "")
    )
    # Without long_context among the routes, an insufficient rag answer is the end.
    (d,) = ask(indexed, Reader(), embedder, MEETING, auto_routes=("rag",))
    assert d.abstained and d.route is not None and d.route.chosen == "abstain" and d.usage.total_tokens > 0


def test_a_fallback_prompt_that_cannot_hold_a_document_abstains(
    indexed: ServiceSettings, embedder: Any
) -> None:
    (a,) = ask(indexed, Reader(), embedder, MEETING, auto_lc_max_prompt_tokens=40)
    assert a.abstained and a.route is not None and a.route.chosen == "abstain"
    assert path_of(a) == [("rag", "insufficient"), ("long_context", "skipped")]


# --- the question-only routes and their signals ------------------------------------------------------------


def test_closed_book_first_when_nothing_retrieved_is_newer_than_the_cutoff(
    indexed: ServiceSettings, embedder: Any
) -> None:
    knows = Reader(memory={(CHAT, VASHTI): "512,000", (CHAT, NIKRAI): "745,000"})
    routes = {"auto_routes": ("closed_book", "rag", "long_context"), "auto_cutoff": dt.date(2025, 1, 1)}
    old, new = ask(indexed, knows, embedder, VASHTI, NIKRAI, **routes)
    assert old.route is not None and old.route.chosen == "closed_book" and old.text == "512,000"
    assert [c.source for c in old.citations] == ["old-vashti"] and old.sources == []  # backed, not shown
    assert old.usage.prompt_tokens < 30  # the question alone
    # The Nikrai passage is dated 2025: the model cannot know it, so rag answers.
    assert path_of(new) == [("closed_book", "skipped"), ("rag", "answered")]
    assert "dated 2025-02-01, on or after the model's cutoff 2025-01-01" in new.route.tried[0].reason  # type: ignore[union-attr]
    # A wrong closed-book answer fails the check against the passages; rag pays after it.
    (wrong,) = ask(indexed, Reader(memory={(CHAT, VASHTI): "about 600 thousand"}), embedder, VASHTI, **routes)
    assert path_of(wrong) == [("closed_book", "insufficient"), ("rag", "answered")]
    assert wrong.text == "512,000 [1]"
    assert_cost_is_every_try(wrong)
    # A question that names a year after the cutoff is not asked closed book.
    later = f"{VASHTI[:-1]} of 2026?"
    (named,) = ask(indexed, knows, embedder, later, **routes)
    assert named.route is not None and "names 2026-12-31" in named.route.tried[0].reason


def test_cpt_first_when_its_lineage_covers_the_retrieved_documents(
    indexed: ServiceSettings, embedder: Any, tmp_path: Path
) -> None:
    trained = write_corpus(tmp_path / "cpt-docs", {"nikrai.md": DOCS["nikrai.md"]})
    cpt = tmp_path / "cpt-ckpt"
    cpt.mkdir()
    (cpt / "lineage.json").write_text(
        json.dumps({"phase": "cpt", "config": {"cpt": {"docs": [str(trained)]}}})
    )
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "lineage.json").write_text(json.dumps({"phase": "merged", "parent": str(cpt)}))
    assert training_sources(merged) == training_sources(cpt) == {"news-nikrai"}
    reader = Reader(memory={(CPT, NIKRAI): "745,000", (CPT, VASHTI): "512,000"})
    nikrai, vashti = ask(indexed, reader, embedder, NIKRAI, VASHTI, paths={CPT: merged},
                         auto_routes=("cpt", "rag", "long_context"))  # fmt: skip
    assert nikrai.route is not None and nikrai.route.chosen == "cpt" and nikrai.model == CPT
    assert nikrai.text == "745,000" and nikrai.citations[0].source == "news-nikrai"
    assert path_of(vashti) == [("cpt", "skipped"), ("rag", "answered")]
    assert "not trained on old-vashti" in vashti.route.tried[0].reason  # type: ignore[union-attr]
    (unserved,) = ask(indexed, reader, embedder, NIKRAI, auto_routes=("cpt", "rag"))  # no path: no lineage
    assert unserved.route is not None and unserved.route.tried[0].outcome == "skipped"


def test_date_words_and_excerpts() -> None:
    assert latest_date_named("Who led it in March 2025, after 2019?") == dt.date(2025, 3, 31)
    assert latest_date_named("What happened on 2024-02-29?") == dt.date(2024, 2, 29)
    assert latest_date_named("Since December 3, 2024?") == dt.date(2024, 12, 31)
    assert latest_date_named("What is new in Python 3.14 in 2026?") == dt.date(2026, 12, 31)
    assert latest_date_named("Which PEP does Python 3.14 add? It counts 1,500 of 20001 users.") is None
    text = " ".join(f"w{i}" for i in range(400))
    doc = Document("d", "src", "T", dt.date(2025, 1, 1), text)

    def hit(at: str) -> SearchHit:
        start = text.index(at)
        return SearchHit(chunk_id=1, doc_id="d", source="src", title="T", date=doc.date, ordinal=0,
                         start=start, end=start + len(at), text=at, score=1.0, mode="hybrid")  # fmt: skip

    assert excerpt(doc, [hit("w200 w201")], margin=len(text)) == doc  # short enough: whole
    cut = excerpt(doc, [hit("w100 w101"), hit("w300")], margin=20)
    parts = cut.text.split(" … ")
    assert len(parts) == 2 and "w100 w101" in parts[0] and "w300" in parts[1] and len(cut.text) < 120
    assert all(p.split()[0] in text.split() and p.split()[-1] in text.split() for p in parts)  # whole words


# --- the gateway: streaming, chat, metrics, compare, determinism, start-up ------------------------------


@pytest.fixture
def client(indexed: ServiceSettings, embedder: Any) -> Any:
    from indexer.retriever import IndexRetriever
    from service.app import create_app

    engine = VLLMEngine([ModelSpec(CHAT, "chat", url=URL)], transport=httpx.MockTransport(Reader()))
    app = create_app(indexed, engine=engine, retriever=IndexRetriever(indexed, embedder=embedder))
    with TestClient(app) as c:
        yield c


def events_of(client: TestClient, body: dict[str, Any]) -> list[tuple[str, Any]]:
    with client.stream("POST", "/ask", json=body) as r:
        assert r.status_code == 200
        out, name = [], None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[len("data: ") :])))
    return out


def test_auto_streams_its_route_first(client: TestClient) -> None:
    for question, chosen in ((NIKRAI, "rag"), (MEETING, "long_context")):
        events = events_of(client, {"question": question, "strategy": "auto", "stream": True})
        names = [n for n, _ in events]
        assert names[:2] == ["route", "sources"] and names[-1] == "answer" and "token" in names
        route, final = events[0][1], events[-1][1]
        assert route["chosen"] == chosen == final["route"]["chosen"] and final["strategy"] == "auto"
        # The route streamed is the answer's so far: a fallback adds its own step when it is done.
        assert final["route"]["tried"][: len(route["tried"])] == route["tried"]
        assert "".join(d["text"] for n, d in events if n == "token") == final["text"]
    rag = events_of(client, {"question": NIKRAI, "strategy": "rag", "stream": True})
    assert rag[0][0] == "sources" and "route" not in [n for n, _ in rag]


def test_auto_through_chat_completions(client: TestClient) -> None:
    body = {"model": CHAT, "strategy": "auto", "messages": [{"role": "user", "content": MEETING}]}
    plain = client.post("/v1/chat/completions", json=body).json()
    assert plain["keepcurrent"]["route"]["chosen"] == "long_context"
    assert plain["choices"][0]["message"]["content"] == "Orvan Teel [1]"
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        chunks = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    first = chunks[0]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["keepcurrent"]["route"]["chosen"] == "long_context"
    assert chunks[-1]["keepcurrent"]["route"]["tried"][-1]["strategy"] == "long_context"


def test_metrics_count_routes_and_compare_includes_auto(client: TestClient) -> None:
    for q in (NIKRAI, NIKRAI, MEETING):
        assert client.post("/ask", json={"question": q, "strategy": "auto"}).status_code == 200
    metrics = client.get("/metrics").text
    assert 'kc_routes_total{chosen="rag",path="rag"} 2.0' in metrics
    assert 'kc_routes_total{chosen="long_context",path="rag>long_context"} 1.0' in metrics
    compare = client.post("/ask", json={"question": NIKRAI, "strategy": "compare"}).json()["answers"]
    assert compare["auto"]["route"]["chosen"] == "rag" and compare["rag"]["route"] is None


def test_routes_are_deterministic(indexed: ServiceSettings, embedder: Any, tmp_path: Path) -> None:
    """Same question, same route: with the scripted reader, and with a real model (the untrained nano
    checkpoint on the embedded engine, greedy), asked again and beside other questions."""
    questions = (MEETING, NIKRAI, UNKNOWN, VASHTI, MEETING, NIKRAI)
    routes = [a.route for a in ask(indexed, Reader(), embedder, *questions)]
    assert routes[:2] == routes[4:] and routes[0] != routes[1]
    settings = indexed.model_copy(update={"model": build_nano_checkpoint(tmp_path / "nano")})
    with TestClient(make_app(settings, embedder)) as c:

        def route(q: str) -> Any:
            a = c.post("/ask", json={"question": q, "strategy": "auto", "max_tokens": 6}).json()
            return a["route"], a["text"], a["usage"]

        first = [route(q) for q in questions[:4]]
        assert [route(q) for q in reversed(questions[:4])] == first[::-1]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KC_AUTO_ROUTES": "long_context,rag"}, "in the order auto tries them"),
        ({"KC_AUTO_ROUTES": "rag,oracle"}, "unknown route 'oracle'"),
        ({"KC_AUTO_ROUTES": "long_context"}, "must include rag"),
        ({"KC_AUTO_ROUTES": "closed_book,rag"}, "KC_AUTO_CUTOFF is unset"),
        ({"KC_AUTO_LC_K": "2"}, "KC_AUTO_LC_K=2 must be at least KC_RAG_K=4"),
        ({"KC_AUTO_CUTOFF": "next year"}, "auto_cutoff"),
    ],
)
def test_bad_auto_settings_stop_the_gateway_at_start_up(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from service.__main__ import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m service:") and message in err


def test_good_auto_settings_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert ServiceSettings(home=tmp_path).auto_routes == ("rag", "long_context")  # Self-Route's rule
    monkeypatch.setenv("KC_AUTO_ROUTES", "closed_book, rag")
    monkeypatch.setenv("KC_AUTO_CUTOFF", "2025-01-01")
    s = ServiceSettings(home=tmp_path)
    assert s.auto_routes == ("closed_book", "rag") and s.auto_cutoff == dt.date(2025, 1, 1)
