"""Supersession: a newer passage about the question's subject retires the older ones that disagree with it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from core.protocols import Retrieval
from core.schemas import SearchHit
from service.settings import ServiceSettings
from service.strategies import StrategyContext
from service.strategies.rag import Rag, supersede


def hit(n: int, title: str, date: str, text: str) -> SearchHit:
    return SearchHit(
        chunk_id=n, doc_id=f"d{n}", source=f"s{n}", title=title, date=dt.date.fromisoformat(date), ordinal=0,
        start=0, end=len(text), text=text, score=1.0 / n, mode="hybrid",
    )  # fmt: skip


PROFILE = hit(
    1,
    "Who is Eshen Hainte?",
    "2023-05-02",
    "Eshen Hainte was born in Korme. Gesdi Motors employs Eshen Hainte.",
)
NEWS = hit(2, "Eshen Hainte joins Kaste Labs", "2025-02-10", "Eshen Hainte now works for Kaste Labs.")
OTHER = hit(3, "Who is Orvan Teel?", "2022-01-01", "Orvan Teel works for Gesdi Motors.")


def ids(hits: list[SearchHit]) -> list[int]:
    return [h.chunk_id for h in hits]


def test_newer_news_retires_the_profile_it_contradicts() -> None:
    kept, stale = supersede("Which company does Eshen Hainte work for?", [PROFILE, NEWS, OTHER])
    assert ids(kept) == [2, 3] and ids(stale) == [1]


def test_a_question_the_news_does_not_answer_keeps_the_profile() -> None:
    kept, stale = supersede("In which city was Eshen Hainte born?", [PROFILE, NEWS, OTHER])
    assert ids(kept) == [1, 2, 3] and stale == []


def test_an_older_passage_that_agrees_stays() -> None:
    newest = hit(
        4, "Tre Zenond: a short biography", "2024-04-01", "Tre Zenond was born in the city of Stanpen."
    )
    older = hit(
        5, "Who is Tre Zenond?", "2023-09-30", "Tre Zenond grew up in Stanpen, where Tre Zenond was born."
    )
    wrong = hit(6, "Tre Zenond", "2022-01-01", "Tre Zenond was born in the city of Dilgo.")
    kept, stale = supersede("In which city was Tre Zenond born?", [older, newest, wrong])
    assert ids(kept) == [5, 4] and ids(stale) == [6]


def test_a_page_that_names_the_subject_in_passing_is_not_current() -> None:
    # A 3.15 page mentioning 3.14 does not retire the 3.14 page: its title is not about 3.14.
    page_314 = hit(
        7, "What's New In Python 3.14", "2025-10-07", "Python 3.14 makes forkserver the default start method."
    )
    page_315 = hit(
        8,
        "What's New In Python 3.15",
        "2026-10-01",
        "Unlike Python 3.14, the spawn method is the default start method.",
    )
    kept, stale = supersede("Which start method is the default in Python 3.14?", [page_314, page_315])
    assert ids(kept) == [7, 8] and stale == []


def test_without_a_name_nothing_is_retired() -> None:
    kept, stale = supersede("which company makes the most cars?", [PROFILE, NEWS, OTHER])
    assert ids(kept) == [1, 2, 3] and stale == []


class Pool:
    """A retriever that returns the first k of a fixed ranking."""

    def __init__(self, *hits: SearchHit) -> None:
        self.hits = list(hits)

    def retrieve(self, query: str, k: int = 5, mode: str = "hybrid", *, version: int | None = None) -> Any:
        return Retrieval(self.hits[:k], {h.chunk_id: 0.9 for h in self.hits}, 1)


def test_rag_reads_twice_k_and_fills_the_prompt_after_retiring(service_settings: ServiceSettings) -> None:
    question = "Which company does Eshen Hainte work for?"
    pool = Pool(PROFILE, OTHER, NEWS)  # the news ranks third: k=2 alone would miss it
    on = Rag(StrategyContext(None, pool, None, service_settings, "m", None))  # type: ignore[arg-type]
    hits, _, reason = on.retrieve_and_gate(question, 2)
    assert ids(hits) == [3, 2] and reason is None
    off_settings = service_settings.model_copy(update={"rag_supersede": False})
    off = Rag(StrategyContext(None, pool, None, off_settings, "m", None))  # type: ignore[arg-type]
    assert ids(off.retrieve_and_gate(question, 2)[0]) == [1, 3]
