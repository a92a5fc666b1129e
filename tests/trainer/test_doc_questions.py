"""Question-form rewrites of new documents (CPT's `--questions`): hand-made sentences, the answer always a
span of the text, prose only, the closed-book prompt, and the stable document split."""

from __future__ import annotations

import pytest

from core.prompts import CLOSED_BOOK_SYSTEM
from trainer.cpt import questioned
from trainer.doc_questions import document_questions, question_rows, sentence_questions


@pytest.mark.parametrize(
    ("sentence", "question", "answer"),
    [
        ("Sou Sasben is the new chief executive of Minle Works.",
         "Who is the new chief executive of Minle Works?", "Sou Sasben"),
        ("Sou Sasben was born in 1986 in Hindair.", "When was Sou Sasben born in Hindair?", "1986"),
        ("Sou Sasben was born in 1986 in Hindair.", "Where was Sou Sasben born in 1986?", "Hindair"),
        # a leading date goes last first, and the comma inside "January 4, 2025" does not end it
        ("On January 4, 2025, the Dapaik Fair took place in Korme.",
         "The Dapaik Fair took place in Korme when?", "January 4, 2025"),
        ("The Dapaik Fair was organised by Kutain Group.",
         "By whom was the Dapaik Fair organised?", "Kutain Group"),
        ("Brenbek Systems has moved its headquarters to Loubal.",
         "Where has Brenbek Systems moved its headquarters?", "Loubal"),
        ("A new census puts the population of Stousto at 287,000.",
         "A new census puts the population of Stousto at what?", "287,000"),
        ("Aldir Dak now works for Kutain Group.", "Who now works for Kutain Group?", "Aldir Dak"),
        ("Hona Works was founded on February 13, 2025.", "When was Hona Works founded?", "February 13, 2025"),
    ],
)  # fmt: skip
def test_hand_made_sentences(sentence: str, question: str, answer: str) -> None:
    pairs = {(p.question, p.answer) for p in sentence_questions(sentence)}
    assert (question, answer) in pairs


@pytest.mark.parametrize(
    "sentence",
    [
        "What's new in Python 3.14",  # a heading: no end mark
        ">>> [1, 2, 3].push(4) fails with AttributeError.",  # code
        "(Contributed by Sam Gross in gh-12345.)",
        "It was released.",  # too short to ask about
    ],
)
def test_headings_code_and_fragments_give_nothing(sentence: str) -> None:
    assert sentence_questions(sentence) == []


def test_numbers_inside_names_are_not_answers() -> None:
    answers = {p.answer for p in sentence_questions("Python 3.14 was released on 7 October 2025.")}
    assert answers == {"7 October 2025"}  # not "3.14", and no "who" about a single-word subject


def test_who_needs_more_than_a_date_and_a_place() -> None:
    # "Who was born in 1986 in Hindair?" has many answers: not asked
    kinds = [p.kind for p in sentence_questions("Sou Sasben was born in 1986 in Hindair.")]
    assert sorted(kinds) == ["when", "where"]


def test_every_answer_is_verbatim_in_its_document() -> None:
    from eval.world.config import WorldConfig
    from eval.world.generate import generate_world

    world = generate_world(WorldConfig(seed=3, size="nano"))
    texts = [d.body for d in world.docs_post] + [d.body for d in world.corpus_pre[:40]]
    pairs = [(t, p) for t in texts for p in document_questions(t)]
    assert len(pairs) > len(texts)  # most documents give several questions
    for text, pair in pairs:
        assert pair.answer in text and pair.question.endswith("?")
        assert pair.answer not in pair.question  # the question never gives its answer away


def test_rows_ask_as_the_closed_book_strategy_asks() -> None:
    docs = [
        ("a", "Sou Sasben is the new chief executive of Minle Works. Sou Sasben was born in 1986 in Hindair.")
    ]
    rows = question_rows(docs)
    assert len(rows) == 3 and {d for d, _ in rows} == {"a"}
    for _, messages in rows:
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert messages[0]["content"] == CLOSED_BOOK_SYSTEM
    assert len(question_rows(docs, per_document=1)) == 1
    assert question_rows(docs, per_document=2, seed=1) == question_rows(docs, per_document=2, seed=1)


def test_the_document_split_is_stable_and_near_the_share() -> None:
    ids = [f"post-{i:04d}.md" for i in range(1000)]
    chosen = [i for i in ids if questioned(i, 0.5, seed=0)]
    assert 430 < len(chosen) < 570 and chosen == [i for i in ids if questioned(i, 0.5, seed=0)]
    assert all(questioned(i, 1.0, seed=0) for i in ids)
